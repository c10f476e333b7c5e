"""A stand-in for a Ryu or os-ken datapath with the framework's OpenFlow 1.3 modules: what
controller/ofmsg.py needs to build real messages in unit tests (nothing is sent)."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

from controller import frameworks

# The frameworks' Python packages, for tests parametrised over both.
MODULES = [fw.module for fw in frameworks.FRAMEWORKS.values()]


def of_datapath(module: str | None = None):
    """The stand-in for `module` ("ryu" | "os_ken"; default: the framework LBLAB_CONTROLLER
    picks), or None where that framework is not importable."""
    module = module or frameworks.chosen().module
    try:
        if module == "ryu":
            from controller.shim import apply_eventlet_shim
            apply_eventlet_shim()
        ofproto = importlib.import_module(f"{module}.ofproto.ofproto_v1_3")
        parser = importlib.import_module(f"{module}.ofproto.ofproto_v1_3_parser")
    except ImportError:
        return None
    return SimpleNamespace(ofproto=ofproto, ofproto_parser=parser, id=1)


def ofproto_parser(module: str):
    """The framework's generic message parser (bytes -> message)."""
    return importlib.import_module(f"{module}.ofproto.ofproto_parser")
