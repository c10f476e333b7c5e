""""Upload" client: one large POST (20-100 MB), ok only when the server acknowledges every byte.

The chapter's video upload: it may be slowish but must succeed in one go. A transfer that
stalls (e.g. an MTU black hole) is cut off by `--timeout` and counted as failed, never waited
on forever. Prints one JSON line: ok, error, bytes_sent, acked_bytes, seconds, goodput_mbps,
backend, dc.

Run: python -m experiments.workloads.upload --host VIP --size-mb 20 --timeout 60
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from experiments.workloads.httpclient import error_name, read_reply

CHUNK = b"\0" * 65536


def upload(host: str, port: int, size: int, timeout_s: float, stall_s: float) -> dict:
    start = time.monotonic()
    deadline = start + timeout_s
    result = {"ok": False, "error": "", "bytes_sent": 0, "acked_bytes": 0, "backend": "",
              "dc": ""}
    try:
        with socket.create_connection((host, port), timeout=min(stall_s, timeout_s)) as sock:
            sock.sendall(f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n"
                         f"Connection: close\r\n\r\n".encode())
            sent = 0
            while sent < size:
                if time.monotonic() > deadline:
                    raise socket.timeout("upload deadline")
                sock.settimeout(min(stall_s, max(0.001, deadline - time.monotonic())))
                n = sock.send(CHUNK[:min(len(CHUNK), size - sent)])
                sent += n
                result["bytes_sent"] = sent
            status, headers, _ = read_reply(sock, deadline)
            result.update(backend=headers.get("x-backend", ""), dc=headers.get("x-dc", ""))
            # The server acknowledges only a complete body with 200.
            result["acked_bytes"] = size if status == 200 else 0
            result["ok"] = status == 200
            if not result["ok"]:
                result["error"] = f"http {status}"
    except Exception as exc:  # every failure is a measured outcome, not a crash
        result["error"] = error_name(exc)
    seconds = time.monotonic() - start
    result["seconds"] = round(seconds, 3)
    result["goodput_mbps"] = round(result["acked_bytes"] * 8 / seconds / 1e6, 3) \
        if result["ok"] else 0.0
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--size-mb", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="whole upload, seconds")
    parser.add_argument("--stall", type=float, default=10.0,
                        help="give up when no progress for this many seconds")
    args = parser.parse_args(argv)
    print(json.dumps(upload(args.host, args.port, int(args.size_mb * 1e6), args.timeout,
                            args.stall)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
