"""lblab's controller under each framework (Ryu and os-ken): the real launcher and apps as a
child process, driven over its two real sockets, with no switch software and no root. A
minimal OpenFlow 1.3 switch written here (raw bytes, so neither framework checks itself)
does the handshake; the test asserts what a user of either framework relies on: both apps
program the switch, the REST API answers and refuses bad input in one JSON line, the
controller says which framework it is, and it stops at once on SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from controller import frameworks
from lab import vip_config
from lab.controller_process import free_port
from topologies import scenario
from topologies.plan import build_plan
from topologies.system import REPO_ROOT

OFP13 = 0x04
HELLO, ECHO_REQUEST, ECHO_REPLY, FEATURES_REQUEST, FEATURES_REPLY = 0, 2, 3, 5, 6
FLOW_MOD, MULTIPART_REQUEST, MULTIPART_REPLY, BARRIER_REQUEST, BARRIER_REPLY = \
    14, 18, 19, 20, 21
MP_FLOW, MP_AGGREGATE, MP_PORT_DESC = 1, 2, 13


class MiniSwitch:
    """Just enough of an OpenFlow 1.3 switch for a controller to reach MAIN state."""

    def __init__(self, port: int, dpid: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.dpid = dpid
        self.buf = b""
        self.received: list[tuple[int, bytes]] = []   # (type, body) from the controller

    def send(self, msg_type: int, xid: int, body: bytes = b"") -> None:
        self.sock.sendall(struct.pack("!BBHI", OFP13, msg_type, 8 + len(body), xid) + body)

    def recv(self) -> tuple[int, int, bytes]:
        while len(self.buf) < 8 or len(self.buf) < struct.unpack("!H", self.buf[2:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("controller closed the OpenFlow connection")
            self.buf += chunk
        _, msg_type, length, xid = struct.unpack("!BBHI", self.buf[:8])
        body, self.buf = self.buf[8:length], self.buf[length:]
        return msg_type, xid, body

    def run_until(self, done, timeout_s: float = 15) -> None:
        """Answer the controller (hello, features, port description, echo, barrier, empty
        stats) until done(self.received) or the timeout."""
        self.send(HELLO, 1)
        deadline = time.monotonic() + timeout_s
        while not done(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"controller sent {[t for t, _ in self.received]}")
            msg_type, xid, body = self.recv()
            self.received.append((msg_type, body))
            if msg_type == FEATURES_REQUEST:
                self.send(FEATURES_REPLY, xid, struct.pack("!QIBBxxII", self.dpid, 0, 254, 0,
                                                           0, 0))
            elif msg_type == MULTIPART_REQUEST:
                mp_type = struct.unpack("!H", body[:2])[0]
                reply = b"" if mp_type != MP_AGGREGATE else struct.pack("!QQIxxxx", 0, 0, 0)
                self.send(MULTIPART_REPLY, xid, struct.pack("!HHxxxx", mp_type, 0) + reply)
            elif msg_type == ECHO_REQUEST:
                self.send(ECHO_REPLY, xid, body)
            elif msg_type == BARRIER_REQUEST:
                self.send(BARRIER_REPLY, xid)

    def close(self) -> None:
        self.sock.close()


def _installed(name: str) -> str:
    fw = frameworks.FRAMEWORKS[name]
    if fw.version() is None:
        pytest.skip(f"{name} not installed")
    return name


@pytest.fixture(params=sorted(frameworks.FRAMEWORKS))
def controller(request, tmp_path):
    name = _installed(request.param)
    plan = build_plan(scenario.load("two-dc"))
    config = tmp_path / "vips.json"
    vip_config.write(vip_config.from_plan(plan), config)
    of_port, rest_port = free_port(), free_port()
    log = tmp_path / "controller.log"
    env = {**os.environ, "LBLAB_VIP_CONFIG": str(config), "PYTHONPATH": str(REPO_ROOT)}
    env.pop(frameworks.ENV, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.launch", "--framework", name,
             "--ofp-tcp-listen-port", str(of_port), "--rest-port", str(rest_port),
             "controller.l2app", "controller.vipapp"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)
    base = f"http://127.0.0.1:{rest_port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(base + "/controller", timeout=2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    yield name, proc, of_port, base, plan
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def call(base: str, method: str, path: str, data: bytes | None = None):
    req = urllib.request.Request(base + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_controller_says_which_framework_it_runs_on(controller):
    name, proc, _, base, _ = controller
    status, info = call(base, "GET", "/controller")
    assert status == 200
    assert info["framework"] == name
    assert info["version"] == frameworks.FRAMEWORKS[name].version()
    assert info["pid"] == proc.pid


def test_both_apps_program_a_switch_that_connects(controller):
    _, _, of_port, _, plan = controller
    dpid = plan.switch(plan.scenario.dcs[0].name).dpid
    switch = MiniSwitch(of_port, dpid)
    try:
        def done(received):
            types = [t for t, _ in received]
            flow_reads = [b for t, b in received if t == MULTIPART_REQUEST
                          and struct.unpack("!H", b[:2])[0] == MP_FLOW]
            return FLOW_MOD in types and flow_reads   # L2 table-miss; the VIP app's resync
        switch.run_until(done)
    finally:
        switch.close()


APP_SURVIVES = """
import os, sys, time
from controller import compat, launch
if sys.argv[1] == "harden":
    launch.harden_threads_hub(compat.hub)
event = __import__(compat.FRAMEWORK + ".controller.event", fromlist=["event"])

class Boom(event.EventBase):
    pass

class App(compat.BaseApp):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = 0

    @compat.set_ev_cls(Boom)
    def boom(self, ev):
        self.calls += 1
        raise RuntimeError("a handler's bug")

app = App()
compat.app_manager.register_app(app)
app.start()
for n in (1, 2):
    app.send_event(app.name, Boom())
    deadline = time.monotonic() + 5
    while app.calls < n and time.monotonic() < deadline:
        compat.hub.sleep(0.02)   # yields to the app's green thread under Ryu
    if app.calls < n:
        print(f"event {n} never handled", flush=True); os._exit(1)
print("both handled", flush=True)
os._exit(0)   # the app's threads (os-ken) are not daemons
"""


@pytest.mark.parametrize("name", sorted(frameworks.FRAMEWORKS))
def test_an_app_handles_events_after_a_handler_raised(name):
    """Under os-ken's threads hub an exception in one handler used to end the app's event
    loop for good (os-ken's TaskExit is Exception); the launcher hardens the hub so the
    error is logged and the next event handled, as under Ryu."""
    _installed(name)
    env = {**os.environ, frameworks.ENV: name, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", APP_SURVIVES, "harden"], env=env,
                         capture_output=True, text=True, timeout=30, cwd=REPO_ROOT)
    assert "both handled" in out.stdout, out.stdout + out.stderr[-2000:]


def test_rest_lists_vips_and_refuses_bad_input_in_one_json_line(controller):
    _, _, _, base, plan = controller
    status, vips = call(base, "GET", "/vips")
    assert status == 200
    assert sorted(v["name"] for v in vips) == sorted(dc.name for dc in plan.scenario.dcs)
    name = plan.scenario.dcs[0].name
    for method, path, data, want in [
            ("PUT", f"/vips/{name}", b"{mode:", 400),            # not JSON
            ("PUT", f"/vips/{name}", b'{"mode": "tunnel"}', 400),
            ("GET", "/vips/nope", None, 400),
            ("GET", "/nothing/here", None, 404),
            ("DELETE", "/vips", None, 405)]:
        status, payload = call(base, method, path, data)
        assert status == want, (method, path, status, payload)
        assert "\n" not in payload["error"] and payload["error"]
    assert call(base, "GET", "/vips")[1] == vips, "a refused request changed nothing"


def test_sigterm_stops_it_at_once(controller):
    _, proc, _, _, _ = controller
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
