"""Ryu/os-ken glue for lblab's base L2 app (learning switch, OpenFlow 1.3).

Thin on purpose: decisions live in controller.l2logic. Handler shape after Ryu's
simple_switch_13: a table-miss flow on connect, learn on packet-in, install exact L2 flows.
"""
from __future__ import annotations

from controller.compat import (CONFIG_DISPATCHER, MAIN_DISPATCHER, app_manager,
                               ether_types, ethernet, ofp_event, ofproto_v1_3, packet,
                               set_ev_cls)
from controller.l2logic import (BASE_COOKIE, FLOOD, L2_PRIORITY, TABLE_MISS_PRIORITY,
                                MacTables)

IDLE_TIMEOUT_S = 300


class LblabL2(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.macs = MacTables()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        # Resynchronise: drop only our own L2 flows (a restarted controller relearns).
        dp.send_msg(parser.OFPFlowMod(
            datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
            cookie=BASE_COOKIE, cookie_mask=0xFFFFFFFFFFFFFFFF,
            out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))
        self.macs.forget(dp.id)
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self._add_flow(dp, TABLE_MISS_PRIORITY, parser.OFPMatch(), actions)
        self.logger.info("switch %016x connected", dp.id)

    def _add_flow(self, dp, priority, match, actions, idle_timeout=0):
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        dp.send_msg(parser.OFPFlowMod(datapath=dp, priority=priority, match=match,
                                      instructions=inst, cookie=BASE_COOKIE,
                                      idle_timeout=idle_timeout))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        decision = self.macs.packet_in(dp.id, in_port, eth.src, eth.dst)
        out_port = ofp.OFPP_FLOOD if decision.out_port == FLOOD else decision.out_port
        actions = [parser.OFPActionOutput(out_port)]
        if decision.install:
            match = parser.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src)
            self._add_flow(dp, L2_PRIORITY, match, actions, idle_timeout=IDLE_TIMEOUT_S)
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        dp.send_msg(parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id,
                                        in_port=in_port, actions=actions, data=data))
