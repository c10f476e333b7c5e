"""Flow IR -> Ryu/os-ken OpenFlow 1.3 messages, and flow stats entries -> the IR's ReadBack.

Every function takes a datapath-like object (`.ofproto`, `.ofproto_parser`), as Ryu's
datapath and a test's SimpleNamespace both are; nothing here sends. Nicira actions come from
the parser module (parser.NXActionMultipath etc.), which Ryu and os-ken both generate from
nx_actions, so this file imports no framework module itself.

Encoding choices:
- set_field on standard OXM fields -> OFPActionSetField; on registers and tunnel fields ->
  NXActionRegLoad2 (OVS's own encoding of `set_field:...->reg1` / `->tun_dst` in OF1.3).
- move -> NXActionRegMove; resubmit -> NXActionResubmitTable; learn -> NXActionLearn with
  NXM field names (what OVS's learn parser expects).
- goto -> OFPInstructionGotoTable after the apply-actions instruction (the L2 app's tables).
- ct -> NXActionCT (zone immediate, NXActionNAT and a ct_mark set_field inside), ct_state
  matches as (value, mask).
- group -> OFPActionGroup; a GroupSpec -> OFPGroupMod with OVS's OFPGC11_ADD_OR_MOD command
  (an OpenFlow 1.1-1.4 extension, `ovs-ofctl mod-group --may-create`), so installing a group
  is idempotent: no error when it exists, and no delete (which would take every flow that
  points at the group with it).
- dp_hash is Ryu's `_dp_hash` (the experimenter OXM OVS decodes in any version).
- multipath: Ryu 4.34 lacks constants for symmetric_l3l4(+udp); the values below are OVS's
  (include/openflow/nicira-ext.h).
"""
from __future__ import annotations

import ipaddress
from typing import Any

from controller.flows import (FLOOD, IN_PORT, Action, Controller, Ct, FlowDiff, FlowSpec,
                              Goto, Group, GroupSpec, Learn, Move, Multipath, Output,
                              ReadBack, Resubmit, SetField, ct_state_bits, normalize_match)

NX_HASH_FIELDS = {"eth_src": 0, "symmetric_l4": 1, "symmetric_l3l4": 2,
                  "symmetric_l3l4+udp": 3, "nw_src": 4, "nw_dst": 5}
NX_CT_F_COMMIT = 1                # nicira-ext.h
NX_CT_RECIRC_NONE = 0xFF
NX_NAT_F_DST = 1 << 1
NX_MP_ALG = {"modulo_n": 0, "hash_threshold": 1, "hrw": 2, "iter_hash": 3}
OFPGC11_ADD_OR_MOD = 0x8000       # openflow-1.1.h: create or modify (OVS extension)
# Fields without an OpenFlow 1.3 OXM code: loaded with NXActionRegLoad2.
_NX_ONLY = {f"reg{n}" for n in range(16)} | {"tun_ipv4_dst", "tun_ipv4_src", "tunnel_id",
                                              "pkt_mark"}
_WIDTH = {"eth_src": 48, "eth_dst": 48, "arp_sha": 48, "arp_tha": 48, "arp_spa": 32,
          "arp_tpa": 32, "ipv4_src": 32, "ipv4_dst": 32, "arp_op": 16, "eth_type": 16,
          "tcp_src": 16, "tcp_dst": 16, "ip_proto": 8, "dp_hash": 32,
          **{f"reg{n}": 32 for n in range(16)}}
_RYU_NAME = {"dp_hash": "_dp_hash"}
# Learn specs name NXM fields (the *_nxm variants in Ryu's field table).
_LEARN_NXM = {"eth_type": "eth_type_nxm", "ip_proto": "ip_proto_nxm",
              "ipv4_src": "ipv4_src_nxm", "ipv4_dst": "ipv4_dst_nxm",
              "tcp_src": "tcp_src_nxm", "tcp_dst": "tcp_dst_nxm"}


def ryu_match(dp: Any, match: Any) -> Any:
    """OFPMatch from a FlowSpec match; "a.b.c.d/len" becomes Ryu's (addr, mask) form."""
    kw = {}
    for k, v in match:
        if k == "ct_state":
            v = ct_state_bits(v)
        elif isinstance(v, str) and "/" in v:
            net = ipaddress.IPv4Network(v)
            v = (str(net.network_address), str(net.netmask))
        kw[k] = v
    return dp.ofproto_parser.OFPMatch(**kw)


def ofs_nbits(start: int, end: int) -> int:
    """Nicira's packed (offset, n_bits - 1) of a subfield, as nicira_ext.ofs_nbits."""
    return (start << 6) + (end - start)


def ryu_action(dp: Any, a: Action) -> Any:
    ofp, p = dp.ofproto, dp.ofproto_parser
    if isinstance(a, Output):
        port = {IN_PORT: ofp.OFPP_IN_PORT, FLOOD: ofp.OFPP_FLOOD}.get(a.port, a.port)
        return p.OFPActionOutput(port, 0)
    if isinstance(a, Controller):
        return p.OFPActionOutput(ofp.OFPP_CONTROLLER, a.max_len)
    if isinstance(a, SetField):
        if a.field in _NX_ONLY:
            return p.NXActionRegLoad2(dst=a.field, value=a.value)
        return p.OFPActionSetField(**{a.field: a.value})
    if isinstance(a, Move):
        return p.NXActionRegMove(src_field=_RYU_NAME.get(a.src, a.src),
                                 dst_field=_RYU_NAME.get(a.dst, a.dst),
                                 n_bits=a.n_bits or _WIDTH[a.src])
    if isinstance(a, Group):
        return p.OFPActionGroup(a.group_id)
    if isinstance(a, Multipath):
        return p.NXActionMultipath(fields=NX_HASH_FIELDS[a.fields], basis=a.basis,
                                   algorithm=NX_MP_ALG[a.algorithm], max_link=a.n_links - 1,
                                   arg=a.arg, ofs_nbits=ofs_nbits(0, a.n_bits - 1), dst=a.dst)
    if isinstance(a, Resubmit):
        # in_port is 16 bits here: 0xfff8 (OF1.0 OFPP_IN_PORT, the default) keeps it.
        return p.NXActionResubmitTable(table_id=a.table)
    if isinstance(a, Goto):
        raise TypeError("Goto is an instruction: flow_mod() encodes it")
    if isinstance(a, Learn):
        specs = []
        for f, v in a.fixed:
            specs.append(p.NXFlowSpecMatch(src=v, dst=(_LEARN_NXM[f], 0), n_bits=_WIDTH[f]))
        for f in a.copy:
            nx = _LEARN_NXM[f]
            specs.append(p.NXFlowSpecMatch(src=(nx, 0), dst=(nx, 0), n_bits=_WIDTH[f]))
        for v, f in a.load:
            specs.append(p.NXFlowSpecLoad(src=v, dst=(f, 0), n_bits=_WIDTH[f]))
        return p.NXActionLearn(table_id=a.table, specs=specs, idle_timeout=a.idle_timeout,
                               hard_timeout=a.hard_timeout, priority=a.priority,
                               cookie=a.cookie, fin_idle_timeout=a.fin_idle_timeout)
    if isinstance(a, Ct):
        inner = []
        if a.nat_dst:
            inner.append(p.NXActionNAT(flags=NX_NAT_F_DST, range_ipv4_min=a.nat_dst,
                                       range_ipv4_max=a.nat_dst))
        elif a.nat:
            inner.append(p.NXActionNAT(flags=0))
        if a.mark is not None:
            inner.append(p.OFPActionSetField(ct_mark=a.mark))
        return p.NXActionCT(flags=NX_CT_F_COMMIT if a.commit else 0, zone_src="",
                            zone_ofs_nbits=a.zone,
                            recirc_table=NX_CT_RECIRC_NONE if a.table is None else a.table,
                            alg=0, actions=inner)
    raise TypeError(f"no Ryu encoding for {a!r}")


def instructions(dp: Any, actions: tuple) -> list:
    """The OpenFlow 1.3 instructions of a FlowSpec's actions (apply-actions, then goto)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    inst = []
    apply = [ryu_action(dp, a) for a in actions if not isinstance(a, Goto)]
    if apply:
        inst.append(p.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, apply))
    return inst + [p.OFPInstructionGotoTable(a.table) for a in actions if isinstance(a, Goto)]


def flow_mod(dp: Any, spec: FlowSpec | ReadBack, command: str = "add",
             inst: list | None = None) -> Any:
    """OFPFlowMod for one spec; command: add | delete_strict. (Changes are sent as add,
    which replaces the flow with the same table/priority/match, cookie included.) `inst`:
    the spec's instructions, if already built (flow mods may share them: serialising
    does not change them)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    cmd = {"add": ofp.OFPFC_ADD, "delete_strict": ofp.OFPFC_DELETE_STRICT}[command]
    # A delete matches on table, priority, match and cookie only, and its spec may be a
    # ReadBack of a flow read from the switch at resync, which has no actions or timeouts.
    adding = command == "add"
    if not adding:
        inst = []
    elif inst is None:
        inst = instructions(dp, spec.actions)
    return p.OFPFlowMod(datapath=dp, cookie=spec.cookie,
                        cookie_mask=0 if adding else 0xFFFFFFFFFFFFFFFF,
                        table_id=spec.table, command=cmd,
                        idle_timeout=spec.idle_timeout if adding else 0,
                        hard_timeout=spec.hard_timeout if adding else 0,
                        priority=spec.priority,
                        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
                        out_group=ofp.OFPG_ANY, flags=0,
                        match=ryu_match(dp, spec.match), instructions=inst)


def group_mod(dp: Any, group: GroupSpec) -> Any:
    """Create or replace a select group (OFPGC11_ADD_OR_MOD); buckets of weight 1."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    buckets = [p.OFPBucket(weight=1, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                           actions=[ryu_action(dp, a) for a in bucket])
               for bucket in group.buckets]
    return p.OFPGroupMod(dp, OFPGC11_ADD_OR_MOD, ofp.OFPGT_SELECT, group.group_id, buckets)


def diff_messages(dp: Any, d: FlowDiff) -> list[Any]:
    """Messages that apply a diff: adds, changes (as add), strict deletes, then a barrier."""
    shared: dict[int, list] = {}   # a table's entries share a few action tuples (by id:
    # the specs, and so their tuples, live through this call)
    msgs = []
    for s in d.add + d.modify:
        inst = shared.get(id(s.actions))
        if inst is None:
            inst = shared[id(s.actions)] = instructions(dp, s.actions)
        msgs.append(flow_mod(dp, s, inst=inst))
    msgs += [flow_mod(dp, s, "delete_strict") for s in d.delete]
    if msgs:
        msgs.append(dp.ofproto_parser.OFPBarrierRequest(dp))
    return msgs


def delete_by_cookie(dp: Any, cookie: int, mask: int) -> Any:
    """OFPFC_DELETE in every table of the flows whose cookie matches under mask."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowMod(datapath=dp, cookie=cookie, cookie_mask=mask, table_id=ofp.OFPTT_ALL,
                        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
                        out_group=ofp.OFPG_ANY, match=p.OFPMatch())


def count_request(dp: Any, table: int, cookie: int) -> Any:
    """Aggregate stats request whose flow_count is the number of connection entries with
    this exact cookie (vipflows.conn_cookie: one VIP, one backend)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPAggregateStatsRequest(dp, 0, table, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie,
                                      0xFFFFFFFFFFFFFFFF, p.OFPMatch())


def read_back(stat: Any) -> ReadBack:
    """A flow stats entry (OFPFlowStats) as the IR's ReadBack: what diff() needs."""
    return ReadBack(stat.table_id, stat.priority, normalize_match(list(stat.match.items())),
                    stat.cookie)


def flow_stats_request(dp: Any, cookie: int, mask: int, table: int | None = None) -> Any:
    """Flow stats request for the flows whose cookie matches under mask (every table when
    `table` is None)."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL if table is None else table,
                                 ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, p.OFPMatch())


def packet_out_to_table(dp: Any, in_port: int, data: bytes) -> Any:
    """Send a packet back through the switch's pipeline from table 0, as if it had just
    arrived on `in_port`."""
    ofp, p = dp.ofproto, dp.ofproto_parser
    return p.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port,
                          actions=[p.OFPActionOutput(ofp.OFPP_TABLE)], data=data)
