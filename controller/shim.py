"""Start-up shim for Ryu 4.34 on current eventlet (no editing of site-packages).

Ryu's ryu.app.wsgi (imported by app_manager) does `from eventlet.wsgi import ALREADY_HANDLED`,
a name current eventlet releases no longer define; without it ryu-manager dies with an
ImportError on Python 3.11+. Defining it before Ryu is imported is enough.
"""
from __future__ import annotations


def apply_eventlet_shim() -> None:
    try:
        import eventlet.wsgi
    except ImportError:
        return
    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = object()
