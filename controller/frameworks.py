"""The two OpenFlow controller frameworks lblab runs on, named without importing either.

Ryu 4.34 (2020) is the last Ryu release; it runs on eventlet green threads, and on Python
3.11 only with lblab's start-up shim (controller/shim.py). os-ken is OpenStack's maintained
fork (FAUCET moved to it); from 4.0 it runs on native threads by default, no longer ships
`os_ken.cmd` (no manager script) or `os_ken.app.wsgi`, so lblab starts both with its own
launcher (controller/launch.py) and serves REST with its own server (controller/rest.py).

`LBLAB_CONTROLLER=ryu|os-ken` picks one; an unknown name, or a framework that is not
installed, is an error, never a silent substitute. Which is the default, and why, is in the
README ("The controller: Ryu or os-ken").
"""
from __future__ import annotations

import os
from dataclasses import dataclass

ENV = "LBLAB_CONTROLLER"


@dataclass(frozen=True)
class Framework:
    name: str       # as users spell it: "ryu" | "os-ken"
    module: str     # the Python package: "ryu" | "os_ken"
    dist: str       # the distribution, for its version
    hub: str        # what the app's handlers and loops run on

    def version(self) -> str | None:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version(self.dist)
        except PackageNotFoundError:
            return None

    def describe(self) -> str:
        """'os-ken 4.2.2 (threads)', as doctor and run metadata print it."""
        return f"{self.name} {self.version() or 'not installed'} ({self.hub})"


FRAMEWORKS = {
    "ryu": Framework("ryu", "ryu", "ryu", "eventlet"),
    "os-ken": Framework("os-ken", "os_ken", "os-ken", "threads"),
}
DEFAULT = "os-ken"


class FrameworkError(ValueError):
    pass


def chosen(environ=None) -> Framework:
    """The framework a controller started now would run on."""
    wanted = (os.environ if environ is None else environ).get(ENV, "").strip() or DEFAULT
    aliases = {"osken": "os-ken", "os_ken": "os-ken"}
    name = aliases.get(wanted.lower(), wanted.lower())
    if name not in FRAMEWORKS:
        raise FrameworkError(f"{ENV}={wanted!r}: unknown controller framework "
                             f"(choose {' or '.join(FRAMEWORKS)})")
    return FRAMEWORKS[name]
