"""Network plan -> Mininet `Topo`: the graph as data, with no live network (no root needed).

The same Topo can be replayed by `Mininet(...)` here or, later, placed across machines with
Mininet's cluster mode. Link emulation is chosen by the caller (`link_delay`): netem puts
delay/loss on the routers' WAN interfaces; relay inserts a userspace relay node between the
two routers; none applies only the bandwidth cap (htb) and no delay at all.
"""
from __future__ import annotations

from mininet.topo import Topo

from topologies.plan import LB_UPLINK_PORT, REGION_LANS, NetworkPlan, WanPlan, lan_carriers

LINK_DELAY_MECHANISMS = ("netem", "relay", "none")
def wan_link_params(wan: WanPlan, link_delay: str) -> dict:
    """TCLink options of one WAN link for a mechanism (relay links carry theirs on the node)."""
    params: dict = {}
    if wan.link.bw_mbps:
        params["bw"] = wan.link.bw_mbps
    if link_delay == "netem":
        params["delay"] = f"{wan.link.delay_ms:g}ms"
        if wan.link.loss_pct:
            params["loss"] = wan.link.loss_pct
    return params


class ScenarioTopo(Topo):
    """Mininet topology of a NetworkPlan. Node classes are supplied by lab/nodes.py."""

    def build(self, plan: NetworkPlan, link_delay: str = "none", lan_bw: float | None = None,
              region_lan: str = REGION_LANS[0]):
        if link_delay not in LINK_DELAY_MECHANISMS:
            raise ValueError(f"link_delay must be one of {LINK_DELAY_MECHANISMS}")
        lan = {"bw": lan_bw} if lan_bw else {}
        carriers = lan_carriers(plan, region_lan)
        for sw in plan.switches:
            self.addSwitch(sw.name, dpid=sw.dpid_hex,
                           role="edge" if carriers[sw.site] == "ovs" else "bridge")
        for router in plan.routers:
            # The LAN link is the router's first (default) interface: Mininet gives a node's
            # `ip` to its default interface at config time.
            cidr = f"{router.lan_ip}/{router.prefixlen}"
            self.addNode(router.name, role="router", ip=cidr, mac=router.lan_mac)
            self.addLink(router.name, plan.switch(router.site).name, port2=router.switch_port,
                         params1={"ip": cidr}, **lan)
        for lb in plan.lbs:   # one-armed LB switches hang off their DC's fabric
            self.addLink(lb.switch.name, plan.switch(lb.dc).name, port1=LB_UPLINK_PORT,
                         port2=lb.fabric_port, **lan)
        for host in plan.hosts:
            self.addHost(host.name, ip=host.cidr, mac=host.mac,
                         defaultRoute=f"via {host.gateway}", role=host.role, site=host.site)
            self.addLink(host.name, host.switch or plan.switch(host.site).name,
                         port2=host.switch_port, **lan)
        for wan in plan.wans:
            a_ip = {"ip": f"{wan.a_ip}/{wan.prefixlen}"}
            b_ip = {"ip": f"{wan.b_ip}/{wan.prefixlen}"}
            if link_delay == "relay":
                link = wan.link
                self.addSwitch(wan.relay_name, role="relay", delay_ms=link.delay_ms,
                               loss_pct=link.loss_pct, rate_mbps=link.bw_mbps,
                               seed=wan.index)
                self.addLink(wan.a_router, wan.relay_name, params1=a_ip)
                self.addLink(wan.relay_name, wan.b_router, params2=b_ip)
            else:
                self.addLink(wan.a_router, wan.b_router, params1=a_ip, params2=b_ip,
                             **wan_link_params(wan, link_delay))
