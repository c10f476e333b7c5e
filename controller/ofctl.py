"""FlowSpec -> `ovs-ofctl -O OpenFlow13 add-flow BR '<line>'` syntax (OVS 3.1). Pure.

For people (a flow table printed the way `ovs-ofctl dump-flows` shows it) and for tests
(`ovs-ofctl parse-flow` checks the line, prerequisites included, without a switch).
"""
from __future__ import annotations

from typing import Any

from controller.flows import (FLOOD, IN_PORT, LOCAL_PORT, Action, Controller, Ct, FlowSpec,
                              Goto, Group, GroupSpec, Learn, Move, Multipath, Output, Resubmit,
                              SetField)

_OFCTL_MATCH = {"eth_type": "dl_type", "eth_src": "dl_src", "eth_dst": "dl_dst",
                "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "ip_proto": "nw_proto",
                "tun_ipv4_dst": "tun_dst", "tun_ipv4_src": "tun_src"}
_OFCTL_SET = {"ipv4_src": "ip_src", "ipv4_dst": "ip_dst", "tun_ipv4_dst": "tun_dst",
              "tun_ipv4_src": "tun_src"}
_NXM = {"eth_src": "NXM_OF_ETH_SRC", "eth_dst": "NXM_OF_ETH_DST",
        "eth_type": "NXM_OF_ETH_TYPE", "ip_proto": "NXM_OF_IP_PROTO",
        "ipv4_src": "NXM_OF_IP_SRC", "ipv4_dst": "NXM_OF_IP_DST",
        "tcp_src": "NXM_OF_TCP_SRC", "tcp_dst": "NXM_OF_TCP_DST",
        "udp_src": "NXM_OF_UDP_SRC", "udp_dst": "NXM_OF_UDP_DST",
        "arp_op": "NXM_OF_ARP_OP", "arp_spa": "NXM_OF_ARP_SPA", "arp_tpa": "NXM_OF_ARP_TPA",
        "arp_sha": "NXM_NX_ARP_SHA", "arp_tha": "NXM_NX_ARP_THA", "in_port": "NXM_OF_IN_PORT",
        "dp_hash": "NXM_NX_DP_HASH",
        **{f"reg{n}": f"NXM_NX_REG{n}" for n in range(8)}}


def _val(field_name: str, v: Any) -> str:
    if field_name == "eth_type":
        return f"0x{v:04x}"
    if field_name == "in_port" and v == LOCAL_PORT:
        return "LOCAL"
    if field_name.startswith("reg") or field_name in ("metadata", "ct_mark"):
        return hex(v)
    return str(v)


def action(a: Action) -> str:
    if isinstance(a, Output):
        if a.port == IN_PORT:
            return "in_port"
        return "flood" if a.port == FLOOD else f"output:{a.port}"
    if isinstance(a, Controller):
        return f"controller:{a.max_len}"
    if isinstance(a, SetField):
        return f"set_field:{_val(a.field, a.value)}->{_OFCTL_SET.get(a.field, a.field)}"
    if isinstance(a, Move):
        bits = f"[0..{a.n_bits - 1}]" if a.n_bits else "[]"
        return f"move:{_NXM[a.src]}{bits}->{_NXM[a.dst]}{bits}"
    if isinstance(a, Group):
        return f"group:{a.group_id}"
    if isinstance(a, Multipath):
        return (f"multipath({a.fields},{a.basis},{a.algorithm},{a.n_links},{a.arg},"
                f"{_NXM[a.dst]}[0..{a.n_bits - 1}])")
    if isinstance(a, Resubmit):
        return f"resubmit(,{a.table})"
    if isinstance(a, Goto):
        return f"goto_table:{a.table}"
    if isinstance(a, Learn):
        parts = [f"table={a.table}", f"priority={a.priority}", f"cookie={a.cookie:#x}"]
        if a.idle_timeout:
            parts.append(f"idle_timeout={a.idle_timeout}")
        if a.hard_timeout:
            parts.append(f"hard_timeout={a.hard_timeout}")
        if a.fin_idle_timeout:
            parts.append(f"fin_idle_timeout={a.fin_idle_timeout}")
        parts += [f"{_OFCTL_MATCH.get(f, f)}={_val(f, v)}" for f, v in a.fixed]
        parts += [f"{_NXM[f]}[]" for f in a.copy]
        parts += [f"load:{v:#x}->{_NXM[f]}[]" for v, f in a.load]
        return "learn(" + ",".join(parts) + ")"
    if isinstance(a, Ct):
        parts = ["commit"] if a.commit else []
        parts.append(f"zone={a.zone}")
        if a.table is not None:
            parts.append(f"table={a.table}")
        if a.nat_dst:
            parts.append(f"nat(dst={a.nat_dst})")
        elif a.nat:
            parts.append("nat")
        if a.mark is not None:
            parts.append(f"exec(set_field:{a.mark:#x}->ct_mark)")
        return "ct(" + ",".join(parts) + ")"
    raise TypeError(f"unknown action {a!r}")


def to_ofctl(flow: FlowSpec) -> str:
    """One `add-flow` line; an empty action list is `drop`."""
    head = [f"table={flow.table}", f"priority={flow.priority}", f"cookie={flow.cookie:#x}"]
    if flow.idle_timeout:
        head.append(f"idle_timeout={flow.idle_timeout}")
    if flow.hard_timeout:
        head.append(f"hard_timeout={flow.hard_timeout}")
    # Prerequisites first, as ovs-ofctl prints them.
    order = {"in_port": 0, "eth_type": 1, "ip_proto": 2}
    for k, v in sorted(flow.match, key=lambda kv: (order.get(kv[0], 9), kv[0])):
        head.append(f"{_OFCTL_MATCH.get(k, k)}={_val(k, v)}")
    acts = ",".join(action(a) for a in flow.actions) or "drop"
    return ",".join(head) + " actions=" + acts


def group_to_ofctl(group: GroupSpec) -> str:
    """One `add-group` (or `mod-group --may-create`) line."""
    buckets = ",".join("bucket=weight:1,actions=" + ",".join(action(a) for a in b)
                       for b in group.buckets)
    return f"group_id={group.group_id},type=select,{buckets}"
