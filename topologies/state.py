"""Run state files: what a live lblab network created, so a crash can be cleaned up.

Each live network writes /run/lblab/runs/<run-id>.json (owner PID, bridges, interfaces,
helper PIDs) before it creates anything and updates it as it goes; teardown removes it.
`lblab clean` reads these files, plus lblab's name prefixes, OVS external_ids and the
LBLAB_RUN environment marker of processes, to remove only what lblab itself made.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

STATE_DIR = Path(os.environ.get("LBLAB_STATE_DIR", "/run/lblab"))
RUNS_DIR = STATE_DIR / "runs"
RUN_ENV = "LBLAB_RUN"


def new_run_id(label: str = "") -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{label + '-' if label else ''}{secrets.token_hex(2)}"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see either the old or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunState:
    def __init__(self, run_id: str):
        self.run_id = run_id
        self.path = RUNS_DIR / f"{run_id}.json"
        self.data = {"run_id": run_id, "owner_pid": os.getpid(), "bridges": [],
                     "interfaces": [], "pids": []}

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=1))

    def add(self, key: str, *values) -> None:
        for value in values:
            if value not in self.data[key]:
                self.data[key].append(value)
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def load_all() -> list[dict]:
    out = []
    for path in sorted(RUNS_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        data["_path"] = str(path)
        out.append(data)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
