"""Both backend servers (nginx with Lua, the default; the Python one) keep the same endpoint
semantics, on loopback: the experiments read backend and DC from replies, byte counts from
/upload, ticks from /stream and counters from /stats, whichever server runs."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from lab import mechanisms, nginx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(kind: str, tmp_path, limit=None):
    """One backend server of `kind` on loopback (within `limit`), once it answers /health;
    yields its port, then stops it."""
    port = _free_port()
    if kind == "nginx":
        if not mechanisms.nginx_available():
            pytest.skip("nginx with the Lua module is not installed (make setup installs it)")
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx.render_conf("be7", "eu1", port, tmp_path, bind="127.0.0.1",
                                          limit=limit))
        argv = nginx.command(conf)
    else:
        argv = [sys.executable, "-m", "experiments.workloads.httpserver", "--bind",
                "127.0.0.1", "--port", str(port), "--backend", "be7", "--dc", "eu1",
                *(limit.argv() if limit else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{kind} server did not start: "
                            f"{proc.stderr.read().decode()[-300:]}")
            time.sleep(0.02)
    yield port
    proc.terminate()
    assert proc.wait(timeout=5) is not None


@pytest.fixture(params=["nginx", "python"])
def server(request, tmp_path):
    yield from _start(request.param, tmp_path)


def _get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _raw(port, request: bytes, shutdown=False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        if shutdown:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_search_names_backend_and_dc_and_has_the_size_asked(server):
    status, headers, body = _get(server, "/search?size=5000")
    assert status == 200 and len(body) == 5000
    assert headers["X-Backend"] == "be7" and headers["X-DC"] == "eu1"
    assert headers["X-Client"] == "127.0.0.1"   # the address the backend saw
    assert body.startswith(b"backend=be7 dc=eu1\n")
    assert _get(server, "/search?size=3")[2] == b"backend=be7 dc=eu1\n"  # never below it
    assert _get(server, "/search?size=abc")[0] == 400
    assert _get(server, "/nothing")[0] == 404


def test_upload_acknowledges_only_a_body_received_in_full(server):
    size = 3_000_000
    reply = _raw(server, b"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n" % size + b"u" * size)
    assert reply.startswith(b"HTTP/1.1 200")
    assert reply.endswith(b"backend=be7 dc=eu1\nreceived=3000000\n")
    # the client stops after 5,000 of 100,000 bytes: no acknowledgement, no 200
    cut = _raw(server, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
               + b"u" * 5000, shutdown=True)
    assert b"200" not in cut and b"received=" not in cut
    stats = json.loads(_get(server, "/stats")[2])
    assert stats["bytes_in"] == size + 5000


def test_stream_trickles_lines_then_closes(server):
    t0 = time.monotonic()
    reply = _raw(server, b"GET /stream?seconds=0.3&interval=0.1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert time.monotonic() - t0 >= 0.3
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = body.decode().splitlines()
    assert lines[0] == "backend=be7 dc=eu1"
    assert [line for line in lines[1:]] == [f"tick {i}" for i in range(1, len(lines))]
    assert len(lines) - 1 >= 3


def test_stats_counts_requests_and_connections(server):
    before = json.loads(_get(server, "/stats")[2])
    for _ in range(5):
        _get(server, "/search?size=10")
    after = json.loads(_get(server, "/stats")[2])
    assert after["requests"] - before["requests"] == 6   # 5 searches and this /stats
    assert after["connections"] - before["connections"] == 6
    assert set(after) == {"connections", "active", "requests", "bytes_in", "served", "shed",
                          "by_path"}
    assert after["served"] - before["served"] == 5 and after["shed"] == 0
    assert after["by_path"]["search"] - before["by_path"]["search"] == 5


def test_nginx_config_refuses_names_that_would_break_it(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        nginx.render_conf('be"1', "eu1", 80, tmp_path)


def test_streams_workload_says_when_its_connections_are_open(server):
    """`open N` comes once every stream is established, while they are still running, and
    the rows that follow are all there (what a test or experiment waits on before it
    changes the pool)."""
    from experiments.workloads import control
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.workloads.streams", "--host", "127.0.0.1",
         "--port", str(server), "--count", "3", "--seconds", "1", "--interval", "0.1",
         "--spread", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert control.wait_streams_open(proc, timeout_s=10) == 3
    assert proc.poll() is None, "open must come while the streams are still running"
    rows = control.finish_json_lines(proc, 20)
    assert sorted(r["index"] for r in rows) == [0, 1, 2]
    assert all(r["ok"] and r["backend"] == "be7" for r in rows), rows


def test_waiting_for_a_line_that_never_comes_is_a_clear_error():
    from experiments.workloads import control
    proc = subprocess.Popen([sys.executable, "-c", "print('opening'); print('{\"a\": 1}')"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with pytest.raises(RuntimeError, match="ended before printing 'open '"):
        control.wait_streams_open(proc, timeout_s=10)
    assert control.finish_json_lines(proc, 5) == [{"a": 1}]


def _burst(port: int, n: int, path: str = "/search?size=10") -> list[tuple[int, dict, float]]:
    """n requests at once (one connection each): (status, headers, seconds) of each."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        t0 = time.monotonic()
        status, headers, _ = _get(port, path)
        return status, headers, time.monotonic() - t0
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("kind", ["nginx", "python"])
def test_a_shedding_backend_serves_its_burst_and_refuses_the_rest_with_retry_after(
        kind, tmp_path):
    from topologies.capacity import BackendLimit
    for port in _start(kind, tmp_path, BackendLimit(rate_rps=2, burst=3, queue=0)):
        replies = _burst(port, 20)
        ok = [r for r in replies if r[0] == 200]
        shed = [r for r in replies if r[0] == 503]
        assert len(ok) + len(shed) == 20
        assert 4 <= len(ok) <= 6, [r[0] for r in replies]   # burst + 1, and what drained
        assert all(h.get("Retry-After") == "1" and h["X-Backend"] == "be7" for _, h, _ in shed)
        assert max(t for *_, t in shed) < 1.0                 # refused at once, not queued
        assert _get(port, "/health")[0] == 200                # health is never limited
        stats = json.loads(_get(port, "/stats")[2])
        assert (stats["served"], stats["shed"]) == (len(ok), len(shed))


@pytest.mark.parametrize("kind", ["nginx", "python"])
def test_a_queueing_backend_delays_requests_to_its_rate_then_refuses(kind, tmp_path):
    from topologies.capacity import BackendLimit
    for port in _start(kind, tmp_path, BackendLimit(rate_rps=10, burst=1, queue=5)):
        replies = _burst(port, 12)
        ok = sorted(t for status, _, t in replies if status == 200)
        assert 6 <= len(ok) <= 8 and len(ok) + sum(s == 503 for s, *_ in replies) == 12
        # the burst goes at once; the 5 queued leave at 10/s: the last waits ~0.5 s
        assert ok[0] < 0.3 and ok[-1] >= 0.35, ok


@pytest.mark.parametrize("kind", ["nginx", "python"])
def test_max_concurrent_refuses_what_is_beyond_it(kind, tmp_path):
    from topologies.capacity import BackendLimit
    limit = BackendLimit(rate_rps=1000, burst=100, queue=0, max_concurrent=2)
    for port in _start(kind, tmp_path, limit):
        holders = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        for h in holders:   # two uploads in progress, their bodies not yet sent
            h.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        deadline = time.monotonic() + 5    # until the server holds both (it reads them)
        while _get(port, "/search?size=10")[0] != 503:
            assert time.monotonic() < deadline, "a third request was served beside two"
        for h in holders:
            h.sendall(b"u" * 10)
            assert h.recv(4096).startswith(b"HTTP/1.1 200")
            h.close()
        assert _get(port, "/search?size=10")[0] == 200
