"""Ryu/os-ken glue of the VIP load balancer: config in, flows out, REST on 127.0.0.1.

Thin: flows come from controller.vipflows (pure), messages from controller.ofmsg, request
handling from controller.viprest. This file only keeps per-switch state, resynchronises a
(re)connecting switch with a diff against its actual VIP flows (learned connection entries
are never touched, so established connections survive a controller restart), polls the
health checkers' files and the switch's counters, and answers REST.
"""
from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from controller.compat import (DEAD_DISPATCHER, MAIN_DISPATCHER, app_manager, hub,
                               ofp_event, ofproto_v1_3, packet, set_ev_cls)
from controller import ofmsg, vipconfig, viprest, vipflows
from controller.compat import FRAMEWORK
from controller.hashing import FlowKey

if FRAMEWORK == "ryu":
    from ryu.app.wsgi import ControllerBase, Response, WSGIApplication, route
    from ryu.lib.packet import ipv4, tcp
else:  # os-ken
    from os_ken.app.wsgi import ControllerBase, Response, WSGIApplication, route
    from os_ken.lib.packet import ipv4, tcp

APP_NAME = "lblab_vip"
HEALTH_POLL_S = 0.25
STATS_POLL_S = 1.0


class LblabVip(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _CONTEXTS = {"wsgi": WSGIApplication}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get("LBLAB_VIP_CONFIG")
        config = json.loads(Path(path).read_text()) if path else {"switches": {}}
        self.switches = vipconfig.load(config)
        self.health_dir = config.get("health_dir")
        self.health: dict[str, dict[str, str]] = {}   # dc -> ip -> up|down
        self.health_seq: dict[str, int] = {}
        self.datapaths: dict[int, object] = {}
        self.installed: dict[int, list] = {}           # dpid -> FlowSpecs now in the switch
        self.resync_buffer: dict[int, list] = {}
        self.stats: dict[str, dict] = {}               # vip -> backend -> connections, bytes
        self.pending: dict[int, tuple] = {}            # xid -> what a stats reply is for
        self._apply_lock = hub.BoundedSemaphore(1)
        kwargs["wsgi"].register(VipRestController, {APP_NAME: self})
        hub.spawn(self._health_loop)
        hub.spawn(self._stats_loop)

    # -- desired state ----------------------------------------------------------------------
    def _effective_vips(self, sw) -> list:
        health = self.health.get(sw.dc, {})
        return [viprest.effective(v, health) for v in sw.vips.values()]

    def _loads(self, sw) -> dict:
        return {v.name: {b: s.get("connections") or 0
                         for b, s in self.stats.get(v.name, {}).items()}
                for v in sw.vips.values()}

    def _apply(self, dpid: int) -> None:
        """Make switch `dpid` match the desired flows (a diff against what was installed).

        One apply at a time: send_msg can block on a full send queue (a Maglev table is
        thousands of flows) and yield to another green thread; a second apply diffing
        against a stale `installed` would then interleave its deletes with the first one's
        adds and leave stale buckets in the switch. `installed` is updated before sending,
        so the next apply diffs against the latest intent."""
        with self._apply_lock:
            dp = self.datapaths.get(dpid)
            sw = self.switches.get(dpid)
            if dp is None or sw is None or dpid not in self.installed:
                return
            desired = vipflows.desired_flows(sw.lb, self._effective_vips(sw), self._loads(sw))
            change = vipflows.diff(self.installed[dpid], desired)
            self.installed[dpid] = desired
            for msg in ofmsg.diff_messages(dp, change):
                dp.send_msg(msg)

    # -- switch lifecycle -------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def state_change(self, ev):
        dp = ev.datapath
        if ev.state == DEAD_DISPATCHER:
            self.datapaths.pop(dp.id, None)
            self.installed.pop(dp.id, None)
            return
        if dp.id not in self.switches:
            return
        self.datapaths[dp.id] = dp
        # Resync: read the VIP flows the switch already has, then diff (see stats reply).
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.resync_buffer[dp.id] = []
        req = parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         vipflows.COOKIE_VIP, vipflows.COOKIE_PREFIX_MASK,
                                         parser.OFPMatch())
        self.pending[self._send(dp, req)] = ("resync", dp.id)

    def _send(self, dp, msg) -> int:
        dp.set_xid(msg)
        dp.send_msg(msg)
        return msg.xid

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def flow_stats_reply(self, ev):
        msg = ev.msg
        what = self.pending.get(msg.xid)
        if what is None:
            return
        more = msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE
        if what[0] == "resync":
            dpid = what[1]
            self.resync_buffer[dpid].extend(ofmsg.StatsFlow(s) for s in msg.body)
            if not more:
                del self.pending[msg.xid]
                self.installed[dpid] = self.resync_buffer.pop(dpid)
                self.logger.info("switch %016x: %d VIP flows found, resynchronising", dpid,
                                 len(self.installed[dpid]))
                self._apply(dpid)
        elif what[0] == "bytes":
            _, vip_name, by_cookie = what
            for s in msg.body:
                name = by_cookie.get(s.cookie)
                if name:
                    self.stats.setdefault(vip_name, {}).setdefault(name, {})["bytes"] = \
                        s.byte_count
            if not more:
                del self.pending[msg.xid]

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    def aggregate_reply(self, ev):
        what = self.pending.pop(ev.msg.xid, None)
        if what is None:
            return
        _, vip_name, backend = what
        self.stats.setdefault(vip_name, {}).setdefault(backend, {})["connections"] = \
            ev.msg.body.flow_count

    # -- health and counters ----------------------------------------------------------------
    def _health_loop(self):
        while True:
            hub.sleep(HEALTH_POLL_S)
            if not self.health_dir:
                continue
            for dpid, sw in self.switches.items():
                path = Path(self.health_dir) / f"{sw.dc}.json"
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if data.get("seq") == self.health_seq.get(sw.dc):
                    continue
                self.health_seq[sw.dc] = data.get("seq")
                self.health[sw.dc] = data.get("backends", {})
                self.logger.info("health %s: %s", sw.dc, self.health[sw.dc])
                self._apply(dpid)

    def _stats_loop(self):
        while True:
            hub.sleep(STATS_POLL_S)
            for dpid, dp in list(self.datapaths.items()):
                sw = self.switches[dpid]
                for vip in sw.vips.values():
                    self._request_stats(dp, sw, vip)
                if any(v.algorithm == "leastload" for v in sw.vips.values()):
                    self._apply(dpid)  # new loads -> new bucket table (new flows only)

    def _request_stats(self, dp, sw, vip) -> None:
        tables = sw.lb.tables
        for b in vip.backends:
            req = ofmsg.count_request(dp, tables.conn, vipflows.conn_cookie(vip.index, b.ip))
            self.pending[self._send(dp, req)] = ("conns", vip.name, b.name)
        ofp, parser = dp.ofproto, dp.ofproto_parser
        by_cookie = {f.cookie: _backend_of_flow(vip, f)
                     for f in self.installed.get(dp.id, [])
                     if getattr(f, "table", None) == tables.backend}
        req = parser.OFPFlowStatsRequest(dp, 0, tables.backend, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                         vipflows.vip_cookie_prefix(vip.index),
                                         vipflows.COOKIE_VIP_MASK, parser.OFPMatch())
        self.pending[self._send(dp, req)] = ("bytes", vip.name, by_cookie)

    # -- reactive mode ----------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        if msg.cookie & vipflows.COOKIE_PREFIX_MASK != vipflows.COOKIE_VIP:
            return  # the L2 app's
        dp = msg.datapath
        sw = self.switches.get(dp.id)
        index = (msg.cookie >> 36) & 0xFF
        vip = next((v for v in (self._effective_vips(sw) if sw else []) if v.index == index),
                   None)
        pkt = packet.Packet(msg.data)
        ip4, seg = pkt.get_protocol(ipv4.ipv4), pkt.get_protocol(tcp.tcp)
        if vip is None or ip4 is None or seg is None:
            return
        key = FlowKey(ip4.src, ip4.dst, 6, seg.src_port, seg.dst_port)
        backend = vipflows.choose_backend(vip, key, self._loads(sw).get(vip.name))
        if backend is None:
            return  # no backend up: the client's SYN times out, as it would on a real LB
        for spec in vipflows.reactive_flows(vip, key, backend, sw.lb.tables):
            dp.send_msg(ofmsg.flow_mod(dp, spec))
        dp.send_msg(dp.ofproto_parser.OFPBarrierRequest(dp))
        # Re-serialise so checksums are complete: a segment sent to the controller before
        # checksum offload ran would otherwise be dropped by the backend.
        seg.csum, ip4.csum = 0, 0
        pkt.serialize()
        parser, ofp = dp.ofproto_parser, dp.ofproto
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                                        in_port=msg.match["in_port"],
                                        actions=[parser.OFPActionOutput(ofp.OFPP_TABLE)],
                                        data=pkt.data))

    # -- REST operations (called by VipRestController) --------------------------------------
    def rest_list(self) -> list:
        out = []
        for sw in self.switches.values():
            for vip in sw.vips.values():
                out.append(viprest.describe(vip, self.health.get(sw.dc, {}),
                                            self.stats.get(vip.name, {}),
                                            self._loads(sw).get(vip.name, {})))
        return out

    def rest_get(self, key: str) -> dict:
        sw, vip = viprest.find_vip(self.switches, key)
        return viprest.describe(vip, self.health.get(sw.dc, {}), self.stats.get(vip.name, {}),
                                self._loads(sw).get(vip.name, {}))

    def rest_update(self, key: str, change) -> dict:
        """Compute the new VIP, validate the whole switch state, then commit and apply."""
        sw, vip = viprest.find_vip(self.switches, key)
        new_vip = change(sw, vip)
        candidate = dict(sw.vips)
        candidate[vip.name] = new_vip
        viprest.checked(sw, candidate)
        removed = {b.ip for b in vip.backends} - {b.ip for b in new_vip.backends}
        sw.vips = candidate
        dp = self.datapaths.get(sw.dpid)
        if dp is not None:
            for ip in removed:  # a reused 5-tuple must re-hash, not follow a stale entry
                dp.send_msg(ofmsg.delete_by_cookie(dp, vipflows.conn_cookie(vip.index, ip),
                                                   vipflows.COOKIE_ALL))
        self._apply(sw.dpid)
        return self.rest_get(vip.name)


def _backend_of_flow(vip, flow) -> str | None:
    match = dict(flow.match)
    reg1 = match.get("reg1")
    for b in vip.backends:
        if reg1 is not None and int(reg1) == int(ipaddress.IPv4Address(b.ip)):
            return b.name
    return None


def _json(status: int, data) -> Response:
    return Response(status=status, content_type="application/json",
                    body=json.dumps(data, indent=1).encode())


def _handle(fn):
    """Map BadRequest to 400 with a JSON error; anything else to 500 with its type only."""
    def wrapper(self, req, **kwargs):
        try:
            return _json(200, fn(self, req, **kwargs))
        except viprest.BadRequest as exc:
            return _json(400, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the controller
            self.app.logger.exception("REST error")
            return _json(500, {"error": f"internal error: {type(exc).__name__}"})
    return wrapper


class VipRestController(ControllerBase):
    def __init__(self, req, link, data, **config):
        super().__init__(req, link, data, **config)
        self.app: LblabVip = data[APP_NAME]

    @route("vip", "/vips", methods=["GET"])
    @_handle
    def list_vips(self, req, **_):
        return self.app.rest_list()

    @route("vip", "/vips/{vip}", methods=["GET"])
    @_handle
    def get_vip(self, req, vip, **_):
        return self.app.rest_get(vip)

    @route("vip", "/vips/{vip}", methods=["PUT", "POST"])
    @_handle
    def change_vip(self, req, vip, **_):
        body = viprest.parse_body(req.body)
        return self.app.rest_update(vip, lambda sw, v: viprest.change_vip(sw, v, body))

    @route("vip", "/vips/{vip}/backends", methods=["POST"])
    @_handle
    def add_backend(self, req, vip, **_):
        body = viprest.parse_body(req.body)
        return self.app.rest_update(vip, lambda sw, v: viprest.add_backend(sw, v, body))

    @route("vip", "/vips/{vip}/backends/{backend}", methods=["DELETE"])
    @_handle
    def remove_backend(self, req, vip, backend, **_):
        return self.app.rest_update(vip, lambda sw, v: viprest.remove_backend(v, backend))

    @route("vip", "/vips/{vip}/backends/{backend}/drain", methods=["POST"])
    @_handle
    def drain(self, req, vip, backend, **_):
        return self.app.rest_update(vip, lambda sw, v: viprest.set_admin(v, backend, "drain"))

    @route("vip", "/vips/{vip}/backends/{backend}/undrain", methods=["POST"])
    @_handle
    def undrain(self, req, vip, backend, **_):
        return self.app.rest_update(vip, lambda sw, v: viprest.set_admin(v, backend, "up"))
