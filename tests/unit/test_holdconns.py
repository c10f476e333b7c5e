"""holdconns (vip_concurrent_connections' client): a failed attempt connects again when
asked to, and says how many it retried."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _server(refuse_first: int):
    """Answers GET /health with 200 "ok\\n" on keep-alive connections, except that the
    first `refuse_first` connections are closed unanswered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held = []

    def serve():
        n = 0
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            n += 1
            if n <= refuse_first:
                conn.close()
                continue
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            held.append(conn)
    threading.Thread(target=serve, daemon=True).start()
    return sock, held


def _hold(refuse_first: int, retries: int) -> dict:
    """holdconns' first line: 3 connections to a server that closes the first
    `refuse_first` unanswered."""
    sock, _ = _server(refuse_first)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.workloads.holdconns", "--host", "127.0.0.1",
             "--port", str(sock.getsockname()[1]), "--count", "3", "--rate", "100",
             "--timeout", "5", "--retries", str(retries)], input="", capture_output=True,
            text=True, cwd=REPO, timeout=60)
    finally:
        sock.close()
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[0])


def test_a_failed_connection_is_tried_again_when_asked():
    first = _hold(refuse_first=2, retries=2)
    assert first["opened"] == 3 and first["failed"] == 0
    assert first["retried"] == 2 and sum(first["errors_by"].values()) == 2


def test_without_retries_a_failed_connection_counts_as_failed():
    first = _hold(refuse_first=1, retries=0)
    assert first["opened"] == 2 and first["failed"] == 1 and first["retried"] == 0


def test_negative_retries_are_refused_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "experiments.workloads.holdconns", "--host",
                           "127.0.0.1", "--retries", "-1"], capture_output=True, text=True,
                          cwd=REPO, timeout=30)
    assert proc.returncode == 2 and "--retries must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr
