"""Desired VIP state -> flows for the LB switch, in a small controller-neutral form.

Pure (no Ryu, no Mininet): `desired_flows()` returns `FlowSpec`s of the flow IR
(controller/flows.py) for the desired state of controller/vipmodel.py; controller/ofmsg.py
turns them into Ryu flow mods, controller/ofctl.py into `ovs-ofctl add-flow` lines, and the
tests' fake flow table executes them (with the L2 app's flows beside them) so unit tests can
ask where a packet goes.

Table layout contract with the base L2 app (controller/l2app.py, l2logic.py)
---------------------------------------------------------------------------
- The base app uses tables 0 and 1 (0: source learning, then goto 1; 1: destination
  lookup or flood), priorities <= 10 and cookie BASE_COOKIE; it never deletes by table or
  wildcard, only its own flows one by one (a station that moved).
- lblab's VIP classifier flows live in table 0 (`TableLayout.l2`) at priorities 250..400,
  above every L2 flow, with cookies of prefix COOKIE_VIP; each app deletes only its own
  flows by cookie. Anything no VIP flow matches falls through to the L2 flows, unchanged.
- Tables `first_table`..`first_table+5` (default 10..15, leaving room after the L2 tables)
  belong to the VIP app alone, shared by all VIPs of the switch (told apart by reg2):
    conn    (10): learned exact 5-tuple flows -> reg1 := backend; miss = no-op
    select  (11): per VIP: connection known? else hash -> reg0 (dp_hash: the VIP's select
                  group; multipath: the action), then bucket, backend
    bucket  (12): per VIP and bucket value reg0 -> reg1 := backend (+ learn into conn)
    backend (13): per VIP and backend reg1 -> the forwarding mode's rewrites and output
  Tables are chained with Nicira `resubmit(,T)` (not goto_table) because a learned flow can
  only load registers: after `resubmit(,conn)` returns, the classifier continues with
  `resubmit(,select)` and sees reg1 set or not. VIP packets never enter the L2 tables
  (with ct, a backend's packets that are not VIP replies are handed to table 1).

The tables above are those of the learn implementation; the ct one (`ct_vip_flows`) adds
    out     (14): after the commit's recirculation: the backend's MAC and port
    reverse (15): a backend's packets after ct(nat): replies get the VIP MAC; then L2
Registers: reg0 = bucket (multipath output), reg1 = backend IPv4 as an integer (0 = none),
reg2 = VIP index. The backend's address (not its position in a list) is the id so that a
learned connection still names the right backend after the pool changes.

Packet walk (client -> VIP:port, TCP)
-------------------------------------
table 0, prio 300: reg2 := vip index; [resubmit(,conn)]; resubmit(,select)
select, prio 20 (reg1 == 0, i.e. no known connection):
    hash_impl dp_hash: group:G (G = vip_group_id(index), a select group of one bucket: OVS
        emits hash(sym_l4(0)) and recirculates, then the bucket runs
        move:dp_hash[0..k-1]->reg0[0..k-1]; resubmit(,bucket), with 2^k bucket entries,
        entry v -> slot v mod M (hashing.expand), each ending in resubmit(,backend): a
        bucket is an OpenFlow action set, where only the last resubmit would run)
    hash_impl multipath: multipath(symmetric_l3l4+udp, basis, modulo_n, n_buckets, 0,
        reg0[0..15]); resubmit(,bucket); resubmit(,backend)
select, prio 10 (connection known): resubmit(,backend)
bucket: reg1 := backend ip; learn(conn: exact 5-tuple -> reg1 := backend ip, idle 60 s);
        (dp_hash) resubmit(,backend)
backend: nat: eth_dst, ipv4_dst := backend; output backend port
         dsr: eth_dst := backend; output backend port (an LB of a tier, one-armed:
              eth_src := the LB's MAC, eth_dst := backend; output IN_PORT, to the fabric)
         gre: tun_dst := backend ip; output the switch's GRE port
With conntrack off the conn table is not consulted (one select flow, no learn), except that
`leastload` still learns: the learned flows are its connection counters (per-backend cookie,
read with an aggregate stats request), not consulted for the decision.

Backends in state down or drain get no buckets (maglev is rebuilt without them, modn runs
over the up backends only) but keep their backend-table flow, so connections already learned
for them keep flowing: that is what drain means, and for a backend marked down by a health
check its learned entries simply idle out (a false alarm does not cut live connections).
Removing a backend from the pool removes its backend flow; its learned entries would then
lead nowhere, so the VIP switch (controller/vipswitch.py) deletes them by `conn_cookie`
whenever a diff deletes a backend flow (`backend_flow_target`), and a reused 5-tuple
re-hashes.

Other flows in table 0: an ARP responder for the VIP (prio 400, reply built in the switch,
no controller round trip); a drop of any other IPv4 traffic to the VIP (prio 290: nothing
behind the VIP MAC would take it, L2 would only flood it); for gre, outer packets the tunnel
push hands back to the bridge (in_port LOCAL) for a backend of this LAN go straight to it
(prio 280, `gre_local_flows`); for nat, the reverse path (prio 250): backend port +
backend ip + service source port + destination outside the DC subnet -> ipv4_src := VIP,
eth_src := VIP MAC, output uplink. "Outside the subnet" is written as the
prefixes that cover the complement of the subnet (24 flows for a /24), because a flow in
table 0 cannot fall through to the L2 flows below it: traffic inside the subnet (health
checks) then matches none of them and is switched by L2, untouched.

The `reactive` option replaces the hash by the controller: select sends conn misses to the
controller, which picks a backend (`choose_backend`) and installs `reactive_flows()` (the
same exact entry a learn would make) before re-injecting the packet through table 0.

Cookies: COOKIE_VIP | index << 36 | 36-bit digest of the flow for computed flows;
COOKIE_CONN | index << 36 | backend ipv4 for learned/reactive connection entries. The digest
lets a restarted controller compare the switch's flows with the desired ones from
(table, priority, match, cookie) alone, without decoding Nicira actions (`vip_diff`). On
reconnect the VIP switch resyncs with `vip_diff`, not delete-all-and-reinstall: learned
entries (COOKIE_CONN) are never touched, so established connections keep their backend.
Only this module composes or decodes cookies (`cookie_vip_index`, `is_computed`,
`is_conn`, `backend_flow_target`).

Choices, and why
----------------
- Two connection tables (`conntrack_impl`). `ct` (the default of scenarios; see
  `ct_vip_flows` and vipmodel.uses_ct): the datapath's connection tracker holds each
  connection with its backend in ct_mark, so a new connection costs no flow-table change
  (in the userspace datapath a learn is a flow-table modification in the slow path, per
  connection), and mode nat gets a per-connection reverse translation (ct(nat)), as OVN's
  load balancer does; entries are counted with dump-conntrack (controller/ctcount.py).
  `learn`: learned flows, visible in dump-flows, countable per backend by cookie, and the
  only choice where this switch sees one direction of a connection (gre; reactive mode
  keeps its controller-installed entries). Both keep connections across controller
  restarts: neither lives in the controller.
- `symmetric_l3l4+udp` rather than `symmetric_l4`: the latter also hashes the Ethernet
  addresses, which carry no information here (always the router's) and are not in FlowKey;
  for TCP both hash the same 5-tuple fields otherwise.
- A bucket table rather than a select group's buckets: OVS's dp_hash selection maps at
  most 256 hash values to buckets, by its own (Webster) rule, while a bucket table is
  exactly the Maglev lookup table, updated entry by entry on pool changes. The group is
  there only to make the datapath compute the hash: with `multipath` the hash runs in the
  slow path, so each new connection's first packet is an upcall and its megaflow matches
  the whole 5-tuple (in the userspace datapath that, not conntrack, bounded the VIP's new
  connection rate); with dp_hash the megaflows match k bits of the hash and new connections
  stay in the datapath once the 2^k values have been seen.
"""
from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from controller import hashing
from controller.flows import (IN_PORT, LOCAL_PORT, Action, Controller, Ct, FlowDiff,
                              FlowSpec, Group, GroupSpec, Learn, Match, Move, Multipath,
                              Output, Resubmit, SetField, diff, make_flow, normalize_match)
from controller.vipmodel import (BUCKET_BITS, Backend, LbSwitch, TableLayout, Vip,
                                 assignment, table_slots, uses_ct, validate)

# --- cookies -------------------------------------------------------------------------------
COOKIE_VIP = 0x1B1AC << 44        # computed VIP flows (base app: 0x1B1AB00000000000)
COOKIE_CONN = 0x1B1AD << 44       # learned / reactive connection entries
COOKIE_PREFIX_MASK = 0xFFFFF << 44
COOKIE_VIP_MASK = 0xFFFFFFF << 36  # prefix + VIP index
COOKIE_ALL = 0xFFFFFFFFFFFFFFFF
DIGEST_BITS = 36

# --- priorities in the shared table 0 (base app: <= 100) ---------------------------------
PRIO_ARP = 400
PRIO_VIP = 300
PRIO_VIP_OTHER = 290
PRIO_GRE_LOCAL = 280              # gre: an outer packet for a backend of this switch's LAN
PRIO_REVERSE = 250                # learn, nat: the stateless reverse rewrite
PRIO_CT_REVERSE = 260             # ct: a backend's packets from a VIP port -> the tracker
PRIO_CONN = 100
PRIO_SELECT_NEW = 20
PRIO_SELECT_KNOWN = 10
PRIO_CT_KNOWN = 30                # ct: select / backend flows of a committed connection
PRIO_CT_REPLY = 20
PRIO_ENTRY = 10                   # bucket and backend tables: one exact entry per value
PRIO_MISS = 0

GROUP_VIP = 0x1B1A0000            # + VIP index: the VIP's dp_hash select group
REG_BUCKET = "reg0"
REG_BACKEND = "reg1"
REG_VIP = "reg2"
ETH_IP = 0x0800
ETH_ARP = 0x0806
GRE_PROTO = 47


# --- cookies -------------------------------------------------------------------------------
def _digest(table: int, priority: int, match: Match, actions: tuple, idle: int,
            hard: int) -> int:
    data = repr((table, priority, match, actions, idle, hard)).encode()
    d = hashlib.blake2b(data, digest_size=8, person=b"lblab-flowdigest").digest()
    return int.from_bytes(d, "big") & ((1 << DIGEST_BITS) - 1)


def vip_cookie_prefix(index: int) -> int:
    """Cookie value whose COOKIE_VIP_MASK bits select all computed flows of one VIP."""
    return COOKIE_VIP | (index & 0xFF) << DIGEST_BITS


def conn_cookie_prefix(index: int) -> int:
    """Cookie value whose COOKIE_VIP_MASK bits select all connection entries of one VIP."""
    return COOKIE_CONN | (index & 0xFF) << DIGEST_BITS


def conn_cookie(index: int, backend_ip: str) -> int:
    """Cookie of a VIP's learned/reactive connection entries to one backend: count them
    (leastload, REST "active connections") or delete them with cookie_mask=COOKIE_ALL."""
    return conn_cookie_prefix(index) | int(ipaddress.IPv4Address(backend_ip))


def is_computed(cookie: int) -> bool:
    return cookie & COOKIE_PREFIX_MASK == COOKIE_VIP


def is_conn(cookie: int) -> bool:
    return cookie & COOKIE_PREFIX_MASK == COOKIE_CONN


def conn_backend(cookie: int) -> int | None:
    """The backend (IPv4 as int) a connection entry's cookie names (None for other cookies)."""
    return cookie & 0xFFFFFFFF if is_conn(cookie) else None


def cookie_vip_index(cookie: int) -> int | None:
    """The VIP index a computed or connection cookie carries (None for anyone else's)."""
    if not (is_computed(cookie) or is_conn(cookie)):
        return None
    return (cookie >> DIGEST_BITS) & 0xFF


def backend_flow_target(flow: Any, tables: TableLayout) -> tuple[int, str] | None:
    """(VIP index, backend address) of a computed backend-table flow, from its cookie and
    match (a FlowSpec or a flow read back from the switch); None for any other flow."""
    if flow.table != tables.backend or not is_computed(flow.cookie):
        return None
    reg = dict(normalize_match(flow.match)).get(REG_BACKEND)
    if reg is None:
        return None
    return cookie_vip_index(flow.cookie), str(ipaddress.IPv4Address(int(reg)))


def rewrites_replies(flow: Any, tables: TableLayout = TableLayout()) -> bool:
    """Is this (computed) flow one that rewrites a NAT reply on its way out: learn's
    stateless reverse flows, or ct's reply flow after the tracker's reverse translation?
    From table, priority and cookie alone (what a flow dump gives)."""
    return is_computed(flow.cookie) and (
        (flow.table == tables.l2 and flow.priority == PRIO_REVERSE) or
        (flow.table == tables.reverse and flow.priority == PRIO_CT_REPLY))


def _flow(index: int, table: int, priority: int, match: Mapping[str, Any],
          actions: Iterable[Action]) -> FlowSpec:
    m, a = normalize_match(match), tuple(actions)
    return FlowSpec(table, priority, m, a, vip_cookie_prefix(index) | _digest(table, priority,
                                                                               m, a, 0, 0))


# --- flow computation ----------------------------------------------------------------------
def outside_prefixes(subnet: str) -> list[str]:
    """Prefixes that together cover exactly the IPv4 space outside `subnet` (one per prefix
    bit: the subnet's first i bits, bit i flipped)."""
    net = ipaddress.IPv4Network(subnet)
    base = int(net.network_address)
    out = []
    for i in range(net.prefixlen):
        plen = i + 1
        mask = ((1 << 32) - 1) ^ ((1 << (32 - plen)) - 1)
        flipped = (base ^ (1 << (31 - i))) & mask
        out.append(f"{ipaddress.IPv4Address(flipped)}/{plen}")
    return out


def ipv4_int(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def _uses_learn(vip: Vip) -> bool:
    return not vip.reactive and (vip.conntrack or vip.algorithm == "leastload")


def _consults_conn(vip: Vip) -> bool:
    return vip.conntrack or vip.reactive


def _learn(vip: Vip, tables: TableLayout, backend: Backend) -> Learn:
    return Learn(table=tables.conn, priority=PRIO_CONN,
                 cookie=conn_cookie(vip.index, backend.ip),
                 idle_timeout=vip.conn_idle_timeout, fin_idle_timeout=vip.conn_fin_timeout,
                 fixed=(("eth_type", ETH_IP), ("ip_proto", hashing.TCP)),
                 copy=("ipv4_src", "ipv4_dst", "tcp_src", "tcp_dst"),
                 load=((ipv4_int(backend.ip), REG_BACKEND),))


def _mode_actions(vip: Vip, switch: LbSwitch, b: Backend) -> list[Action]:
    if vip.mode == "nat":
        return [SetField("eth_dst", b.mac), SetField("ipv4_dst", b.ip), Output(b.switch_port)]
    if vip.mode == "dsr":
        if switch.one_armed_mac:   # an LB of a tier: back to the fabric, as itself
            return [SetField("eth_src", switch.one_armed_mac), SetField("eth_dst", b.mac),
                    Output(IN_PORT)]
        return [SetField("eth_dst", b.mac), Output(b.switch_port)]
    # gre: OVS pushes GRE + outer IPv4 to tun_dst and routes the outer packet itself, with
    # its route table entries for pkt_mark (lab/gre.py: one underlay per LB switch).
    mark = [SetField("pkt_mark", switch.gre_mark)] if switch.gre_mark else []
    return [*mark, SetField("tun_ipv4_dst", b.ip), Output(switch.gre_port)]


def pipeline_flows(switch: LbSwitch) -> list[FlowSpec]:
    """Explicit no-op misses in the VIP tables (shared by all VIPs, VIP index 0), so a miss
    inside a resubmit means "nothing" on every switch, whatever its table-miss default;
    the reverse table's miss hands the packet to the L2 lookup (not a VIP reply: ordinary
    traffic of a backend, switched as if no VIP existed)."""
    t = switch.tables
    return [*(_flow(0, tid, PRIO_MISS, {}, [])
              for tid in (t.conn, t.select, t.bucket, t.backend, t.out)),
            _flow(0, t.reverse, PRIO_MISS, {}, [Resubmit(t.l2_dst)])]


def vip_group_id(index: int) -> int:
    return GROUP_VIP + index


def vip_groups(switch: LbSwitch, vips: Sequence[Vip]) -> list[GroupSpec]:
    """The select groups the VIP flows point at (dp_hash VIPs with a backend up); their
    bucket takes as many bits of dp_hash as the VIP's bucket table has entries (from the
    table's size alone: no table is built here)."""
    t = switch.tables
    out = []
    for v in vips:
        slots = table_slots(v)
        if v.hash_impl != "dp_hash" or v.reactive or not slots:
            continue
        bits = (hashing.hash_entries(slots, v.hash_impl) - 1).bit_length()
        # A bucket is an OpenFlow action set: its set/move actions, then only ONE final
        # action (the last resubmit), so the bucket entries resubmit to backend.
        out.append(GroupSpec(vip_group_id(v.index), ((
            Move("dp_hash", REG_BUCKET, n_bits=bits), Resubmit(t.bucket)),)))
    return out


def _new_connection(vip: Vip, t: TableLayout, table: list[Backend]) -> list[Action]:
    """select's actions for a connection no table knows: hash, or ask the controller."""
    if vip.reactive:
        return [Controller()]
    if not table:
        return []  # no backend up: new connections are dropped, known ones still flow
    if vip.hash_impl == "dp_hash":
        return [Group(vip_group_id(vip.index))]   # its bucket: reg0, bucket, backend
    return [Multipath(len(table), dst=REG_BUCKET, n_bits=BUCKET_BITS,
                      basis=vip.hash_basis), Resubmit(t.bucket), Resubmit(t.backend)]


def _bucket_flows(vip: Vip, t: TableLayout, table: list[Backend], learn: bool,
                  tcp: dict) -> list[FlowSpec]:
    per_backend: dict[str, tuple[Action, ...]] = {}   # M buckets share N action lists
    for b in {b.name: b for b in table}.values():
        acts: list[Action] = [SetField(REG_BACKEND, ipv4_int(b.ip))]
        if learn:
            acts.append(_learn(vip, t, b))
        if vip.hash_impl == "dp_hash":   # reached from the group's bucket (vip_groups)
            acts.append(Resubmit(t.backend))
        per_backend[b.name] = tuple(acts)
    # Thousands of these per VIP (Maglev's M) on every pool change, of which a pool change
    # of one backend of N alters about 1/N: each entry is built once (its digest is most of
    # the cost) and kept while its bucket and backend's actions stay the same, so a change
    # costs in proportion to the entries it alters. The match is built from the normalised
    # TCP part once, not normalised again per bucket as _flow would.
    base = normalize_match(tcp)
    prefix = vip_cookie_prefix(vip.index)
    if sum(map(len, _BUCKET_ENTRIES.values())) > _BUCKET_ENTRIES_MAX:
        _BUCKET_ENTRIES.clear()
    built = {name: _BUCKET_ENTRIES.setdefault((t.bucket, base, prefix, acts), {})
             for name, acts in per_backend.items()}
    out = []
    for bucket, b in enumerate(hashing.expand(table, vip.hash_impl)):
        mine = built[b.name]
        f = mine.get(bucket)
        if f is None:
            m = tuple(sorted(base + ((REG_BUCKET, bucket),)))
            acts = per_backend[b.name]
            f = mine[bucket] = FlowSpec(t.bucket, PRIO_ENTRY, m, acts,
                                        prefix | _digest(t.bucket, PRIO_ENTRY, m, acts, 0, 0))
        out.append(f)
    return out


# (bucket table, match base, cookie prefix, one backend's actions) -> bucket -> its entry;
# emptied when it holds more entries than this (tens of MB: a few VIPs' churned tables)
_BUCKET_ENTRIES: dict[tuple, dict[int, FlowSpec]] = {}
_BUCKET_ENTRIES_MAX = 1 << 17


def ct_vip_flows(switch: LbSwitch, vip: Vip, loads: Mapping[str, int] | None = None
                 ) -> list[FlowSpec]:
    """The flows of a VIP whose connection table is conntrack (vipmodel.uses_ct): modes nat
    and dsr. Both directions of a connection pass this switch (the LB is the DC's LAN
    switch, and a DSR reply crosses it on its way to the router), so the tracker sees whole
    TCP connections. The backend lives in ct_mark (its IPv4 address, never 0), set when the
    connection is committed; a new connection costs no flow-table change.

    table 0 (VIP:port): reg2 := index; ct(zone, [nat], table=select)
    select: ct_mark == b (committed, b still in the pool) -> reg1 := b; resubmit(,backend)
            else (new) -> multipath -> bucket -> reg1 := b; resubmit(,backend)
    backend: reg1 == b and ct_mark == b -> resubmit(,out)
             reg1 == b (not committed yet) -> ct(commit, zone, [nat(dst=b)], ct_mark := b,
                                                table=out)
    out: reg1 == b -> eth_dst := b; output b's port (nat: the tracker rewrote ipv4_dst)
    table 0 (from b's port, source port of the VIP; nat: from b's address, dsr: from the
    VIP's): ct(zone, [nat], table=reverse)
    reverse: nat: a reply of a tracked connection (+trk+rpl, source now the VIP) ->
             eth_src := VIP MAC; then, as everything else there, the L2 lookup (table 1).
    So replies go wherever L2 sends them: the router, or a host of the DC that connected to
    its own VIP (hairpin); and a backend's own traffic on port 80 (a client connecting to
    it directly, from anywhere) is switched untouched. In dsr the LB rewrites no reply: the
    tracker only sees them cross the DC switch (Linux conntrack needs both directions:
    after a SYN it marks a connection's next packet from the same side invalid unless the
    answer was seen), and the bytes the LB rewrites are those of PRIO_CT_REPLY."""
    t, i = switch.tables, vip.index
    zone, nat = switch.ct_zone, vip.mode == "nat"
    flows: list[FlowSpec] = [_arp_flow(switch, vip)]
    for p in vip.ports:
        flows.append(_flow(i, t.l2, PRIO_VIP, {"eth_type": ETH_IP, "ip_proto": hashing.TCP,
                                               "ipv4_dst": vip.address, "tcp_dst": p},
                           [SetField(REG_VIP, i), Ct(zone, table=t.select, nat=nat)]))
    flows.append(_flow(i, t.l2, PRIO_VIP_OTHER, {"eth_type": ETH_IP, "ipv4_dst": vip.address},
                       []))
    tcp = {"eth_type": ETH_IP, "ip_proto": hashing.TCP, REG_VIP: i}
    table = assignment(vip, loads)
    for b in vip.backends:
        flows.append(_flow(i, t.select, PRIO_CT_KNOWN,
                           {**tcp, "ct_state": "+trk", "ct_mark": ipv4_int(b.ip)},
                           [SetField(REG_BACKEND, ipv4_int(b.ip)), Resubmit(t.backend)]))
    flows.append(_flow(i, t.select, PRIO_SELECT_NEW, {**tcp, "ct_state": "+trk"},
                       _new_connection(vip, t, table)))
    flows += _bucket_flows(vip, t, table, vip.algorithm == "leastload", tcp)
    for b in vip.backends:
        bid = ipv4_int(b.ip)
        flows.append(_flow(i, t.backend, PRIO_CT_KNOWN,
                           {**tcp, REG_BACKEND: bid, "ct_mark": bid}, [Resubmit(t.out)]))
        flows.append(_flow(i, t.backend, PRIO_ENTRY, {**tcp, REG_BACKEND: bid},
                           [Ct(zone, table=t.out, commit=True, mark=bid,
                               nat_dst=b.ip if nat else None)]))
        flows.append(_flow(i, t.out, PRIO_ENTRY, {**tcp, REG_BACKEND: bid},
                           [SetField("eth_dst", b.mac), Output(b.switch_port)]))
        for p in vip.ports:
            flows.append(_flow(i, t.l2, PRIO_CT_REVERSE,
                               {"in_port": b.switch_port, "eth_type": ETH_IP,
                                "ip_proto": hashing.TCP,
                                "ipv4_src": b.ip if nat else vip.address, "tcp_src": p},
                               [Ct(zone, table=t.reverse, nat=nat)]))
    if nat:
        flows.append(_flow(i, t.reverse, PRIO_CT_REPLY,
                           {"eth_type": ETH_IP, "ip_proto": hashing.TCP,
                            "ct_state": "+trk+rpl", "ipv4_src": vip.address},
                           [SetField("eth_src", vip.mac), Resubmit(t.l2_dst)]))
    return flows


def _arp_flow(switch: LbSwitch, vip: Vip) -> FlowSpec:
    """ARP reply built in the switch: swap addresses, answer with the VIP MAC, out IN_PORT."""
    return _flow(vip.index, switch.tables.l2, PRIO_ARP,
                 {"eth_type": ETH_ARP, "arp_op": 1, "arp_tpa": vip.address},
                 [Move("eth_src", "eth_dst"), SetField("eth_src", vip.mac),
                  SetField("arp_op", 2), Move("arp_sha", "arp_tha"),
                  SetField("arp_sha", vip.mac), Move("arp_spa", "arp_tpa"),
                  SetField("arp_spa", vip.address), Output(IN_PORT)])


def vip_flows(switch: LbSwitch, vip: Vip, loads: Mapping[str, int] | None = None
              ) -> list[FlowSpec]:
    """All computed flows of one VIP (validate first; desired_flows does)."""
    if uses_ct(vip):
        return ct_vip_flows(switch, vip, loads)
    t, i = switch.tables, vip.index
    flows: list[FlowSpec] = [_arp_flow(switch, vip)]
    classify: list[Action] = [SetField(REG_VIP, i)]
    if _consults_conn(vip):
        classify.append(Resubmit(t.conn))
    classify.append(Resubmit(t.select))
    for p in vip.ports:
        flows.append(_flow(i, t.l2, PRIO_VIP, {"eth_type": ETH_IP, "ip_proto": hashing.TCP,
                                               "ipv4_dst": vip.address, "tcp_dst": p},
                           classify))
    flows.append(_flow(i, t.l2, PRIO_VIP_OTHER, {"eth_type": ETH_IP, "ipv4_dst": vip.address},
                       []))
    # select: new connection -> hash (or controller); known connection -> backend.
    table = [] if vip.reactive else assignment(vip, loads)
    new = _new_connection(vip, t, table)
    # The IPv4/TCP prerequisites in these matches are required: OVS rejects a learn that
    # copies ip_src, or a set_field to ip_dst, in a flow whose match does not imply IPv4/TCP.
    tcp = {"eth_type": ETH_IP, "ip_proto": hashing.TCP, REG_VIP: i}
    if _consults_conn(vip):
        flows.append(_flow(i, t.select, PRIO_SELECT_NEW, {**tcp, REG_BACKEND: 0}, new))
        flows.append(_flow(i, t.select, PRIO_SELECT_KNOWN, tcp, [Resubmit(t.backend)]))
    else:
        flows.append(_flow(i, t.select, PRIO_SELECT_KNOWN, tcp, new))
    flows += _bucket_flows(vip, t, table, _uses_learn(vip), tcp)
    for b in vip.backends:
        flows.append(_flow(i, t.backend, PRIO_ENTRY, {**tcp, REG_BACKEND: ipv4_int(b.ip)},
                           _mode_actions(vip, switch, b)))
    if vip.mode == "nat":
        outside = outside_prefixes(switch.dc_subnet)
        for b in vip.backends:
            for p in vip.ports:
                for prefix in outside:
                    flows.append(_flow(i, t.l2, PRIO_REVERSE,
                                       {"in_port": b.switch_port, "eth_type": ETH_IP,
                                        "ip_proto": hashing.TCP, "ipv4_src": b.ip,
                                        "tcp_src": p, "ipv4_dst": prefix},
                                       [SetField("ipv4_src", vip.address),
                                        SetField("eth_src", vip.mac),
                                        Output(switch.uplink_port)]))
    return flows


def gre_local_flows(switch: LbSwitch, vips: Sequence[Vip]) -> list[FlowSpec]:
    """GRE to a backend on this switch's own LAN, without the hairpin. The tunnel push
    hands the outer packet to this bridge as if it came in on LOCAL, addressed to the DC
    router's MAC (the next hop of the LB's underlay routes, lab/gre.py), and the router
    would send it straight back into this switch towards the backend: two more datapath
    passes and a kernel forward per packet. Here the switch delivers it itself: outer
    packet (IP protocol 47) from LOCAL to a backend of its own LAN -> that backend's MAC
    and port. Backends of other DCs (no port here) still go by the router and the WAN; a
    one-armed LB of a tier reaches its backends through the fabric, so it has none. One
    flow per backend address, whatever number of gre VIPs name it (VIP index 0)."""
    if switch.one_armed_mac or switch.gre_port is None:
        return []
    local: dict[str, Backend] = {}
    for v in vips:
        if v.mode == "gre":
            for b in v.backends:
                if b.switch_port is not None and b.mac:
                    local.setdefault(b.ip, b)
    return [_flow(0, switch.tables.l2, PRIO_GRE_LOCAL,
                  {"in_port": LOCAL_PORT, "eth_type": ETH_IP, "ip_proto": GRE_PROTO,
                   "ipv4_dst": b.ip},
                  [SetField("eth_dst", b.mac), Output(b.switch_port)])
            for _, b in sorted(local.items())]


def desired_flows(switch: LbSwitch, vips: Sequence[Vip],
                  loads: Mapping[str, Mapping[str, int]] | None = None) -> list[FlowSpec]:
    """Every computed flow for the switch. `loads`: VIP name -> backend name -> active
    connections (only leastload uses it). Raises VipError on bad state."""
    validate(switch, vips)
    flows = pipeline_flows(switch)
    for v in vips:
        flows.extend(vip_flows(switch, v, (loads or {}).get(v.name)))
    return flows + gre_local_flows(switch, vips)


def reactive_flows(vip: Vip, key: hashing.FlowKey, backend: Backend,
                   tables: TableLayout = TableLayout()) -> list[FlowSpec]:
    """Exact-match entry for one connection, installed by the controller in reactive mode:
    the same entry a learn action would make. The app then sends the packet back through
    the pipeline (packet-out to OFPP_TABLE) so it takes the new entry."""
    match = {"eth_type": ETH_IP, "ip_proto": key.proto, "ipv4_src": key.src,
             "ipv4_dst": key.dst, "tcp_src": key.sport, "tcp_dst": key.dport}
    return [make_flow(tables.conn, PRIO_CONN, match,
                      [SetField(REG_BACKEND, ipv4_int(backend.ip))],
                      cookie=conn_cookie(vip.index, backend.ip),
                      idle_timeout=vip.conn_idle_timeout)]


def vip_diff(current: Iterable[Any], desired: Iterable[FlowSpec]) -> FlowDiff:
    """flows.diff over the computed VIP flows only: learned connection entries (COOKIE_CONN)
    and the base app's flows are never touched, so established connections survive a
    controller restart and the L2 app keeps its table."""
    return diff(current, desired, owns=is_computed)
