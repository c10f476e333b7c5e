"""Ryu/os-ken glue for lblab's base L2 app (learning switch, OpenFlow 1.3).

Thin on purpose: decisions live in controller.l2logic (see its docstring for the two-table
layout). Handler shape after Ryu's simple_switch_13.
"""
from __future__ import annotations

from controller.compat import (CONFIG_DISPATCHER, MAIN_DISPATCHER, app_manager,
                               ether_types, ethernet, ofp_event, ofproto_v1_3, packet,
                               set_ev_cls)
from controller.l2logic import (BASE_COOKIE, DST_TABLE, L2_PRIORITY, PACKET_IN_BYTES,
                                SRC_TABLE, TABLE_MISS_PRIORITY, MacTables)


class LblabL2(app_manager.RyuApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.macs = MacTables()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        # A restarted controller keeps the switch's L2 flows (traffic keeps flowing) and
        # relearns into empty tables; re-adding an identical flow replaces it, so nothing is
        # duplicated.
        self.macs.forget(dp.id)
        to_controller = parser.OFPActionOutput(ofp.OFPP_CONTROLLER, PACKET_IN_BYTES)
        self._flow(dp, SRC_TABLE, TABLE_MISS_PRIORITY, parser.OFPMatch(),
                   actions=[to_controller], goto=DST_TABLE)
        self._flow(dp, DST_TABLE, TABLE_MISS_PRIORITY, parser.OFPMatch(),
                   actions=[parser.OFPActionOutput(ofp.OFPP_FLOOD)])
        self.logger.info("switch %016x connected", dp.id)

    def _flow(self, dp, table, priority, match, actions=(), goto=None, command=None):
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = []
        if actions:
            inst.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions)))
        if goto is not None:
            inst.append(parser.OFPInstructionGotoTable(goto))
        dp.send_msg(parser.OFPFlowMod(
            datapath=dp, table_id=table, priority=priority, match=match, instructions=inst,
            cookie=BASE_COOKIE, command=ofp.OFPFC_ADD if command is None else command,
            out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        learn = self.macs.packet_in(dp.id, msg.match["in_port"], eth.src)
        if learn is None:
            return
        if learn.moved_from is not None:
            self._flow(dp, SRC_TABLE, L2_PRIORITY,
                       parser.OFPMatch(in_port=learn.moved_from, eth_src=learn.mac),
                       command=ofp.OFPFC_DELETE_STRICT)
        # Destination first, so the station is reachable before its source flow stops the
        # copies to the controller.
        self._flow(dp, DST_TABLE, L2_PRIORITY, parser.OFPMatch(eth_dst=learn.mac),
                   actions=[parser.OFPActionOutput(learn.port)])
        self._flow(dp, SRC_TABLE, L2_PRIORITY,
                   parser.OFPMatch(in_port=learn.port, eth_src=learn.mac), goto=DST_TABLE)
