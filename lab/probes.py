"""RTT and throughput probes run inside Mininet hosts.

Pings of many pairs run concurrently (one `ping` process each) so a matrix of N pairs takes
the time of one; results are parsed by topologies.pingparse.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

from topologies.pingparse import PingResult, parse_ping


@dataclass(frozen=True)
class PingJob:
    src: str           # Mininet host name
    dst_ip: str
    label: dict        # carried into the result (dst name, site, ...)


def ping_many(net, jobs: list[PingJob], count: int, interval_s: float,
              timeout_s: float = 2.0) -> list[tuple[PingJob, PingResult]]:
    procs = []
    for job in jobs:
        cmd = ["ping", "-n", "-c", str(count), "-i", f"{interval_s:g}", "-W", f"{timeout_s:g}",
               job.dst_ip]
        procs.append((job, net.spawn(job.src, cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)))
    results = []
    limit = count * interval_s + timeout_s + 10
    for job, proc in procs:
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        results.append((job, parse_ping(out.decode(errors="replace"), count)))
    return results


def rtt_many(net, jobs: list[PingJob], count: int, interval_s: float,
             timeout_s: float = 2.0) -> list[tuple[PingJob, PingResult]]:
    """Like ping_many, with microsecond resolution: ICMP echo on a raw socket timestamped by
    the kernel (topologies.relay.rttprobe), because ping prints 3 significant digits (a
    150 ms RTT reads "150"), too coarse to check an emulated link to a fraction of a ms."""
    import sys
    procs = []
    # All probes begin together once every one has started (Python start-up of a dozen
    # processes takes a second of CPU on 2 cores and would inflate the first ones' RTTs).
    start_at = time.time() + 0.5 + 0.1 * len(jobs)
    for job in jobs:
        cmd = [sys.executable, "-m", "topologies.relay.rttprobe", job.dst_ip, "--count",
               str(count), "--interval", f"{interval_s:g}", "--timeout", f"{timeout_s:g}",
               "--start-at", f"{start_at:.3f}"]
        procs.append((job, net.spawn(job.src, cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)))
    results = []
    for job, proc in procs:
        try:
            out, err = proc.communicate(timeout=max(0.0, start_at - time.time()) +
                                        count * interval_s + timeout_s + 20)
            data = json.loads(out)
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.communicate()
            data = {"sent": count, "rtts_ms": []}
        rtts = [r for r in data.get("rtts_ms", []) if r is not None]
        results.append((job, PingResult(sent=data.get("sent", count), received=len(rtts),
                                        rtts_ms=rtts)))
    return results


def iperf3_goodput_mbps(client, server, server_ip: str, seconds: float = 3.0,
                        extra: str = "", port: int = 5201) -> float:
    """TCP goodput client->server in Mbit/s (receiver side), one iperf3 run. `client` and
    `server` are Mininet nodes; the server is ready once its port accepts connections."""
    srv = server.popen(["iperf3", "-s", "-1", "-p", str(port), "-B", server_ip],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while server.cmd(f"ss -Hltn 'sport = :{port}'").strip() == "":
            if time.monotonic() > deadline or srv.poll() is not None:
                raise RuntimeError("iperf3 server did not start listening")
            time.sleep(0.02)
        out = client.cmd(f"iperf3 -J -c {server_ip} -p {port} -t {seconds:g} {extra}")
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
