"""A VipSwitch wired to a fake switch, the way controller/vipapp.py wires it to a real one.

Every operation a VipSwitch returns is applied to a FakeOFTable that also holds the L2 app's
flows, in order, as the app sends it; requests are answered from the table (flow stats as a
switch reports them: ReadBack, no actions). Where Ryu is importable every operation is also
encoded with controller/ofmsg.py and serialised, and flow stats replies go through Ryu's
parser first, so the messages the app would send are checked too.
"""
from __future__ import annotations

from types import SimpleNamespace

from controller import l2logic, ofmsg, vipswitch
from controller.flows import FlowDiff, ReadBack
from support.fakeoftable import FakeOFTable


def ryu_datapath():
    """A datapath stand-in with Ryu's OpenFlow 1.3 modules (None without Ryu)."""
    try:
        from controller.shim import apply_eventlet_shim
        apply_eventlet_shim()
        from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    except ImportError:
        return None
    return SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser, id=1,
                           set_xid=lambda msg: setattr(msg, "xid", 1))


class FakeSwitch:
    def __init__(self, sw: vipswitch.VipSwitch, table: FakeOFTable | None = None):
        self.sw = sw
        self.table = table or FakeOFTable()
        if table is None:
            self.table.apply(l2logic.table_miss_flows())
        self.dp = ryu_datapath()
        self.now = 0.0
        self.sent: list = []          # every operation applied, in order

    # -- what the app does with a VipSwitch's operations ------------------------------------
    def apply(self, ops) -> None:
        for op in ops:
            self.sent.append(op)
            self._encode(op)
            if isinstance(op, FlowDiff):
                self.table.apply_diff(op, self.now)
            elif isinstance(op, vipswitch.DeleteCookie):
                self.table.delete_cookie(op.cookie, op.mask)
            elif isinstance(op, vipswitch.AddFlows):
                self.table.apply(op.flows, self.now)
            elif isinstance(op, vipswitch.REQUESTS):
                self.apply(self.sw.reply(op, self._answer(op)))

    def event(self, method, *args) -> None:
        """One VipSwitch event, its operations applied at once (the app's lock)."""
        self.apply(method(*args))

    def _answer(self, op):
        if isinstance(op, vipswitch.CountConns):
            return len(self.table.flows(table=op.table, cookie=op.cookie))
        flows = self.table.flows(cookie=op.cookie, mask=op.mask)
        if isinstance(op, vipswitch.ReadBytes):
            flows = [f for f in flows if f.table == op.table]
        return [(self.read_back(f), self.table.packets(f)) for f in flows]

    def read_back(self, flow) -> ReadBack:
        """A flow as the switch reports it; through Ryu's parser when Ryu is here."""
        if self.dp is None:
            return ReadBack(flow.table, flow.priority, flow.match, flow.cookie)
        from ryu.ofproto import ofproto_parser
        m = ofmsg.flow_mod(self.dp, flow)
        m.serialize()
        parsed = ofproto_parser.msg(self.dp, m.version, m.msg_type, m.msg_len, m.xid, m.buf)
        return ofmsg.read_back(parsed)

    def _encode(self, op) -> None:
        dp = self.dp
        if dp is None:
            return
        if isinstance(op, FlowDiff):
            msgs = ofmsg.diff_messages(dp, op)
        elif isinstance(op, vipswitch.DeleteCookie):
            msgs = [ofmsg.delete_by_cookie(dp, op.cookie, op.mask)]
        elif isinstance(op, vipswitch.AddFlows):
            msgs = [ofmsg.flow_mod(dp, f) for f in op.flows]
        elif isinstance(op, vipswitch.ReadVipFlows):
            msgs = [ofmsg.flow_stats_request(dp, op.cookie, op.mask)]
        elif isinstance(op, vipswitch.ReadBytes):
            msgs = [ofmsg.flow_stats_request(dp, op.cookie, op.mask, op.table)]
        elif isinstance(op, vipswitch.CountConns):
            msgs = [ofmsg.count_request(dp, op.table, op.cookie)]
        else:
            msgs = []
        for m in msgs:
            m.serialize()
