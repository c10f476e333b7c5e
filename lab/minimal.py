"""Two-host networks for benchmarks: across one lblab switch, or over a bare veth pair.

Same node and link classes as scenario networks, so "through lblab's switch" measures what
experiments get. Names use lblab's prefixes so `lblab clean` recognises them.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from controller.l2logic import BASE_COOKIE
from lab.controller_process import ControllerProcess
from topologies import ovs
from topologies.netlock import network_lock
from topologies.state import RUN_ENV, RunState, new_run_id


@contextmanager
def two_host_net(mech, with_switch: bool, linux_bridge: bool = False):
    """h1 and h2 across lblab's OVS switch (`with_switch`), across a Linux bridge
    (`linux_bridge`: the machine's own limit, no OpenFlow), or over a bare veth pair."""
    from mininet.log import setLogLevel

    setLogLevel("error")
    with network_lock():
        yield from _two_host_net(mech, with_switch, linux_bridge)


def _two_host_net(mech, with_switch: bool, linux_bridge: bool = False):
    from mininet.link import Link
    from mininet.net import Mininet
    from mininet.node import OVSSwitch, RemoteController
    from lab.nodes import lan_bridge_class

    run_id = new_run_id("bench2")
    state = RunState(run_id)
    state.data["bridges"] = ["lbs-bench"] if with_switch else []
    state.data["interfaces"] = ["lbs-bench"] if linux_bridge else []
    state.save()
    os.environ[RUN_ENV] = run_id
    ctl = net = None
    try:
        net = Mininet(controller=None, link=Link, autoSetMacs=True, build=False)
        h1 = net.addHost("lbc-bench1", ip="10.0.0.1/24")
        h2 = net.addHost("lbc-bench2", ip="10.0.0.2/24")
        if with_switch:
            ovs.ensure_running(lambda *_: None)
            ctl = ControllerProcess(Path("/tmp") / f"lblab-{run_id}" / "controller.log")
            ctl.start()
            state.add("pids", ctl.pid)
            net.addController("c0", controller=RemoteController, ip="127.0.0.1",
                              port=ctl.of_port)
            sw = net.addSwitch("lbs-bench", cls=OVSSwitch, dpid="00000000001b1a99",
                               datapath=mech.ovs_datapath_mininet, protocols="OpenFlow13",
                               failMode="secure")
            net.addLink(h1, sw)
            net.addLink(h2, sw)
        elif linux_bridge:
            # the bridge that carries client regions' LANs in scenario networks
            br = net.addSwitch("lbs-bench", cls=lan_bridge_class(), dpid="1")
            net.addLink(h1, br)
            net.addLink(h2, br)
        else:
            net.addLink(h1, h2)
        net.build()
        net.start()
        if with_switch:
            ctl.wait_switches(["lbs-bench"], BASE_COOKIE)
        yield h1, h2
    finally:
        if net is not None:
            controllers = list(net.controllers)
            net.stop()
            for c in controllers:  # RemoteController.stop() leaves its shell running
                c.terminate()
        if ctl is not None:
            ctl.stop()
        if with_switch and "lbs-bench" in ovs.bridges():
            ovs.delete_bridge("lbs-bench")
        state.remove()
        os.environ.pop(RUN_ENV, None)
