"""One import adapter so the same app code runs under Ryu or os-ken.

Ryu 4.34 is the last Ryu release; os-ken is OpenStack's maintained fork with the same API
under the name `os_ken`. Apps import `app_manager`, `ofp_event`, ... from here, never from
`ryu` directly, so a machine where Ryu will not install can run os-ken instead.
LBLAB_CONTROLLER=ryu|os-ken forces a choice.
"""
from __future__ import annotations

import importlib
import os

from controller.shim import apply_eventlet_shim

_WANTED = os.environ.get("LBLAB_CONTROLLER", "")


def _pick() -> str:
    apply_eventlet_shim()
    order = ["ryu", "os_ken"] if _WANTED != "os-ken" else ["os_ken", "ryu"]
    for name in order:
        try:
            importlib.import_module(f"{name}.base.app_manager")
            return name
        except ImportError:
            continue
    raise ImportError("neither ryu nor os_ken is importable (run `sudo make setup`)")


FRAMEWORK = _pick()


def _mod(path: str):
    return importlib.import_module(f"{FRAMEWORK}.{path}")


app_manager = _mod("base.app_manager")
ofp_event = _mod("controller.ofp_event")
handler = _mod("controller.handler")
ofproto_v1_3 = _mod("ofproto.ofproto_v1_3")
packet = _mod("lib.packet.packet")
ethernet = _mod("lib.packet.ethernet")
ether_types = _mod("lib.packet.ether_types")
hub = _mod("lib.hub")

set_ev_cls = handler.set_ev_cls
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER


def framework_name() -> str:
    """'ryu' or 'os-ken', as doctor and metadata spell it."""
    return "os-ken" if FRAMEWORK == "os_ken" else "ryu"
