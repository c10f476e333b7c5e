"""Start ryu-manager (or osken-manager) with lblab's start-up shim.

Why a shim: Ryu 4.34's `ryu.app.wsgi` imports `eventlet.wsgi.ALREADY_HANDLED`, which current
eventlet releases no longer define, so a stock `ryu-manager` dies with an ImportError on
Python 3.11. Providing the name before Ryu imports it is enough; nothing in site-packages is
edited. Usage: python -m controller.launch [ryu-manager args...]
"""
from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from controller.shim import apply_eventlet_shim

    apply_eventlet_shim()
    # Import only the manager here: it monkey-patches with eventlet before importing apps.
    wanted = os.environ.get("LBLAB_CONTROLLER", "")
    try:
        if wanted == "os-ken":
            raise ImportError
        from ryu.cmd import manager
        name = "ryu"
    except ImportError:
        from os_ken.cmd import manager
        name = "osken"
    sys.argv = [f"{name}-manager", *(argv if argv is not None else sys.argv[1:])]
    manager.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
