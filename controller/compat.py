"""One import adapter so the same app code runs under Ryu or os-ken.

Apps import `app_manager`, `ofp_event`, `hub`, the packet library ... from here, never from
`ryu` or `os_ken` directly. The framework is controller.frameworks.chosen() (the
LBLAB_CONTROLLER variable, else the default); if it is not installed the import fails with a
one-line reason rather than falling back to the other one.
"""
from __future__ import annotations

import importlib

from controller import frameworks
from controller.shim import apply_eventlet_shim

CHOSEN = frameworks.chosen()
FRAMEWORK = CHOSEN.module       # "ryu" | "os_ken"
if FRAMEWORK == "ryu":
    apply_eventlet_shim()
try:
    importlib.import_module(f"{FRAMEWORK}.base.app_manager")
except ImportError as exc:
    raise ImportError(f"controller framework {CHOSEN.name} is not importable ({exc}); "
                      "run `sudo make setup`") from None


def _mod(path: str):
    return importlib.import_module(f"{FRAMEWORK}.{path}")


app_manager = _mod("base.app_manager")
cfg = _mod("cfg")
ofp_event = _mod("controller.ofp_event")
handler = _mod("controller.handler")
ofproto_v1_3 = _mod("ofproto.ofproto_v1_3")
packet = _mod("lib.packet.packet")
ethernet = _mod("lib.packet.ethernet")
ether_types = _mod("lib.packet.ether_types")
ipv4 = _mod("lib.packet.ipv4")
tcp = _mod("lib.packet.tcp")
hub = _mod("lib.hub")

# The app base class: RyuApp in Ryu, OSKenApp in os-ken (same contract).
BaseApp = getattr(app_manager, "RyuApp", None) or app_manager.OSKenApp
set_ev_cls = handler.set_ev_cls
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER
