"""Ryu/os-ken glue of the VIP load balancer: config in, flows out, REST routes.

Thin: every decision is made by controller.vipswitch (one VipSwitch per LB switch, pure);
messages come from controller.ofmsg, request handling from controller.viprest. This file
decodes events, keeps the xid table of outstanding requests, holds the one lock under which
an event's operations are computed and sent (see vipswitch's docstring for why), runs the
polling loops (health checkers' files, counters) and sends. Its REST routes
(`rest_routes`) are served by the launcher's server (controller/rest.py) on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from controller import ctcount, ofmsg, vipconfig, vipflows, viprest, vipswitch
from controller.compat import (DEAD_DISPATCHER, MAIN_DISPATCHER, BaseApp, hub, ipv4,
                               ofp_event, ofproto_v1_3, packet, set_ev_cls, tcp)
from controller.flows import FlowDiff
from controller.hashing import TCP, FlowKey
from controller.rest import Route

HEALTH_POLL_S = 0.25
STATS_POLL_S = 1.0


class LblabVip(BaseApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    REST_ERRORS = (viprest.BadRequest,)      # answered 400 by the REST server

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("LBLAB_VIP_CONFIG")
        config = json.loads(Path(path).read_text()) if path else {"switches": {}}
        self.switches = {dpid: vipswitch.VipSwitch(cfg, log=self.logger.info)
                         for dpid, cfg in vipconfig.load(config).items()}
        self.health_dir = config.get("health_dir")
        # dpid -> the connected switch's outbox (its datapath is `outbox.dp`)
        self.outboxes: dict[int, _Outbox] = {}
        self.pending: dict[int, tuple] = {}     # xid -> (dpid, request, replies so far)
        self._apply_lock = hub.BoundedSemaphore(1)
        self._ct_counting: set[int] = set()     # zones whose conntrack dump is running
        # xid -> ([TierChange, ...], dpid) awaiting the barrier's reply
        self.barriers: dict[int, tuple[list, int]] = {}
        self.changes: dict[str, TierChange] = {}   # VIP name -> its last REST change
        self._next_change = 1
        hub.spawn(self._health_loop)
        hub.spawn(self._stats_loop)

    # -- sending ----------------------------------------------------------------------------
    def _handle(self, dpid: int, event, *args, msg=None):
        """Run one VipSwitch event under the apply lock and queue what it returns, in order,
        on the switch's outbox. Nothing under the lock waits for the network: a send that
        blocks (the datapath's queue full because the switch is not reading) must not hold
        the lock that the event thread needs to take the switch's replies."""
        with self._apply_lock:
            self._queue(dpid, event(*args), msg)

    def _queue(self, dpid: int, ops, msg=None, change=None) -> None:
        box = self.outboxes.get(dpid)
        if box is not None:
            box.put([buf for op in ops for buf in self._encode(box.dp, op, msg, change)])

    def _apply_tier(self, pairs, change) -> None:
        """A REST change of a VIP applied to every LB switch serving it as one operation:
        prepared (validated) on all of them before any commits, so a change refused by one
        changes none; each LB's flow mods end with a barrier whose reply is timed, and the
        change's record (`TierChange`, in GET /vips/X) says how long the LBs disagreed."""
        with self._apply_lock:
            prepared = [(sw, sw.prepare(vip.name, change)) for sw, vip in pairs]
            record = TierChange(self._next_change, [sw.dpid for sw, _ in pairs])
            self._next_change += 1
            self.changes[pairs[0][1].name] = record
            for sw, candidate in prepared:
                ops = sw.commit(candidate)
                if sw.installed is not None and not any(isinstance(op, FlowDiff)
                                                        for op in ops):
                    # connected, nothing to change: done once the switch has answered the
                    # barriers of earlier changes still in flight (replies come in order)
                    waiting = [x for x, (_, d) in self.barriers.items() if d == sw.dpid]
                    if waiting:
                        self.barriers[max(waiting)][0].append(record)
                    else:
                        record.confirm(sw.dpid)
                self._queue(sw.dpid, ops, change=record)

    def _encode(self, dp, op, msg=None, change=None) -> list[bytes]:
        """One operation's messages, serialised (requests registered by xid first)."""
        if isinstance(op, vipswitch.CountCt):   # a command, not a message: off the lock
            if op.zone not in self._ct_counting:
                self._ct_counting.add(op.zone)
                hub.spawn(self._count_ct, dp.id, op)
            return []
        packet_back = {}
        if isinstance(op, vipswitch.Resend):
            packet_back = {"in_port": msg.match["in_port"],
                           "data": _complete_checksums(msg.data)}
        out = []
        for m in vipswitch.messages(dp, op, **packet_back):
            dp.set_xid(m)
            if isinstance(op, vipswitch.REQUESTS):   # its reply comes back by xid
                self.pending[m.xid] = (dp.id, op, [])
            elif change is not None and isinstance(m, dp.ofproto_parser.OFPBarrierRequest):
                self.barriers[m.xid] = ([change], dp.id)
            m.serialize()
            out.append(bytes(m.buf))
        return out

    def _count_ct(self, dpid: int, op) -> None:
        try:
            out = subprocess.run(ctcount.command(op.zone), capture_output=True, text=True,
                                 timeout=5)
            entries = ctcount.parse(out.stdout) if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            entries = None
        finally:
            self._ct_counting.discard(op.zone)
        if entries is not None and dpid in self.switches:
            self._handle(dpid, self.switches[dpid].reply, op, entries)

    # -- switch lifecycle -------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev):
        dp = ev.datapath
        sw = self.switches.get(dp.id)
        if sw is None:
            return
        with self._apply_lock:
            if ev.state == DEAD_DISPATCHER:
                box = self.outboxes.get(dp.id)
                if box is not None and box.dp is dp:  # not a late event of an older connection
                    self.outboxes.pop(dp.id).close()
                    self.pending = {x: p for x, p in self.pending.items() if p[0] != dp.id}
                    self.barriers = {x: b for x, b in self.barriers.items() if b[1] != dp.id}
                    sw.disconnected()
                return
            if dp.id in self.outboxes:
                self.outboxes.pop(dp.id).close()
            self.outboxes[dp.id] = _Outbox(dp)
        self._handle(dp.id, sw.connected)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats_reply(self, ev):
        msg = ev.msg
        found = self.pending.get(msg.xid)
        if found is None:
            return
        dpid, request, entries = found
        entries.extend((ofmsg.read_back(s), s.byte_count) for s in msg.body)
        if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            del self.pending[msg.xid]
            self._handle(dpid, self.switches[dpid].reply, request, entries)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def barrier_reply(self, ev):
        with self._apply_lock:
            found = self.barriers.pop(ev.msg.xid, None)
            if found is not None:
                changes, dpid = found
                for change in changes:
                    change.confirm(dpid)

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    def aggregate_reply(self, ev):
        found = self.pending.pop(ev.msg.xid, None)
        if found is not None:
            dpid, request, _ = found
            self._handle(dpid, self.switches[dpid].reply, request, ev.msg.body.flow_count)

    # -- health and counters ----------------------------------------------------------------
    # A loop's error is logged and the loop goes on: under os-ken an exception would end
    # its thread, and health or counters would stop for the rest of the run.
    def _health_loop(self):
        while True:
            hub.sleep(HEALTH_POLL_S)
            if not self.health_dir:
                continue
            for dpid, sw in self.switches.items():
                try:
                    report = json.loads((Path(self.health_dir) / f"{sw.dc}.json").read_text())
                except (OSError, ValueError):
                    continue
                try:
                    self._handle(dpid, sw.health_report, report)
                except Exception:
                    self.logger.exception("health report of %s not applied", sw.dc)

    def _stats_loop(self):
        while True:
            hub.sleep(STATS_POLL_S)
            for dpid in list(self.outboxes):
                try:
                    self._handle(dpid, self.switches[dpid].poll)
                except Exception:
                    self.logger.exception("counter poll of %016x failed", dpid)

    # -- reactive mode ----------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        sw = self.switches.get(msg.datapath.id)
        if sw is None or not vipflows.is_computed(msg.cookie):
            return  # not a VIP switch, or the L2 app's packet-in
        pkt = packet.Packet(msg.data)
        ip4, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
        key = None if ip4 is None or seg is None else \
            FlowKey(ip4.src, ip4.dst, TCP, seg.src_port, seg.dst_port)
        self._handle(sw.dpid, sw.packet_in, msg.cookie, key, msg=msg)

    # -- REST ---------------------------------------------------------------------------------
    def rest_routes(self) -> list[Route]:
        """The VIP API; bodies are parsed (and bad JSON refused) before any state is read."""
        def body_change(fn):     # PUT /vips/X {...}, POST /vips/X/backends {...}
            def handle(params, body):
                data = viprest.parse_body(body)
                return self.rest_update(params["vip"], lambda sw, v: fn(sw, v, data))
            return handle

        def backend_change(fn):  # .../backends/B, .../backends/B/drain
            return lambda params, body: self.rest_update(
                params["vip"], lambda sw, v: fn(v, params["backend"]))

        change = body_change(viprest.change_vip)
        return [
            Route("GET", "/vips", lambda params, body: self.rest_list()),
            Route("GET", "/vips/{vip}", lambda params, body: self.rest_get(params["vip"])),
            Route("GET", "/vips/{vip}/change",
                  lambda params, body: self.rest_last_change(params["vip"])),
            Route("PUT", "/vips/{vip}", change),
            Route("POST", "/vips/{vip}", change),
            Route("POST", "/vips/{vip}/backends", body_change(viprest.add_backend)),
            Route("DELETE", "/vips/{vip}/backends/{backend}",
                  backend_change(viprest.remove_backend)),
            Route("POST", "/vips/{vip}/backends/{backend}/drain",
                  backend_change(lambda v, b: viprest.set_admin(v, b, "drain"))),
            Route("POST", "/vips/{vip}/backends/{backend}/undrain",
                  backend_change(lambda v, b: viprest.set_admin(v, b, "up"))),
        ]

    # Under os-ken the REST server, the loops and the event handlers are real threads: state
    # is read under the apply lock too, never while an event is changing it.
    def rest_list(self) -> list:
        with self._apply_lock:
            seen, out = set(), []
            for sw in self.switches.values():
                for name in sw.vips:
                    if (sw.dc, name) not in seen:
                        seen.add((sw.dc, name))
                        out.append(self._describe(name))
            return out

    def rest_get(self, key: str) -> dict:
        with self._apply_lock:
            _, vip = viprest.find_vip(self.switches, key)
            return self._describe(vip.name)

    def rest_last_change(self, key: str) -> dict:
        """The last REST change of a VIP and whether every LB's barrier reply confirmed it
        (`number` 0: none yet); cheap, for a client waiting until its change is in."""
        with self._apply_lock:
            _, vip = viprest.find_vip(self.switches, key)
            record = self.changes.get(vip.name)
            return record.describe() if record else {"number": 0, "confirmed": 0,
                                                     "disagreement_ms": None}

    def _describe(self, key: str) -> dict:
        """A VIP as its first LB sees it; with an LB tier, each LB's own view (connection
        counts, bytes and bucket shares are per LB) under `lbs`, and the last change's
        record under `last_change`."""
        pairs = viprest.find_tier(self.switches, key)
        sw, vip = pairs[0]
        out = sw.describe(vip.name)
        if len(pairs) > 1 or sw.config.lb_number:
            out["lbs"] = [{"lb": other.config.lb_number, "dpid": other.dpid,
                           "connected": other.connected_now,
                           "backends": other.describe(vip.name)["backends"]}
                          for other, _ in pairs]
        if vip.name in self.changes:
            out["last_change"] = self.changes[vip.name].describe()
        return out

    def rest_update(self, key: str, change) -> dict:
        with self._apply_lock:
            pairs = viprest.find_tier(self.switches, key)
        self._apply_tier(pairs, change)
        return self.rest_get(key)


class TierChange:
    """One REST change applied to every LB of a VIP: when it was sent and when each LB's
    barrier reply confirmed it (monotonic clock of the controller)."""

    def __init__(self, number: int, dpids):
        self.number = number
        self.started = time.monotonic()
        self.confirmed: dict[int, float | None] = {d: None for d in dpids}

    def confirm(self, dpid: int) -> None:
        if self.confirmed.get(dpid, 0) is None:
            self.confirmed[dpid] = time.monotonic()

    def describe(self) -> dict:
        """`disagreement_ms`: from the first flow mod sent until the last LB confirmed (the
        longest the LBs can have held different tables); `confirm_spread_ms`: first to last
        confirmation. None until every LB confirmed (a disconnected LB never does)."""
        done = [t for t in self.confirmed.values() if t is not None]
        complete = len(done) == len(self.confirmed)
        return {"number": self.number, "lbs": len(self.confirmed), "confirmed": len(done),
                "disagreement_ms": round((max(done) - self.started) * 1000, 3)
                if complete and done else None,
                "confirm_spread_ms": round((max(done) - min(done)) * 1000, 3)
                if complete and done else None}


class _Outbox:
    """One datapath's queue of serialised messages, drained in order by its own (green)
    thread, outside every lock of the app. An event's messages go out in writes of at most
    CHUNK bytes, split only between messages (other senders, the L2 app and the echo loop,
    write to the same connection), so a pool change of hundreds of flow mods takes a few
    entries of the datapath's send queue, not hundreds."""
    CHUNK = 64 * 1024

    def __init__(self, dp):
        self.dp = dp
        self.queue = hub.Queue()
        hub.spawn(self._run)

    def put(self, messages: list[bytes]) -> None:
        if messages:
            self.queue.put(messages)

    def close(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        while True:
            messages = self.queue.get()
            if messages is None:
                return
            batch: list[bytes] = []
            size = 0
            for m in messages:
                if batch and size + len(m) > self.CHUNK:
                    if not self.dp.send(b"".join(batch)):
                        return   # the connection is closing: its successor has its own box
                    batch, size = [], 0
                batch.append(m)
                size += len(m)
            if batch and not self.dp.send(b"".join(batch)):
                return


def _complete_checksums(data: bytes) -> bytes:
    """The packet re-serialised with complete checksums: a segment sent to the controller
    before checksum offload ran would otherwise be dropped by the backend."""
    pkt = packet.Packet(data)
    ip4, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
    seg.csum, ip4.csum = 0, 0
    pkt.serialize()
    return pkt.data
