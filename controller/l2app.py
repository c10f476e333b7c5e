"""Ryu/os-ken glue for lblab's base L2 app (learning switch, OpenFlow 1.3).

Thin on purpose: decisions and flows live in controller.l2logic (see its docstring for the
two-table layout); messages come from controller.ofmsg. Handler shape after Ryu's
simple_switch_13.
"""
from __future__ import annotations

from controller import ofmsg
from controller.compat import (CONFIG_DISPATCHER, MAIN_DISPATCHER, BaseApp,
                               ether_types, ethernet, ofp_event, ofproto_v1_3, packet,
                               set_ev_cls)
from controller.l2logic import MacTables, learn_flows, table_miss_flows


class LblabL2(BaseApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.macs = MacTables()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def switch_features(self, ev):
        dp = ev.msg.datapath
        self.macs.forget(dp.id)
        for spec in table_miss_flows():
            dp.send_msg(ofmsg.flow_mod(dp, spec))
        self.logger.info("switch %016x connected", dp.id)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def packet_in(self, ev):
        msg = ev.msg
        dp = msg.datapath
        eth = packet.Packet(msg.data).get_protocol(ethernet.ethernet)
        if eth is None or eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        learn = self.macs.packet_in(dp.id, msg.match["in_port"], eth.src)
        if learn is None:
            return
        delete, add = learn_flows(learn)
        for spec in delete:
            dp.send_msg(ofmsg.flow_mod(dp, spec, "delete_strict"))
        for spec in add:
            dp.send_msg(ofmsg.flow_mod(dp, spec))
