"""One lblab network at a time per machine.

lblab's node and bridge names are fixed by the scenario (lbs-us1, ...), and two emulations
sharing two cores would distort each other's timing anyway; so a live network holds an
exclusive lock (/run/lblab/net.lock) for its lifetime. A second run waits, saying for whom.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager

from topologies.state import STATE_DIR
from topologies.system import LblabError

LOCK_PATH = STATE_DIR / "net.lock"


@contextmanager
def network_lock(timeout_s: float = float(os.environ.get("LBLAB_LOCK_TIMEOUT_S", 1800)),
                 log=print):
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    log(f"waiting for another lblab network (pid {holder}) to finish")
                    told = True
                if time.monotonic() > deadline:
                    raise LblabError(f"another lblab network is still running after "
                                     f"{timeout_s:g}s (lock {LOCK_PATH})") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
