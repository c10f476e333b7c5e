"""``dns_qps``: dnsperf against the lblab authority and against NSD serving the same zone.

NSD is the baseline because it is a production authoritative server in C: the ratio says how
much of a real server's throughput the Python authority keeps. Both run on 127.0.0.1 with the
same query file; NSD's response rate limiting is off (it otherwise throttles a benchmark from
one address to a few hundred qps) and it runs in the foreground from a temp dir and is
stopped by its PID.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from gslb.config import GslbConfig, example_config
from topologies.system import stop_process
from gslb.lifecycle import running_server

QUERIES = ["www.lblab.test A"] * 8 + ["lblab.test SOA", "nope.lblab.test A"]
DNSPERF_CLIENTS = 4
DNSPERF_OUTSTANDING = 200


def zone_text(config: GslbConfig) -> str:
    """The zone as NSD sees it: same names; www has every VIP (NSD has no policy)."""
    s = config.soa
    lines = [f"$ORIGIN {config.zone}.", "$TTL 3600",
             f"@ IN SOA {config.authority_ns_name} {s.rname} ( {s.serial} {s.refresh_s} "
             f"{s.retry_s} {s.expire_s} {s.minimum_s} )",
             f"@ IN NS {config.authority_ns_name}"]
    if not config.authority_ns_name.endswith("."):
        lines.append(f"{config.authority_ns_name} IN A {config.authority_address}")
    lines += [f"{config.service} {config.ttl_s} IN A {d.vip}" for d in config.dcs]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now (NSD binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError("no free port")


def _wait_udp_ready(port: int, timeout_s: float = 10.0) -> None:
    """Poll with a real SOA query until the server answers (not a fixed sleep)."""
    import dns.message
    import dns.query
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            dns.query.udp(dns.message.make_query("lblab.test", "SOA"), "127.0.0.1",
                          port=port, timeout=0.2)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no DNS answer on 127.0.0.1:{port}") from None


@contextlib.contextmanager
def running_nsd(config: GslbConfig, workdir: Path) -> Iterator[int]:
    """NSD in the foreground (-d) on 127.0.0.1:<free port>; stopped by PID on exit."""
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    port = _free_port()
    (workdir / f"{config.zone}.zone").write_text(zone_text(config))
    conf = workdir / "nsd.conf"
    conf.write_text(f"""server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{workdir}"
  pidfile: "{workdir}/nsd.pid"
  database: ""
  zonelistfile: "{workdir}/zone.list"
  xfrdfile: "{workdir}/xfrd.state"
  xfrdir: "{workdir}"
  logfile: "{workdir}/nsd.log"
  verbosity: 1
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
  minimal-responses: yes
remote-control:
  control-enable: no
zone:
  name: {config.zone}
  zonefile: "{config.zone}.zone"
""")
    proc = subprocess.Popen([nsd, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "nsd.stderr", "w"), start_new_session=True)
    try:
        _wait_udp_ready(port)
        yield port
    finally:
        stop_process(proc)


def run_dnsperf(port: int, query_file: Path, duration_s: float) -> float:
    """Queries per second completed by dnsperf against 127.0.0.1:port."""
    out = subprocess.run(
        ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(query_file),
         "-l", str(duration_s), "-c", str(DNSPERF_CLIENTS), "-q", str(DNSPERF_OUTSTANDING),
         "-T", "1"], capture_output=True, text=True, timeout=duration_s + 60, check=True)
    m = re.search(r"Queries per second:\s+([\d.]+)", out.stdout)
    if not m:
        raise RuntimeError(f"dnsperf printed no rate:\n{out.stdout}\n{out.stderr}")
    return float(m.group(1))


def dns_qps(duration_s: float = 10.0, config: GslbConfig | None = None) -> dict[str, float]:
    """{'value': lblab qps, 'baseline': NSD qps, 'ratio': value/baseline}, measured now."""
    config = config or example_config()
    with tempfile.TemporaryDirectory(prefix="lblab-dnsbench-") as tmp:
        workdir = Path(tmp)
        queries = workdir / "queries.txt"
        queries.write_text("\n".join(QUERIES) + "\n")
        with running_server(config, control_port=None) as server:
            _wait_udp_ready(server.port)
            value = run_dnsperf(server.port, queries, duration_s)
        with running_nsd(config, workdir) as port:
            baseline = run_dnsperf(port, queries, duration_s)
    return {"value": value, "baseline": baseline,
            "ratio": value / baseline if baseline else 0.0}


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(dns_qps(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)))
