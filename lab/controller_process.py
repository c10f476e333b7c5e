"""Run the controller (controller.launch, on Ryu or os-ken) as a child of an lblab run.

Readiness is checked, never slept on: the OpenFlow port must accept connections and the REST
server must answer with the framework it runs on (which must be the one asked for), then
every switch must report its controller connection up and hold the base app's table-miss
flow.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from controller import frameworks

from topologies import ovs
from topologies.system import LblabError, REPO_ROOT, run

DEFAULT_APPS = ("controller.l2app",)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ControllerProcess:
    """The controller bound to 127.0.0.1 only (OpenFlow and REST): nothing of lblab's
    listens on all interfaces. The framework is frameworks.chosen() when it is created
    (LBLAB_CONTROLLER, else the default); `info` is what the running controller reported."""

    def __init__(self, log_path: Path, apps=DEFAULT_APPS, of_port: int | None = None,
                 rest_port: int | None = None, extra_env: dict | None = None):
        self.log_path = Path(log_path)
        self.apps = list(apps)
        self.of_port = of_port or free_port()
        self.rest_port = rest_port or free_port()
        self.extra_env = extra_env or {}
        self.framework = frameworks.chosen()
        self.info: dict = {}
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_s: float = 30) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.extra_env,
               "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        cmd = [sys.executable, "-m", "controller.launch", "--framework", self.framework.name,
               "--ofp-listen-host", "127.0.0.1", "--ofp-tcp-listen-port", str(self.of_port),
               "--rest-host", "127.0.0.1", "--rest-port", str(self.rest_port), *self.apps]
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LblabError(f"controller exited with code {self.proc.returncode} at start; "
                                 f"last log line: {self._last_log_line()}")
            if self._ready():
                self.info["startup_s"] = round(time.monotonic() - t0, 3)
                return
            time.sleep(0.1)
        self.stop()
        raise LblabError(f"controller did not listen on 127.0.0.1:{self.of_port} (OpenFlow) "
                         f"and :{self.rest_port} (REST) within {timeout_s:g}s; "
                         f"see {self.log_path}")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.of_port), timeout=0.5):
                pass
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest_port}/controller",
                                        timeout=2) as resp:
                info = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        if info.get("framework") != self.framework.name:
            self.stop()
            raise LblabError(f"controller runs {info.get('framework')}, not "
                             f"{self.framework.name} as asked")
        self.info = info
        return True

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no log"

    def wait_switches(self, bridges: list[str], cookie: int, timeout_s: float = 30) -> None:
        """Until every bridge is connected and holds a flow with the app's cookie."""
        pending = list(bridges)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise LblabError(f"controller died: {self._last_log_line()}")
            connected = ovs.controllers_connected(pending)
            pending = [b for b in pending
                       if not (connected[b] and has_cookie_flow(b, cookie))]
            if pending:
                time.sleep(0.1)
        if pending:
            raise LblabError(f"switches not ready after {timeout_s:g}s (controller not "
                             f"connected or no flows): {', '.join(pending)}")

    def restart(self, kill: bool = True) -> None:
        """Kill (or stop) the controller and start it again on the same ports, as after a
        crash: switches keep their flows (fail mode secure) and reconnect."""
        if kill and self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        else:
            self.stop()
        self.start()

    def stop(self, timeout_s: float = 10) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass


def has_cookie_flow(bridge: str, cookie: int) -> bool:
    proc = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge,
                f"cookie={cookie:#x}/-1"], check=False, timeout=10)
    return proc.returncode == 0 and "actions=" in proc.stdout
