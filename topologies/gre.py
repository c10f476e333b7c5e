"""GRE forwarding (VIP mode `gre`): the LB switch's tunnel port, the underlay it routes outer
packets through, and decapsulation on the backends.

Design (measured on OVS 3.1, userspace datapath)
------------------------------------------------
Encapsulation. Every DC's LB switch lbs-DC gets one OVS GRE port `lbg-DC` (ofport
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
- the outer packet therefore always leaves the LB switch towards its own DC router (whose
  MAC OVS learnt by ARP for .1) and is routed by the emulated routers like any other
  packet: a backend in the same DC is reached by a hairpin through the DC router (one extra
  LAN hop), a backend in another DC across the emulated WAN links, relays and delays, so the
  cross-DC latency cost is real. Routers do not send ICMP redirects (send_redirects=0).
OVS user routes are not in the kernel and outlive the bridges, so teardown deletes them and
`lblab clean` removes any left on lblab's bridges (`stale_ovs_routes`).
On the kernel datapath (users' VMs) the GRE vport is the kernel's (a collect_md `gre`
device made by ovs-vswitchd): it routes the outer packet with the root namespace's kernel
tables, and its route lookup carries the packet's skb->mark, which is OVS's pkt_mark. So the
same marks select the same per-LB routes through kernel policy routing instead of OVS user
routes: one rule per DC, `ip rule add pref TABLE_BASE+i fwmark MARK_BASE+i lookup
TABLE_BASE+i`, and in that table one route per DC subnet via the DC's TEP router address out
of the LB bridge's internal port (`policy_routing_commands`). The kernel then resolves the
router's MAC itself and sends the outer packet into the bridge from LOCAL, as in userspace.
Kernel routes vanish with the bridges; the rules do not, so teardown deletes them and
`lblab clean` removes any left (`stale_policy_rules`). The kernel datapath has no
offload-flag restriction, so the clients' checksum offload stays on there.

Decapsulation on the backend (`Mechanisms.gre_decap`): `kernel` = an ip_gre device
`lbg-gre` (kernel_decap_commands(), also what tests/kernel exercises); `userspace` = one
topologies.gredecap process per backend (raw socket for protocol 47 -> TUN `lbg-tun`). Either
way every backend holds every DC's VIP on `lo` (so it can serve a VIP of another DC),
arp_ignore=1/arp_announce=2 (never answers ARP for it), rp_filter off, and the reply leaves
by the default route straight to the client: direct return; the GRE port's rx counters stay
at zero.

Offloads and MTU. OVS drops packets carrying checksum-offload flags at tunnel push: every
interface that hands the LB switch traffic that gets tunnelled must have `tx off`; here that
is the DC router's LAN port (clients are behind routers), which LiveNet already sets, and the
setting is recorded in `LiveNet.tx_offload_off`. The outer packet is 24 bytes longer than the
inner one: with MTU 1500 everywhere a full-size inner packet becomes 1524 bytes, which OVS
drops (no fragmentation, no ICMP: a black hole). Fixes (experiment gre-mtu): clamp the TCP
MSS in both directions at the client edge (`clamp_mss`), or raise the underlay MTU
(`set_underlay_mtu`: DC LANs, router WAN ports, relays) while the client LANs stay at 1500.
"""
from __future__ import annotations

import ipaddress
import json
import sys
import time
from pathlib import Path

from topologies.system import LblabError, run

GRE_OFPORT = 1000
GRE_OVERHEAD = 24                       # outer IPv4 (20) + GRE without options (4)
TEP_POOL = ipaddress.IPv4Network("198.18.0.0/16")
MARK_BASE = 0x1B1A0000                  # pkt_mark = MARK_BASE + DC index (1-based)
TABLE_BASE = 27000                      # kernel datapath: rule pref and table = base + index
TUN_NAME = "lbg-tun"
KERNEL_DEV = "lbg-gre"
PORT_PREFIX = "lbg-"


def port_name(dc: str) -> str:
    return f"{PORT_PREFIX}{dc}"


def mark_for(index: int) -> int:
    return MARK_BASE + index


def tep_subnet(index: int) -> ipaddress.IPv4Network:
    """The TEP /29 of the DC with 1-based index `index` (order of scenario.dcs)."""
    if not 1 <= index <= 255:
        raise ValueError(f"DC index {index} out of range 1..255")
    return ipaddress.IPv4Network(f"{TEP_POOL.network_address + (index << 8)}/29")


def tep_router_ip(index: int) -> ipaddress.IPv4Address:
    return tep_subnet(index).network_address + 1


def tep_lb_ip(index: int) -> ipaddress.IPv4Address:
    return tep_subnet(index).network_address + 2


def dc_index(plan, dc: str) -> int:
    return [d.name for d in plan.scenario.dcs].index(dc) + 1


def check_plan(plan) -> None:
    for site in plan.scenario.regions + plan.scenario.dcs:
        if site.subnet.overlaps(TEP_POOL):
            raise LblabError(f"GRE: site {site.name}'s subnet {site.subnet} overlaps the "
                             f"tunnel endpoint pool {TEP_POOL}")


def kernel_decap_commands(backend_ip: str, vips: list[str]) -> list[str]:
    """Shell commands (run inside a backend) that make the kernel decapsulate GRE sent to
    `backend_ip` with an ip_gre device and serve `vips` from lo (kernel GRE mechanism)."""
    cmds = [f"ip link add {KERNEL_DEV} type gre local {backend_ip} ttl 64",
            f"ip link set {KERNEL_DEV} up",
            f"sysctl -qw net.ipv4.conf.{KERNEL_DEV}.rp_filter=0 net.ipv4.conf.all.rp_filter=0 "
            "net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2"]
    cmds += [f"ip addr replace {vip}/32 dev lo" for vip in vips]
    return cmds


def setup_kernel_decap(node, backend_ip: str, vips: list[str]) -> None:
    """Kernel GRE decapsulation on one backend (a Mininet node); raises on failure."""
    for c in kernel_decap_commands(backend_ip, vips):
        out = node.cmd(f"{c} 2>&1; echo rc=$?").strip()
        if not out.endswith("rc=0"):
            raise LblabError(f"{node.name}: {c}: {out}")


def table_for(index: int) -> int:
    return TABLE_BASE + index


def policy_rule(index: int) -> dict:
    """The kernel-datapath rule of the DC with 1-based `index`: {pref, mark, table}."""
    return {"pref": table_for(index), "mark": mark_for(index), "table": table_for(index)}


def _rule_selector(rule: dict) -> list[str]:
    """What `ip rule add` and `ip rule del` both take to name one rule."""
    return ["pref", str(rule["pref"]), "fwmark", f"{rule['mark']:#x}/0xffffffff", "lookup",
            str(rule["table"])]


def describe_rule(rule: dict) -> str:
    return f"fwmark {rule['mark']:#x} lookup {rule['table']}"


def policy_routing_commands(plan) -> list[list[str]]:
    """Kernel datapath: the `ip` commands (root namespace) that route each LB's marked outer
    packets towards its own DC router, one rule and one table per DC (module docstring)."""
    cmds = []
    for dc in plan.scenario.dcs:
        i = dc_index(plan, dc.name)
        br = plan.switch(dc.name).name
        table = str(table_for(i))
        cmds.append(["ip", "rule", "add", *_rule_selector(policy_rule(i))])
        for target in plan.scenario.dcs:
            cmds.append(["ip", "route", "replace", str(target.subnet), "via",
                         str(tep_router_ip(i)), "dev", br, "src", str(tep_lb_ip(i)),
                         "table", table])
    return cmds


def parse_policy_rules(text: str) -> list[dict]:
    """lblab's rules in `ip rule show` output: [{pref, mark, table}] (marks of MARK_BASE+i
    looking up TABLE_BASE+i; anything else is not ours and never touched)."""
    rules = []
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if "fwmark" not in parts or "lookup" not in parts or not parts[0].isdigit():
            continue
        try:
            mark = int(parts[parts.index("fwmark") + 1].split("/")[0], 0)
            table = int(parts[parts.index("lookup") + 1])
        except (IndexError, ValueError):
            continue
        index = mark - MARK_BASE
        if 1 <= index <= 255 and policy_rule(index) == {"pref": int(parts[0]), "mark": mark,
                                                         "table": table}:
            rules.append(policy_rule(index))
    return rules


def stale_policy_rules() -> list[dict]:
    """lblab's GRE policy rules present in the root namespace (for `lblab clean`)."""
    return parse_policy_rules(run(["ip", "rule", "show"], check=False).stdout)


def delete_policy_rule(rule: dict) -> bool:
    ok = run(["ip", "rule", "del", *_rule_selector(rule)], check=False).returncode == 0
    run(["ip", "route", "flush", "table", str(rule["table"])], check=False)
    return ok


def ovs_user_routes() -> list[dict]:
    """OVS's user-added routes: [{prefix, mark, dev, gw}] from `ovs/route/show`."""
    out = run(["ovs-appctl", "ovs/route/show"], check=False).stdout
    routes = []
    for line in out.splitlines():
        parts = line.split()
        if not parts or parts[0] != "User:":
            continue
        r = {"prefix": parts[1], "mark": 0, "dev": "", "gw": ""}
        for key, field in (("MARK", "mark"), ("dev", "dev"), ("GW", "gw")):
            if key in parts and parts.index(key) + 1 < len(parts):
                r[field] = parts[parts.index(key) + 1]
        r["mark"] = int(r["mark"])
        routes.append(r)
    return routes


def delete_ovs_route(prefix: str, mark: int) -> bool:
    args = ["ovs-appctl", "ovs/route/del", prefix] + ([f"pkt_mark={mark}"] if mark else [])
    return run(args, check=False).returncode == 0


def stale_ovs_routes(prefixes: tuple[str, ...]) -> list[dict]:
    """User routes whose output bridge carries one of lblab's prefixes (for `lblab clean`)."""
    return [r for r in ovs_user_routes() if r["dev"].startswith(prefixes)]


class GreUnderlay:
    """Sets up and tears down GRE for a LiveNet (see the module docstring)."""

    def __init__(self, live):
        self.live = live
        self.plan = live.plan
        self.routes: list[tuple[str, int]] = []    # OVS user routes (userspace datapath)
        self.rules: list[dict] = []                 # policy rules (kernel datapath)
        self.decaps: dict[str, object] = {}    # backend name -> Popen
        self.stats_dir = Path(live.work_dir) / "gredecap"
        self.mtu = 1500
        self.settings: list[str] = []          # what was applied, for metadata

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        check_plan(self.plan)
        net = self.live.net
        for dc in self.plan.scenario.dcs:
            i = dc_index(self.plan, dc.name)
            br = self.plan.switch(dc.name).name
            router = net[self.plan.router(dc.name).name]
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
                 port_name(dc.name), "--", "set", "interface", port_name(dc.name), "type=gre",
                 f"ofport_request={GRE_OFPORT}", "options:remote_ip=flow",
                 f"options:in_key={i}", "options:packet_type=legacy_l3"])
            err = run(["ovs-vsctl", "--timeout=5", "get", "interface", port_name(dc.name),
                       "error"], check=False).stdout.strip()
            if err and err != "[]":
                raise LblabError(f"GRE port {port_name(dc.name)} on {br}: {err}")
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
        for stale in stale_policy_rules():
            delete_policy_rule(stale)
        # Teardown deletes every rule of the plan; one not (yet) added is simply not found.
        self.rules = [policy_rule(dc_index(self.plan, dc.name))
                      for dc in self.plan.scenario.dcs]
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
        for dc in self.plan.scenario.dcs:
            i = dc_index(self.plan, dc.name)
            br = self.plan.switch(dc.name).name
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
            node = self.live.net[host.name]
            ifname = node.defaultIntf().name
            if ifname not in self.live.tx_offload_off:
                self.live._tx_offload_off(node, ifname)

    def _wait_ovs_sees_teps(self, timeout_s: float = 10) -> None:
        want = {str(tep_lb_ip(dc_index(self.plan, d.name))) for d in self.plan.scenario.dcs}
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
                self.decaps[host.name] = self.live.spawn(
                    host.name, [sys.executable, "-m", "topologies.gredecap", "--tun", TUN_NAME,
                                "--stats", str(self.stats_dir / f"{host.name}.json")])
        if mech == "userspace":
            for host in backends:
                self.live.wait_until(host.name, f"ip link show {TUN_NAME} | grep -q UP",
                                     f"GRE decapsulator on {host.name}")
        elif mech not in ("kernel",):
            raise LblabError("GRE mode needs a decapsulator: this kernel has no ip_gre and "
                             "topologies.gredecap is unavailable")

    # -- knobs for experiments ----------------------------------------------------------------
    def underlay_interfaces(self) -> list[tuple[str | None, str]]:
        """(node name or None for the root namespace, interface) of every interface an outer
        packet may cross: DC LANs (backends, DC routers, LB ports and LOCAL), every router's
        WAN ports and the relays between them. Client LANs are not in it."""
        net, plan = self.live.net, self.plan
        out: list[tuple[str | None, str]] = []
        dc_names = {d.name for d in plan.scenario.dcs}
        for dc in plan.scenario.dcs:
            sw = net[plan.switch(dc.name).name]
            out.append((None, sw.name))
            for intf in sw.intfList():
                if intf.name != "lo" and intf.link is not None:
                    out.append((None, intf.name))
            for host in plan.hosts_in(dc.name, "backend"):
                out.append((host.name, net[host.name].defaultIntf().name))
        for router in plan.routers:
            node = net[router.name]
            for intf in node.intfList():
                if intf.name == "lo":
                    continue
                if intf is node.defaultIntf() and router.site not in dc_names:
                    continue  # a client LAN: stays at the client's MTU
                out.append((router.name, intf.name))
                link = intf.link
                if link is not None:
                    other = link.intf2 if link.intf1 is intf else link.intf1
                    if other.node.name.startswith("lbw-"):
                        out.append((None, other.name))
        seen, uniq = set(), []
        for item in out:
            if item not in seen:
                seen.add(item)
                uniq.append(item)
        return uniq

    def set_underlay_mtu(self, mtu: int) -> None:
        for node_name, ifname in self.underlay_interfaces():
            if node_name is None:   # LB ports, LOCAL ports and relay ends
                run(["ip", "link", "set", "dev", ifname, "mtu", str(mtu)])
            else:
                out = self.live.net[node_name].cmd(f"ip link set dev {ifname} mtu {mtu}; "
                                                   "echo rc=$?")
                if not out.strip().endswith("rc=0"):
                    raise LblabError(f"mtu {mtu} on {node_name}:{ifname}: {out.strip()}")
        self.mtu = mtu
        self.settings.append(f"underlay mtu {mtu}")

    def clamp_mss(self, mss: int | None = None) -> list[str]:
        """Clamp the TCP MSS of SYNs in both directions on every client-region router (the
        client edge), with nftables inside the router's namespace. Returns the routers."""
        mss = mss or 1500 - 40 - GRE_OVERHEAD
        done = []
        dcs = {d.name for d in self.plan.scenario.dcs}
        for router in self.plan.routers:
            if router.site in dcs:
                continue
            node = self.live.net[router.name]
            rules = self.stats_dir / f"mss-{router.name}.nft"
            rules.write_text(
                "add table ip lblab_gre\n"
                "add chain ip lblab_gre mss { type filter hook forward priority mangle; }\n"
                f"add rule ip lblab_gre mss tcp flags syn tcp option maxseg size set {mss}\n")
            out = node.cmd(f"nft -f {rules} 2>&1; echo rc=$?")
            if not out.strip().endswith("rc=0"):
                raise LblabError(f"MSS clamp on {router.name}: {out.strip()}")
            done.append(router.name)
        self.settings.append(f"mss clamp {mss} both directions on {','.join(done)}")
        return done

    def unclamp_mss(self) -> None:
        dcs = {d.name for d in self.plan.scenario.dcs}
        for router in self.plan.routers:
            if router.site not in dcs:
                self.live.net[router.name].cmd("nft delete table ip lblab_gre 2>/dev/null")

    def icmp_frag_needed(self, dcs: list[str] | None = None) -> list[str]:
        """Make path MTU discovery work: the DC router in front of each LB forwards to the VIP
        over a route with a locked MTU of 1500 - 24, so a too-big DF packet from a client is
        answered with ICMP fragmentation-needed (OVS itself sends none) and the client lowers
        its path MTU. Returns what was set."""
        done = []
        for dc in self.plan.scenario.dcs:
            if dcs is not None and dc.name not in dcs:
                continue
            router = self.live.net[self.plan.router(dc.name).name]
            lan = router.defaultIntf().name
            mtu = self.mtu - GRE_OVERHEAD
            out = router.cmd(f"ip route replace {dc.vip}/32 dev {lan} mtu lock {mtu}; "
                             "echo rc=$?")
            if not out.strip().endswith("rc=0"):
                raise LblabError(f"route mtu on {router.name}: {out.strip()}")
            done.append(f"{router.name}: {dc.vip}/32 mtu lock {mtu}")
        self.settings.append("icmp frag-needed: " + "; ".join(done))
        return done

    def no_icmp_frag_needed(self) -> None:
        for dc in self.plan.scenario.dcs:
            router = self.live.net[self.plan.router(dc.name).name]
            router.cmd(f"ip route del {dc.vip}/32 2>/dev/null")

    def flush_client_pmtu(self) -> None:
        """Forget learnt path MTUs in every client (between experiment variants)."""
        for host in self.plan.by_role("client"):
            self.live.net[host.name].cmd("ip route flush cache")

    # -- observation ------------------------------------------------------------------------
    def port_counters(self, dc: str) -> dict:
        """rx/tx packets of the DC's GRE port (rx must stay 0: no reply is tunnelled)."""
        out = run(["ovs-vsctl", "--timeout=5", "get", "interface", port_name(dc),
                   "statistics"]).stdout
        stats = {}
        for item in out.strip().strip("{}").split(","):
            if "=" in item:
                k, v = item.split("=", 1)
                stats[k.strip()] = int(v)
        return stats

    def decap_stats(self) -> dict[str, dict]:
        """Per backend: counters and CPU seconds of its decapsulator (fresh, via SIGUSR1)."""
        import signal as _signal
        for proc in self.decaps.values():
            if proc.poll() is None:
                proc.send_signal(_signal.SIGUSR1)
        time.sleep(0.2)
        out = {}
        for name in self.decaps:
            try:
                out[name] = json.loads((self.stats_dir / f"{name}.json").read_text())
            except (OSError, ValueError):
                out[name] = {}
        return out

    def metadata(self) -> dict:
        return {"gre_decap": self.live.mech.gre_decap, "gre_ofport": GRE_OFPORT,
                "underlay_mtu": self.mtu, "settings": list(self.settings),
                "ovs_routes": [f"{p} pkt_mark={m:#x}" for p, m in self.routes],
                "policy_rules": [describe_rule(r) for r in self.rules]}

    # -- teardown ---------------------------------------------------------------------------
    def teardown(self) -> None:
        for prefix, mark in self.routes:
            delete_ovs_route(prefix, mark)
        self.routes.clear()
        for rule in self.rules:
            delete_policy_rule(rule)
        self.rules.clear()
