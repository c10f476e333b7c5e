"""The Mininet node and link classes a live network is built from, and host settings.

Routers are namespaces that forward IPv4; hosts and routers run without IPv6 (router
solicitations and MLD reports would wake the controller and skew packet counters); switches
are OVS bridges on the datapath this kernel supports, or a relay node for a WAN link
(topologies/relay/node.py); links are TCLinks whose htb warnings are filtered.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from topologies.system import LblabError


def lan_bridge_class():
    """Mininet's LinuxBridge for a client region's LAN, kept out of the root namespace's
    own traffic: no IPv6 on the bridge device (it would send router solicitations into the
    LAN) and no netfilter on bridged frames where the bridge allows turning it off."""
    from mininet.nodelib import LinuxBridge

    class LanBridge(LinuxBridge):
        def start(self, controllers):   # iproute2 only (Mininet's uses brctl and ifconfig)
            self.cmd(f"ip link del {self.name} 2>/dev/null; "
                     f"ip link add name {self.name} type bridge stp_state 0")
            self.cmd(f"sysctl -qw net.ipv6.conf.{self.name}.disable_ipv6=1")
            self.cmd(f"ip link set dev {self.name} type bridge nf_call_iptables 0 "
                     "nf_call_ip6tables 0 nf_call_arptables 0 2>/dev/null")
            for intf in self.intfList():
                if intf.name.startswith(f"{self.name}-"):   # its ports, not loopback
                    self.cmd(f"ip link set dev {intf} master {self.name} up")
            out = self.cmd(f"ip link set dev {self.name} up && echo ok")
            if "ok" not in out:
                raise LblabError(f"Linux bridge {self.name} did not come up: {out.strip()}")

        def stop(self, deleteIntfs=True):
            self.cmd(f"ip link del {self.name} 2>/dev/null")
            super(LinuxBridge, self).stop(deleteIntfs)

    return LanBridge


def node_classes(datapath: str):
    """Host and switch factories that pick the class from the node's `role` param."""
    from mininet.node import Host, Node, OVSSwitch

    class LinuxRouter(Node):
        """A site router: a namespace that forwards IPv4 between its LAN and WAN links."""

        def config(self, **params):
            super().config(**params)
            self.cmd("sysctl -qw net.ipv4.ip_forward=1")
            quiet_ipv6(self)

    class QuietHost(Host):
        def config(self, **params):
            result = super().config(**params)
            quiet_ipv6(self)
            return result

    def make_host(name, role="client", site=None, **params):
        cls = LinuxRouter if role == "router" else QuietHost
        return cls(name, **params)

    def make_switch(name, role="edge", **params):
        if role == "relay":
            from topologies.relay.node import RelaySwitch
            return RelaySwitch(name, **params)
        if role == "bridge":
            return lan_bridge_class()(name, **params)
        return OVSSwitch(name, datapath=datapath, protocols="OpenFlow13", failMode="secure",
                         **params)

    return make_host, make_switch


def quiet_tclink():
    """TCLink minus htb's harmless 'quantum of class is big' warning, which Mininet prints
    as an error for every capped link and which would bury real errors."""
    from mininet.link import TCIntf, TCLink

    class QuietTCIntf(TCIntf):
        def tc(self, cmd, tc="tc"):
            out = super().tc(cmd, tc)
            return "\n".join(line for line in out.splitlines()
                             if "quantum of class" not in line)

    class QuietTCLink(TCLink):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("cls1", QuietTCIntf)
            kwargs.setdefault("cls2", QuietTCIntf)
            super().__init__(*args, **kwargs)

    return QuietTCLink


def quiet_ipv6(node) -> None:
    """No IPv6 in the emulated network: router solicitations and MLD reports would otherwise
    wake the controller and skew packet counters."""
    node.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")


def tx_offload_off(node, ifname: str) -> None:
    """`ethtool -K IF tx off` inside a node (checksum offload, and with it TSO, off)."""
    out = node.cmd(f"ethtool -K {ifname} tx off 2>&1 >/dev/null; echo rc=$?")
    if "rc=0" not in out:
        raise LblabError(f"cannot turn off checksum offload on {ifname}: {out.strip()}")


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM during teardown and re-deliver the first one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]} during teardown")
