"""The levers against GRE's 24 extra bytes, for experiments (gre-mtu, vip-modes): MTUs along
the underlay, MSS clamping at the client edge, ICMP fragmentation-needed before the LB.

With MTU 1500 everywhere a full-size client packet becomes 1524 bytes inside GRE, which OVS
drops without fragmenting or sending ICMP: small requests work while large transfers hang.
Each lever removes the black hole its own way; `settings` records what was applied (the
GRE underlay's metadata). Every lever has its undo, so variants can follow each other in
one network.
"""
from __future__ import annotations

from topologies.gre import GRE_OVERHEAD
from topologies.system import LblabError, run


class MtuLevers:
    def __init__(self, live, work_dir):
        self.live = live
        self.plan = live.plan
        self.work_dir = work_dir
        self.mtu = 1500
        self.settings: list[str] = []

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
            rules = self.work_dir / f"mss-{router.name}.nft"
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
