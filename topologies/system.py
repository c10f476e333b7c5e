"""Small helpers for running system commands with clear errors.

Every module that shells out goes through `run` so that a missing tool or a failing
command becomes an `LblabError` with the command line and its stderr, never a traceback.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence


# The checkout: where `python -m <module>` runs for processes started in hosts, and where the
# built relay and the scenarios live.
REPO_ROOT = Path(__file__).resolve().parent.parent


class LblabError(RuntimeError):
    """An error meant for the user: printed as one line, exit code 1 (2 for bad input)."""

    exit_code = 1


class InputError(LblabError):
    """Bad user input (scenario file, --set value, experiment name): exit code 2. Control
    characters the input carried into the message (a key or value of '\\n') are shown
    escaped, so the message stays one line."""

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1]
                                 for c in str(message)))


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
        env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cmd` (no shell), capture text output; raise LblabError on failure if `check`."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=env)
    except FileNotFoundError:
        raise LblabError(f"command not found: {cmd[0]} (run `sudo make setup`)") from None
    except subprocess.TimeoutExpired:
        raise LblabError(f"command timed out after {timeout:g}s: {' '.join(cmd)}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LblabError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                         f"{detail[-1] if detail else 'no output'}")
    return proc


def ok(cmd: Sequence[str], timeout: float = 20) -> bool:
    """True when `cmd` exists and exits 0."""
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=timeout).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def is_root() -> bool:
    return os.geteuid() == 0


def env_without_run_marker() -> dict:
    """The environment minus LBLAB_RUN: for daemons (OVS) that must outlive a run and must
    not be mistaken by `lblab clean` for a run's child process."""
    env = dict(os.environ)
    env.pop("LBLAB_RUN", None)
    return env


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM a child, wait, then SIGKILL: for helpers lblab started itself (by PID)."""
    stop_processes([proc], timeout_s)


def stop_processes(procs, timeout_s: float = 5.0) -> None:
    """SIGTERM every child at once, wait for them together up to `timeout_s`, SIGKILL the
    ones still running: a network's helpers stop in the time of the slowest, not the sum."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass  # unkillable (uninterruptible sleep): teardown goes on without it
