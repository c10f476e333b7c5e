"""GRE forwarding's addressing and rules, pure: the LB switch's tunnel port, the per-DC tunnel
endpoint (TEP) subnets and packet marks, the kernel-datapath policy rules, and the commands
that make a backend decapsulate with the kernel. No root, no network: unit-tested.

lab/gre.py builds the underlay from these and documents the design (why a TEP subnet per
DC, why marks, OVS user routes versus kernel policy routing); topologies/grestate.py reads
and removes what a run left in the root namespace.
"""
from __future__ import annotations

import ipaddress

from topologies.system import LblabError

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


LB_INDEX_BASE = 100     # an LB of a tier: index 100 + 4 (DC index - 1) + k, after the DCs'


def lb_index(dc_idx: int, k: int) -> int:
    """The endpoint index (TEP subnet, packet mark, kernel table) of LB k of DC dc_idx."""
    index = LB_INDEX_BASE + 4 * (dc_idx - 1) + k
    if not 1 <= k <= 4 or index > 255:
        raise ValueError(f"no GRE endpoint index for LB {k} of DC {dc_idx}")
    return index


def endpoints(plan) -> list[tuple[int, str, str, str]]:
    """(index, bridge, DC, GRE port name) of every LB bridge that tunnels: a DC's switch,
    or each LB switch of a DC with an LB tier (its fabric tunnels nothing)."""
    out = []
    for dc in plan.scenario.dcs:
        i = dc_index(plan, dc.name)
        tier = plan.lbs_of(dc.name)
        if not tier:
            out.append((i, plan.switch(dc.name).name, dc.name, port_name(dc.name)))
        out += [(lb_index(i, lb.k), lb.switch.name, dc.name, f"{port_name(dc.name)}-{lb.k}")
                for lb in tier]
    return out


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


def table_for(index: int) -> int:
    return TABLE_BASE + index


def policy_rule(index: int) -> dict:
    """The kernel-datapath rule of the DC with 1-based `index`: {pref, mark, table}."""
    return {"pref": table_for(index), "mark": mark_for(index), "table": table_for(index)}


def rule_selector(rule: dict) -> list[str]:
    """What `ip rule add` and `ip rule del` both take to name one rule."""
    return ["pref", str(rule["pref"]), "fwmark", f"{rule['mark']:#x}/0xffffffff", "lookup",
            str(rule["table"])]


def describe_rule(rule: dict) -> str:
    return f"fwmark {rule['mark']:#x} lookup {rule['table']}"


def policy_routing_commands(plan) -> list[list[str]]:
    """Kernel datapath: the `ip` commands (root namespace) that route each LB's marked outer
    packets towards its own DC router, one rule and one table per LB bridge (`endpoints`:
    a DC's switch, or each LB of its tier; module docstring)."""
    cmds = []
    for i, br, _, _ in endpoints(plan):
        table = str(table_for(i))
        cmds.append(["ip", "rule", "add", *rule_selector(policy_rule(i))])
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
