"""A stand-in for a Ryu datapath with Ryu's OpenFlow 1.3 modules: what controller/ofmsg.py
needs to build real messages in unit tests (nothing is sent)."""
from __future__ import annotations

from types import SimpleNamespace


def ryu_datapath():
    """The stand-in, or None where Ryu is not importable."""
    try:
        from controller.shim import apply_eventlet_shim
        apply_eventlet_shim()
        from ryu.ofproto import ofproto_v1_3, ofproto_v1_3_parser
    except ImportError:
        return None
    return SimpleNamespace(ofproto=ofproto_v1_3, ofproto_parser=ofproto_v1_3_parser, id=1)
