"""Start workloads inside a live network, with readiness checks (never sleeps)."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from topologies.plan import SERVICE_PORT


def backend_argv(server: str, host, port: int, work_dir: Path, limit=None) -> list[str]:
    """The command that runs one backend's HTTP server (nginx: its config is written under
    `work_dir`, the run's own directory), within `limit` (topologies.capacity.BackendLimit)
    when given."""
    if server == "python":
        return [sys.executable, "-m", "experiments.workloads.httpserver",
                "--port", str(port), "--backend", host.name, "--dc", host.site,
                *(limit.argv() if limit else [])]
    from lab import nginx
    conf_dir = Path(work_dir) / "nginx" / f"{host.name}-{port}"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "nginx.conf"
    conf.write_text(nginx.render_conf(host.name, host.site, port, conf_dir, limit=limit))
    return nginx.command(conf)


def backend_server_process(net, backend: str):
    """The server process lblab started for one backend host (either server kind)."""
    for proc in net.procs:
        args = proc.args if isinstance(proc.args, list) else [proc.args]
        if ("--backend" in args and args[args.index("--backend") + 1] == backend) or \
                any(f"/nginx/{backend}-" in str(a) for a in args):
            return proc
    raise LookupError(f"no HTTP server was started for {backend}")


def start_http_backends(net, plan, port: int = SERVICE_PORT, dcs=None,
                        server: str | None = None, hosts=None) -> dict[str, list]:
    """One backend HTTP server per backend host (of the DCs named in `dcs` and the hosts
    named in `hosts`, else all), each naming itself and its DC; returns DC name -> the
    servers' processes, once every one answers /health. `server`: nginx or python (default:
    the run's mechanism, `--set backend_server=...`). Each server keeps its DC's capacity
    limit (the scenario's `overload`, topologies/capacity.py)."""
    from topologies.capacity import backend_limit
    server = server or getattr(getattr(net, "mech", None), "backend_server", "python")
    backends = [h for h in plan.by_role("backend")
                if (dcs is None or h.site in dcs) and (hosts is None or h.name in hosts)]
    out: dict[str, list] = {}
    for host in backends:
        out.setdefault(host.site, []).append(net.spawn(
            host.name, backend_argv(server, host, port, net.work_dir,
                                    backend_limit(plan.scenario.dc(host.site))),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for host in backends:
        net.wait_until(host.name, f"curl -sf -m 1 http://127.0.0.1:{port}/health",
                       f"{server} HTTP server on {host.name}")
    return out


def http_get(net, client: str, url: str, timeout_s: float = 5) -> dict:
    """One GET from inside a host with curl: status, headers of interest, body size."""
    out = net.node(client).cmd(
        f"curl -s -m {timeout_s:g} -D - -o /dev/null -w 'LBLAB %{{http_code}} "
        f"%{{size_download}}\\n' '{url}'")
    status, size, headers = 0, 0, {}
    for line in out.splitlines():
        if line.startswith("LBLAB "):
            _, code, size_text = line.split()
            status, size = int(code), int(size_text)
        elif ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return {"status": status, "bytes": size, "backend": headers.get("x-backend", ""),
            "dc": headers.get("x-dc", "")}


def run_search(net, client: str, host: str, rate: float, duration: float, seed: int,
               port: int = SERVICE_PORT, size: int = 1024, timeout_s: float = 3.0) -> list[dict]:
    """Run the search workload in `client` against `host`; rows as dicts (strings parsed)."""
    return finish_search(start_search(net, client, host, rate, duration, seed, port, size,
                                      timeout_s))


def start_search(net, client: str, host: str, rate: float, duration: float, seed: int,
                 port: int = SERVICE_PORT, size: int = 1024, timeout_s: float = 3.0,
                 nice: int = 0):
    """Start the search workload in the background; `finish_search` collects its rows.
    `nice`: run it at that niceness (below the switches and daemons of the emulation)."""
    with tempfile.NamedTemporaryFile(prefix="lblab-search-", suffix=".csv",
                                     delete=False) as tmp:
        out = Path(tmp.name)
    stats_path = out.with_suffix(".json")
    proc = net.spawn(client, [*_niced(nice), sys.executable, "-m",
                              "experiments.workloads.search",
                              "--host", host, "--port", str(port), "--rate", str(rate),
                              "--duration", str(duration), "--seed", str(seed),
                              "--size", str(size), "--timeout", str(timeout_s),
                              "--out", str(out), "--stats-out", str(stats_path)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.lblab_search = (net, client, out, stats_path, duration + timeout_s + 30)
    return proc


def finish_search(proc) -> list[dict]:
    """The rows of a search started with `start_search` (strings parsed); its summary goes
    to the network's load generators and `start_wall` of it onto every row."""
    import csv
    net, client, out, stats_path, timeout_s = proc.lblab_search
    try:
        _, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"search client failed: {err.decode(errors='replace')[-300:]}")
        with open(out) as fh:
            rows = list(csv.DictReader(fh))
        stats = json.loads(stats_path.read_text())
        _keep_client_stats(net, client, stats)
    finally:
        out.unlink(missing_ok=True)
        stats_path.unlink(missing_ok=True)
    for row in rows:
        row["ok"] = row["ok"] == "True"
        row["latency_ms"] = float(row["latency_ms"])
        row["start_lag_ms"] = float(row["start_lag_ms"])
        row["t_s"] = float(row["t_s"])
        row["bytes"] = int(row["bytes"] or 0)
        row["sport"] = int(row.get("sport") or 0)
        row["start_wall"] = stats.get("start_wall")
    return rows


def run_upload(net, client: str, host: str, size_mb: float, timeout_s: float,
               port: int = SERVICE_PORT) -> dict:
    proc = net.spawn(client, [sys.executable, "-m", "experiments.workloads.upload",
                              "--host", host, "--port", str(port), "--size-mb", str(size_mb),
                              "--timeout", str(timeout_s)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=timeout_s + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"upload client failed: {err.decode(errors='replace')[-300:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


def run_json_lines(net, client: str, module: str, args: list[str], timeout_s: float) -> list:
    """Run a workload module in `client` and parse its JSON output lines."""
    proc = net.spawn(client, [sys.executable, "-m", f"experiments.workloads.{module}", *args],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"{module} in {client} did not finish within {timeout_s:g}s")
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed: {err.decode(errors='replace')[-300:]}")
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


def _niced(nice: int) -> list[str]:
    return ["nice", "-n", str(nice)] if nice else []


def start_json_lines(net, client: str, module: str, args: list[str], nice: int = 0):
    """Start a workload in the background; finish with `finish_json_lines`."""
    proc = net.spawn(client, [*_niced(nice), sys.executable, "-m",
                              f"experiments.workloads.{module}", *args],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.lblab_origin = (net, client)
    return proc


def wait_line(proc, prefix: str, timeout_s: float) -> str:
    """Block until the workload prints a line starting with `prefix` and return it; what
    it printed besides is kept for `finish_json_lines`. Raises with the workload's stderr
    if it exits first, or if the line does not come within `timeout_s`."""
    fd = proc.stdout.fileno()
    buf = getattr(proc, "lblab_unread", b"")       # read from the pipe, not yet scanned
    kept = getattr(proc, "lblab_pending", b"")     # scanned lines, for finish_json_lines
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text.startswith(prefix):
                    return text
                kept += line + b"\n"
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"workload did not print {prefix!r} within {timeout_s} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                err = proc.stderr.read().decode(errors="replace")[-300:] \
                    if proc.returncode is not None else ""
                raise RuntimeError(f"workload ended before printing {prefix!r}: {err}")
            buf += chunk
    finally:
        proc.lblab_unread, proc.lblab_pending = buf, kept


def wait_streams_open(proc, timeout_s: float = 15) -> int:
    """Wait until a `streams` workload has every connection established (or failed);
    returns how many were established."""
    return int(wait_line(proc, "open ", timeout_s).split()[1])


def finish_json_lines(proc, timeout_s: float) -> list:
    """The workload's JSON lines; a load generator's own summary line ({"client_stats"})
    goes to the network's record of load generators (run metadata), not to the rows."""
    out, err = proc.communicate(timeout=timeout_s)
    out = getattr(proc, "lblab_pending", b"") + getattr(proc, "lblab_unread", b"") + out
    if proc.returncode != 0:
        raise RuntimeError(f"workload failed: {err.decode(errors='replace')[-300:]}")
    rows = []
    for line in out.decode().splitlines():
        if not line.startswith("{"):
            continue
        row = json.loads(line)
        if "client_stats" in row and len(row) == 1:
            net, client = getattr(proc, "lblab_origin", (None, ""))
            _keep_client_stats(net, client, row["client_stats"])
        else:
            rows.append(row)
    return rows


def _keep_client_stats(net, client: str, stats: dict) -> None:
    kept = getattr(net, "client_stats", None)
    if kept is not None and stats:
        kept.append({"host": client, **stats})
