"""A VipSwitch wired to a fake switch, the way controller/vipapp.py wires it to a real one.

Every operation a VipSwitch returns is applied to a FakeOFTable that also holds the L2 app's
flows, in order, as the app sends it; requests are answered from the table (flow stats as a
switch reports them: ReadBack, no actions). Where the framework LBLAB_CONTROLLER picks (Ryu
or os-ken) is importable every operation is also encoded with controller/ofmsg.py and
serialised, and flow stats replies go through that framework's parser first, so the messages the app would send are checked too.
"""
from __future__ import annotations

from controller import l2logic, ofmsg, vipswitch
from controller.flows import FlowDiff, ReadBack
from support.datapath import of_datapath, ofproto_parser
from support.fakeoftable import FakeOFTable


class FakeSwitch:
    def __init__(self, sw: vipswitch.VipSwitch, table: FakeOFTable | None = None):
        self.sw = sw
        self.table = table or FakeOFTable()
        if table is None:
            self.table.apply(l2logic.table_miss_flows())
        self.dp = of_datapath()
        self.now = 0.0
        self.sent: list = []          # every operation applied, in order

    # -- what the app does with a VipSwitch's operations ------------------------------------
    def apply(self, ops) -> None:
        for op in ops:
            self.sent.append(op)
            if isinstance(op, vipswitch.CountCt):   # the app runs dump-conntrack for it
                self.apply(self.sw.reply(op, self.conntrack_dump(op.zone)))
                continue
            self._encode(op)
            if isinstance(op, FlowDiff):
                self.table.apply_diff(op, self.now)
            elif isinstance(op, vipswitch.EnsureGroups):
                for g in op.groups:
                    self.table.add_group(g)
            elif isinstance(op, vipswitch.DeleteCookie):
                self.table.delete_cookie(op.cookie, op.mask)
            elif isinstance(op, vipswitch.REQUESTS):
                self.apply(self.sw.reply(op, self._answer(op)))

    def event(self, method, *args) -> None:
        """One VipSwitch event, its operations applied at once (the app's lock)."""
        self.apply(method(*args))

    def conntrack_dump(self, zone: int) -> list:
        """The fake tracker's entries as controller/ctcount.py parses a real dump."""
        from controller.ctcount import CtEntry
        return [CtEntry(zone, c.orig_dst, c.mark,
                        "ESTABLISHED" if c.replied else "SYN_SENT")
                for c in self.table.conntrack(zone)]

    def _answer(self, op):
        if isinstance(op, vipswitch.CountConns):
            return len(self.table.flows(table=op.table, cookie=op.cookie))
        flows = self.table.flows(cookie=op.cookie, mask=op.mask)
        if isinstance(op, vipswitch.ReadBytes):
            flows = [f for f in flows if f.table == op.table]
        return [(self.read_back(f), self.table.packets(f)) for f in flows]

    def read_back(self, flow) -> ReadBack:
        """A flow as the switch reports it; through the framework's parser when it is here."""
        if self.dp is None:
            return ReadBack(flow.table, flow.priority, flow.match, flow.cookie)
        m = ofmsg.flow_mod(self.dp, flow)
        m.serialize()
        parsed = ofproto_parser(self.dp.ofproto.__name__.split(".")[0]).msg(self.dp, m.version, m.msg_type, m.msg_len, m.xid, m.buf)
        return ofmsg.read_back(parsed)

    def _encode(self, op) -> None:
        """The app's messages for `op` (vipswitch.messages), serialised as the framework would."""
        if self.dp is None or isinstance(op, vipswitch.Resend):
            return   # a Resend sends the packet-in's own bytes: there is none here
        for m in vipswitch.messages(self.dp, op):
            m.serialize()
