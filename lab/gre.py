"""GRE forwarding (VIP mode `gre`): the LB switch's tunnel port, the underlay it routes outer
packets through, and decapsulation on the backends.

Design (measured on OVS 3.1, userspace datapath)
------------------------------------------------
Encapsulation. Every DC's LB switch lbs-DC (with an LB tier: every LB switch lbs-DC-k, port
`lbg-DC-k`, with its own TEP subnet and mark, topologies/gre.py `endpoints`; the fabric
tunnels nothing) gets one OVS GRE port `lbg-DC` (ofport
GRE_OFPORT, `type=gre options:remote_ip=flow options:packet_type=legacy_l3`). The VIP app's
backend-table flow for a gre VIP does `set_field:MARK->pkt_mark, set_field:BACKEND->tun_dst,
output:GRE_OFPORT` (controller/vipflows.py): plain IPv4 inside GRE (protocol 0x0800), no key,
no checksum, no sequence number.

Underlay: where the outer packets go. OVS's userspace tunnels route the outer packet with
OVS's own route table (learnt from the root namespace's kernel routes, `ovs/route/show`)
and resolve the next hop with OVS's own ARP cache (`tnl/arp/show`). The route's output
device must be an OVS bridge's LOCAL port with an address; the outer packet is then handed
to that bridge's pipeline as if it had come in on LOCAL. There is only one root namespace,
so the kernel's table can hold one route per backend subnet, while each LB switch needs its
own: us1's LB must reach eu1's backends across the emulated WAN through us1's router, and
eu1's LB must reach them on its own LAN. So:
- each DC i gets a small "tunnel endpoint" (TEP) subnet 198.18.i.0/29 (RFC 2544 benchmark
  space, never used by scenarios): the LB bridge's LOCAL port holds .2 (root namespace), the
  DC router holds .1 as a second address on its LAN interface;
- the LB's gre flows set pkt_mark = MARK_BASE + i, and OVS holds user routes, one per DC
  subnet, keyed by that mark: `ovs/route/add 10.10x.0.0/24 lbs-DC 198.18.i.1 pkt_mark=M`.
  The root namespace's kernel table gains only the connected TEP /29s (no route into any
  emulated subnet, so nothing in the root namespace can talk to emulated hosts);
- the outer packet is therefore addressed to the LB's own DC router (whose MAC OVS learnt
  by ARP for .1) and handed to the LB bridge as if it came in on LOCAL. A backend of
  another DC is reached through that router, across the emulated WAN links, relays and
  delays, so the cross-DC latency cost is real. A backend on the LB's own LAN is not: the
  router would only send the packet straight back into the same switch (two more datapath
  passes and a kernel forward per packet, which held GRE goodput to about 0.53 of direct
  here), so the VIP flows deliver an outer packet from LOCAL for such a backend to its MAC
  and port themselves (controller/vipflows.py `gre_local_flows`; 0.71-0.75 of direct with
  them). Routers do not send ICMP redirects (send_redirects=0).
OVS user routes are not in the kernel and outlive the bridges, so teardown deletes them and
`lblab clean` removes any left on lblab's bridges (topologies/grestate.py).
On the kernel datapath (users' VMs) the GRE vport is the kernel's (a collect_md `gre`
device made by ovs-vswitchd): it routes the outer packet with the root namespace's kernel
tables, and its route lookup carries the packet's skb->mark, which is OVS's pkt_mark. So the
same marks select the same per-LB routes through kernel policy routing instead of OVS user
routes: one rule per DC, `ip rule add pref TABLE_BASE+i fwmark MARK_BASE+i lookup
TABLE_BASE+i`, and in that table one route per DC subnet via the DC's TEP router address out
of the LB bridge's internal port (topologies/gre.py: `policy_routing_commands`). The kernel
then resolves the router's MAC itself and sends the outer packet into the bridge from LOCAL,
as in userspace.
Kernel routes vanish with the bridges; the rules do not, so teardown deletes them and
`lblab clean` removes any left (topologies/grestate.py). The kernel datapath has no
offload-flag restriction, so the clients' checksum offload stays on there.

Decapsulation on the backend (`Mechanisms.gre_decap`): `kernel` = an ip_gre device
`lbg-gre` (topologies/gre.py: kernel_decap_commands(), also what tests/kernel exercises);
`userspace` = one decapsulator process per backend (build/lblab-gredecap, compiled from
topologies/lblab_gredecap.c, else topologies/gredecap.py; raw socket for protocol 47 ->
TUN `lbg-tun`). Either way every backend holds every DC's VIP on `lo` (so it can serve a VIP
of another DC), arp_ignore=1/arp_announce=2 (never answers ARP for it), rp_filter off, and
the reply leaves by the default route straight to the client: direct return; the GRE port's
rx counters stay at zero.

Offloads and MTU. OVS drops packets carrying checksum-offload flags at tunnel push: every
interface that hands the LB switch traffic that gets tunnelled must have `tx off`; here that
is the DC router's LAN port (clients are behind routers), which LiveNet already sets, and the
clients (`senders_tx_off`); the settings are recorded in `LiveNet.tx_offload_off`. The outer
packet is 24 bytes longer than the inner one: with MTU 1500 everywhere a full-size inner
packet becomes 1524 bytes, which OVS drops (no fragmentation, no ICMP: a black hole). The
fixes that experiment gre-mtu compares are the levers of lab/mtu.py (`GreUnderlay.levers`).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from lab import mechanisms
from lab.mtu import MtuLevers
from topologies import grestate, ovsstats
from topologies.gre import (GRE_OFPORT, MARK_BASE, TABLE_BASE, TUN_NAME, check_plan,
                            describe_rule, endpoints, kernel_decap_commands, mark_for,
                            policy_routing_commands, policy_rule, tep_lb_ip, tep_router_ip,
                            tep_subnet)
from topologies.system import LblabError, run

DECAP_STATS_TIMEOUT_S = 5.0


def setup_kernel_decap(node, backend_ip: str, vips: list[str]) -> None:
    """Kernel GRE decapsulation on one backend (a Mininet node); raises on failure."""
    for c in kernel_decap_commands(backend_ip, vips):
        out = node.cmd(f"{c} 2>&1; echo rc=$?").strip()
        if not out.endswith("rc=0"):
            raise LblabError(f"{node.name}: {c}: {out}")


class GreUnderlay:
    """Sets up and tears down GRE for a LiveNet (see the module docstring)."""

    def __init__(self, live):
        self.live = live
        self.plan = live.plan
        self.routes: list[tuple[str, int]] = []    # OVS user routes (userspace datapath)
        self.rules: list[dict] = []                 # policy rules (kernel datapath)
        self.decaps: dict[str, object] = {}    # backend name -> Popen
        self.decap_impl = "kernel" if live.mech.gre_decap == "kernel" else None
        self.stats_dir = Path(live.work_dir) / "gredecap"
        self.settings: list[str] = []          # what was applied, for metadata
        self.levers = MtuLevers(live, self.stats_dir)

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        check_plan(self.plan)
        net = self.live.net
        for i, br, dc_name, port in endpoints(self.plan):
            router = net[self.plan.router(dc_name).name]
            sub = tep_subnet(i)
            run(["sysctl", "-qw", f"net.ipv6.conf.{br}.disable_ipv6=1"], check=False)
            run(["ip", "addr", "replace", f"{tep_lb_ip(i)}/{sub.prefixlen}", "dev", br])
            run(["ip", "link", "set", "dev", br, "up"])
            # All netdev bridges share one datapath, where two GRE ports with the same
            # receive-side config clash ("File exists"). in_key tells them apart without
            # changing what is sent (no out_key: no key field, 24 bytes of overhead).
            # local_ip would too, but OVS 3.1 then checks the source address with the
            # packet's pkt_mark and finds no marked local route ("native tunnel routing
            # failed").
            run(["ovs-vsctl", "--timeout=10", "--may-exist", "add-port", br,
                 port, "--", "set", "interface", port, "type=gre",
                 f"ofport_request={GRE_OFPORT}", "options:remote_ip=flow",
                 f"options:in_key={i}", "options:packet_type=legacy_l3"])
            err = run(["ovs-vsctl", "--timeout=5", "get", "interface", port,
                       "error"], check=False).stdout.strip()
            if err and err != "[]":
                raise LblabError(f"GRE port {port} on {br}: {err}")
            lan = router.defaultIntf().name
            out = router.cmd(f"ip addr replace {tep_router_ip(i)}/{sub.prefixlen} dev {lan}; "
                             "sysctl -qw net.ipv4.conf.all.send_redirects=0 "
                             f"net.ipv4.conf.{lan}.send_redirects=0; echo rc=$?")
            if not out.strip().endswith("rc=0"):
                raise LblabError(f"GRE TEP on {router.name}: {out.strip()}")
        if self.live.mech.ovs_datapath == "kernel":
            self._policy_routing()
        else:
            self._ovs_user_routes()
        self._prepare_backends()
        if self.live.mech.ovs_datapath != "kernel":
            self.senders_tx_off()

    def _policy_routing(self) -> None:
        """Kernel datapath: fwmark rules and per-DC tables (module docstring). Networks
        run one at a time (topologies/netlock.py), so a rule already present is a crashed
        run's and is replaced."""
        for stale in grestate.stale_policy_rules():
            grestate.delete_policy_rule(stale)
        # Teardown deletes every rule of the plan; one not (yet) added is simply not found.
        self.rules = [policy_rule(i) for i, *_ in endpoints(self.plan)]
        for cmd in policy_routing_commands(self.plan):
            proc = run(cmd, check=False)
            if proc.returncode != 0:
                raise LblabError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()}")
        self.settings.append("gre underlay: TEP 198.18.<dc>.0/29 on LB LOCAL ports and DC "
                             f"routers; kernel policy routing fwmark {MARK_BASE:#x}+i -> "
                             f"table {TABLE_BASE}+i")

    def _ovs_user_routes(self) -> None:
        """Userspace datapath: OVS user routes keyed by pkt_mark (module docstring)."""
        # Routes once every TEP address exists (OVS needs the bridge address for SRC).
        self._wait_ovs_sees_teps()
        for i, br, _, _ in endpoints(self.plan):
            for target in self.plan.scenario.dcs:
                prefix = str(target.subnet)
                proc = run(["ovs-appctl", "ovs/route/add", prefix, br, str(tep_router_ip(i)),
                            f"pkt_mark={mark_for(i)}"], check=False)
                if proc.returncode != 0:
                    raise LblabError(f"ovs/route/add {prefix} {br} pkt_mark={mark_for(i)}: "
                                     f"{(proc.stderr or proc.stdout).strip()}")
                self.routes.append((prefix, mark_for(i)))
        self.settings.append("gre underlay: TEP 198.18.<dc>.0/29 on LB LOCAL ports and DC "
                             "routers; OVS user routes by pkt_mark")

    def senders_tx_off(self) -> None:
        """Checksum offload (and with it TSO) off on every client: OVS 3.1 drops packets with
        offload flags at tunnel push, and re-segments a client's TSO packet to its egress
        port's MTU (gso_size = MTU - headers), ignoring the connection's MSS: a clamped MSS
        or a learnt path MTU would not hold and full-size packets would again exceed the
        underlay (measured: MSS clamping then only trickles at < 2 Mbit/s). The DC routers'
        LAN ports are already off (LiveNet). Recorded in LiveNet.tx_offload_off."""
        for host in self.plan.by_role("client"):
            node = self.live.node(host.name)
            self.live.turn_tx_offload_off(node, node.defaultIntf().name)

    def _wait_ovs_sees_teps(self, timeout_s: float = 10) -> None:
        want = {str(tep_lb_ip(i)) for i, *_ in endpoints(self.plan)}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = run(["ovs-appctl", "ovs/route/show"], check=False).stdout
            if all(f"{ip}/32" in out for ip in want):
                return
            time.sleep(0.05)
        raise LblabError(f"OVS did not learn the tunnel endpoint addresses {sorted(want)}")

    def _prepare_backends(self) -> None:
        vips = [str(d.vip) for d in self.plan.scenario.dcs]
        mech = self.live.mech.gre_decap
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        backends = self.plan.by_role("backend")
        for host in backends:
            node = self.live.net[host.name]
            if mech == "kernel":
                setup_kernel_decap(node, str(host.ip), vips)
                continue
            out = node.cmd("; ".join(f"ip addr replace {v}/32 dev lo" for v in vips) +
                           "; sysctl -qw net.ipv4.conf.all.rp_filter=0 "
                           "net.ipv4.conf.default.rp_filter=0; echo rc=$?")
            if not out.strip().endswith("rc=0"):
                raise LblabError(f"{host.name}: VIPs on lo: {out.strip()}")
            if mech == "userspace":
                self.decap_impl, argv = mechanisms.gredecap_command()
                self.decaps[host.name] = self.live.spawn(
                    host.name, [*argv, "--tun", TUN_NAME,
                                "--stats", str(self.stats_dir / f"{host.name}.json")])
        if mech == "userspace":
            for host in backends:
                self.live.wait_until(host.name, f"ip link show {TUN_NAME} | grep -q UP",
                                     f"GRE decapsulator on {host.name}")
        elif mech not in ("kernel",):
            raise LblabError("GRE mode needs a decapsulator: this kernel has no ip_gre and "
                             "no userspace decapsulator is available")

    # -- observation ------------------------------------------------------------------------
    def port_counters(self, dc: str) -> dict:
        """rx/tx packets and bytes of the DC's GRE port, read live from the switch (rx must
        stay 0: no reply is tunnelled)."""
        bridges = [lb.switch.name for lb in self.plan.lbs_of(dc)] or [self.plan.switch(dc).name]
        total: dict = {}
        for br in bridges:     # an LB tier: its LBs' GRE ports together
            for key, value in ovsstats.port_stats(br, GRE_OFPORT).items():
                total[key] = total.get(key, 0) + value
        return total

    def decap_stats(self) -> dict[str, dict]:
        """Per backend: counters and CPU seconds of its decapsulator, fresh: each is asked
        for them (SIGUSR1) and waited for until it has written them (its `seq` moved)."""
        def read(name: str) -> dict:
            try:
                return json.loads((self.stats_dir / f"{name}.json").read_text())
            except (OSError, ValueError):
                return {}
        before = {name: read(name).get("seq", 0) for name in self.decaps}
        asked = [name for name, proc in self.decaps.items() if proc.poll() is None]
        for name in asked:
            self.decaps[name].send_signal(signal.SIGUSR1)
        out = {}
        deadline = time.monotonic() + DECAP_STATS_TIMEOUT_S
        for name in self.decaps:
            data = read(name)
            while name in asked and data.get("seq", 0) <= before[name]:
                if time.monotonic() > deadline:
                    raise LblabError(f"GRE decapsulator on {name} did not write its "
                                     f"counters within {DECAP_STATS_TIMEOUT_S:g} s")
                time.sleep(0.01)
                data = read(name)
            out[name] = data
        return out

    def metadata(self) -> dict:
        return {"gre_decap": self.live.mech.gre_decap, "gre_ofport": GRE_OFPORT,
                "decapsulator": self.decap_impl,
                "underlay_mtu": self.levers.mtu,
                "settings": list(self.settings) + list(self.levers.settings),
                "ovs_routes": [f"{p} pkt_mark={m:#x}" for p, m in self.routes],
                "policy_rules": [describe_rule(r) for r in self.rules]}

    # -- teardown ---------------------------------------------------------------------------
    def teardown(self) -> None:
        for prefix, mark in self.routes:
            grestate.delete_ovs_route(prefix, mark)
        self.routes.clear()
        for rule in self.rules:
            grestate.delete_policy_rule(rule)
        self.rules.clear()
