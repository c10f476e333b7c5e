"""RTT and throughput probes run inside Mininet hosts.

Pings of many pairs run concurrently (one `ping` process each) so a matrix of N pairs takes
the time of one; results are parsed by topologies.pingparse.
"""
from __future__ import annotations

import json
import subprocess
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
        procs.append((job, net.node(job.src).popen(cmd, stdout=subprocess.PIPE,
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


def iperf3_goodput_mbps(client, server, server_ip: str, seconds: float = 3.0,
                        extra: str = "") -> float:
    """TCP goodput client->server in Mbit/s (receiver side), one iperf3 run."""
    srv = server.popen(["iperf3", "-s", "-1", "-B", server_ip], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    try:
        out = ""
        for _ in range(50):  # the server needs a moment to listen: retry the connect
            out = client.cmd(f"iperf3 -J -c {server_ip} -t {seconds:g} {extra}")
            if '"error"' not in out or "Connection refused" not in out:
                break
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.kill()
        srv.wait()
