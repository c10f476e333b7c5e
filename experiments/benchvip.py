"""`make bench`: the metrics measured through a VIP (experiments/bench.py runs them): goodput,
requests and new connections per second with conntrack and with learned flows, established
connections held, pool-change time, and GRE goodput with its decapsulator's cost."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from experiments.bench import RPS_CONNECTIONS, RPS_SECONDS, Row, detect_mechanisms
from topologies.state import new_run_id


def _iperf_to(live, client: str, servers: list[str], target: str, seconds: float = 4,
              port: int = 80) -> float:
    """iperf3 TCP goodput from `client` to `target:port` with a server on every host in
    `servers`."""
    import json
    import subprocess
    procs = [live.spawn(h, ["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL) for h in servers]
    try:
        for h in servers:
            live.wait_until(h, f"ss -Hltn 'sport = :{port}' | grep -q LISTEN", f"iperf3 on {h}")
        out = live.node(client).cmd(f"iperf3 -J -c {target} -p {port} -t {seconds:g}")
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3 to {target}: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)


CONCURRENT_CONNECTIONS = 50_000
CONCURRENT_OPEN_RATE = 1000      # new connections per second while filling the table
LAB_ZONE = 1                     # bench-vip's one LB switch's conntrack zone
CONCURRENT_RETRIES = 2           # a connect that failed (SYNs lost for 10 s) is tried again


def bench_vip() -> list[Row]:
    """Through the VIP vs direct to a backend over the same path, in one network of the
    bench-vip scenario (one client 1 ms from a DC of 8 backends): iperf3 goodput (nat, dsr),
    HTTP requests per second with a new connection each (wrk; nat and dsr with conntrack),
    the new-connection rate with conntrack and with learned flows, the reactive mode, the
    established connections the VIP holds, and how long a pool change takes to reach the
    switch. Rates and goodput use a pool of one backend, the one the direct path reaches."""
    from experiments.vipclient import for_live
    from experiments.workloads import control
    from lab import wrk
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("bench-vip"))
    mech = detect_mechanisms()
    run_id = new_run_id("bench-vip")
    client = plan.by_role("client")[0].name
    hosts = plan.by_role("backend")
    backends = [h.name for h in hosts]
    direct_ip = str(hosts[0].ip)
    others = [str(h.ip) for h in hosts[1:]]
    vip = str(plan.scenario.dcs[0].vip)
    dc = plan.scenario.dcs[0].name
    rows = []
    with LiveNet(plan, mech, run_id, Path("/tmp") / f"lblab-{run_id}",
                 log=lambda *_: 0) as live:
        api = for_live(live)
        # iperf3 opens a control and a data connection, which a hash may send to different
        # backends: for goodput and rates the pool is the one backend the direct path reaches.
        for ip in others:
            api.remove_backend(dc, ip)
        good = {}
        for mode in ("nat", "dsr"):
            api.change(dc, mode=mode)
            good[mode + "_vip"] = _iperf_to(live, client, backends[:1], vip)
            good[mode + "_direct"] = _iperf_to(live, client, backends[:1], direct_ip,
                                               port=5201)
        note = (f"iperf3 TCP 4 s, same client and path; datapath {mech.ovs_datapath}, "
                f"link {mech.link_delay}; checksum offload off on backends: "
                f"{bool(live.tx_offload_off)}")
        for mode in ("nat", "dsr"):
            rows.append(Row(f"vip_goodput_{mode}_vs_direct", good[mode + "_vip"], "Mbit/s",
                            baseline=good[mode + "_direct"], target=0.9, note=note))
        control.start_http_backends(live, plan)
        # the direct baseline: the same server on a port no VIP flow looks at, so its
        # packets take the switch's L2 path alone
        control.start_http_backends(live, plan, port=8080)
        node = live.node(client)
        # One host opening thousands of connections per second reuses its source ports
        # within seconds; OVS's userspace tracker still holds the old entry then, gives the
        # new connection's reply tuple another port, and the backend's TIME_WAIT socket for
        # that port (another client port's timestamps) answers the SYN with an ACK: the
        # client resets and retries (6-15% of connections with the default port range).
        # With every port the reuse comes later than that; direct and VIP alike.
        node.cmd("sysctl -qw net.ipv4.ip_local_port_range='1024 65535'")

        errors: dict[str, list] = {}

        def rate(url: str, seconds: float = RPS_SECONDS, connections: int = RPS_CONNECTIONS,
                 label: str = ""):
            res = wrk.run(node, url, seconds=seconds, connections=connections)
            errors.setdefault(label or url, []).append((res.errors, res.requests))
            if res.error_share > 0.2:
                raise RuntimeError(f"wrk to {url} ({label}): {res.errors} errors of "
                                   f"{res.requests}: {res.detail}")
            return res.rps * (1 - res.error_share)   # answered requests only

        def err_note(label: str) -> str:
            e, n = (sum(x) for x in zip(*errors.get(label, [(0, 0)])))
            return f"; wrk errors {e} of {n}"
        dp = dict(hash_impl="dp_hash", reactive=False)
        variants = {"nat-ct": dict(mode="nat", conntrack_impl="ct", **dp),
                    "dsr-ct": dict(mode="dsr", conntrack_impl="ct", **dp),
                    "nat-learn": dict(mode="nat", conntrack_impl="learn", **dp),
                    "nat-ct-multipath": dict(mode="nat", conntrack_impl="ct",
                                             hash_impl="multipath", reactive=False)}
        rps: dict[str, list] = {k: [] for k in ("direct", *variants)}
        conn: dict[str, list] = {k: [] for k in ("direct", "nat-ct", "nat-learn",
                                                  "nat-ct-multipath")}
        for _ in range(2):  # interleaved, so drift in machine load hits all alike
            rps["direct"].append(rate(f"http://{direct_ip}:8080/search?size=1024",
                                      label="rps direct"))
            conn["direct"].append(rate(f"http://{direct_ip}:8080/health", label="conn direct"))
            for name, settings in variants.items():
                api.change(dc, **settings)
                rps[name].append(rate(f"http://{vip}/search?size=1024", label=f"rps {name}"))
                if name in conn:
                    conn[name].append(rate(f"http://{vip}/health", label=f"conn {name}"))
        api.change(dc, mode="nat", conntrack_impl="learn", reactive=True)
        reactive = rate(f"http://{vip}/health", seconds=3, connections=8, label="reactive")
        api.change(dc, mode="nat", conntrack_impl="ct", **dp)
        med = {k: statistics.median(v) for k, v in rps.items()}
        cmed = {k: statistics.median(v) for k, v in conn.items()}
        wnote = (f"wrk -t2 -c{RPS_CONNECTIONS} {RPS_SECONDS} s, a new connection per request, "
                 "client ports 1024-65535, "
                 f"median of 2, nginx backend ({mech.backend_server}); baseline the same "
                 "backend directly (port 8080) over the same path")
        for mode in ("nat", "dsr"):
            rows.append(Row(f"vip_rps_{mode}_vs_direct", med[f"{mode}-ct"], "req/s",
                            baseline=med["direct"], target=0.9,
                            note=f"/search?size=1024, conntrack ct; {wnote}"
                                 f"{err_note(f'rps {mode}-ct')}"))
        rows.append(Row("vip_rps_nat_learn_vs_direct", med["nat-learn"], "req/s",
                        baseline=med["direct"],
                        note=f"conntrack learn; {wnote}{err_note('rps nat-learn')}"))
        rows.append(Row("vip_conn_rate_vs_direct", cmed["nat-ct"], "conn/s",
                        baseline=cmed["direct"], target=0.9,
                        note=f"GET /health, nat, conntrack ct (no flow-table change per "
                             f"connection), hash_impl dp_hash; {wnote}"
                             f"{err_note('conn nat-ct')}"))
        rows.append(Row("vip_conn_rate_multipath_vs_direct", cmed["nat-ct-multipath"],
                        "conn/s", baseline=cmed["direct"],
                        note="same, hash_impl multipath: the hash in OVS's slow path, an "
                             "upcall and an exact megaflow per new connection (the rows "
                             f"above: dp_hash){err_note('conn nat-ct-multipath')}"))
        rows.append(Row("vip_conn_rate_learn_vs_direct", cmed["nat-learn"], "conn/s",
                        baseline=cmed["direct"],
                        note="same, conntrack learn (a learned flow per connection)"
                             f"{err_note('conn nat-learn')}"))
        rows.append(Row("vip_conn_rate_reactive_vs_direct", reactive, "conn/s",
                        baseline=cmed["direct"], note="wrk -c8 3 s; first packet of each "
                        "connection to the controller, exact flows installed"
                        f"{err_note('reactive')}"))
        number = api.last_change(dc)["number"]
        for ip in others:
            api.add_backend(dc, ip)
        api.wait_change(dc, number)   # the pool is in the switch before anything is timed
        rows.append(_pool_change(live, api, plan, dc, others[-1]))
        rows.append(_concurrent(live, api, client, vip, dc))
    return rows


def _ovs_rss_mb() -> float:
    pid = Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _flush_zone(zone: int) -> None:
    """Empty one conntrack zone of the userspace datapath (the lab's own, never another)."""
    from topologies.system import run
    run(["ovs-appctl", "dpctl/flush-conntrack", f"zone={zone}"])


def _ct_states(zone: int) -> tuple[int, dict[str, int], str]:
    """Open entries of a zone, every entry's TCP state counted, and the datapath's own
    connection count (ct-get-nconns, all zones): the dump and the tracker side by side."""
    from collections import Counter
    from controller import ctcount
    from topologies.system import run
    entries = ctcount.parse(run(ctcount.command(zone)).stdout)
    states = dict(Counter(e.state for e in entries))
    nconns = run(["ovs-appctl", "dpctl/ct-get-nconns"], check=False).stdout.strip()
    return sum(e.open for e in entries), states, nconns or "?"


def _concurrent(live, api, client: str, vip: str, dc: str) -> Row:
    """CONCURRENT_CONNECTIONS established through the VIP (nat, ct; the whole pool) at once,
    each proven by one answered request, held idle; the conntrack entries counted in the
    switch and ovs-vswitchd's memory before and during. Several client processes when one
    process may not hold that many sockets (the machine's hard file limit)."""
    import json
    import math
    import resource
    import subprocess
    import sys
    zone = LAB_ZONE
    node = live.node(client)
    node.cmd("sysctl -qw net.ipv4.ip_local_port_range='1024 65535'")
    # From a clean tracker: the rate runs before this one leave tens of thousands of
    # TIME_WAIT entries of the same client, whose ports the new connections would collide
    # with (ct(nat) remaps them; 1,200-1,300 of 50,000 then went missing from the count).
    # Nothing is open at this point.
    _flush_zone(zone)
    per_proc = max(1000, min(CONCURRENT_CONNECTIONS,
                             resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 2000))
    n_procs = math.ceil(CONCURRENT_CONNECTIONS / per_proc)
    rss0 = _ovs_rss_mb()
    procs = []
    try:
        for i in range(n_procs):
            count = min(per_proc, CONCURRENT_CONNECTIONS - i * per_proc)
            procs.append(live.spawn(client, [
                sys.executable, "-m", "experiments.workloads.holdconns", "--host", vip,
                "--count", str(count), "--rate", str(CONCURRENT_OPEN_RATE / n_procs),
                "--retries", str(CONCURRENT_RETRIES)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        firsts = [json.loads(p.stdout.readline() or "{}") for p in procs]
        tracked, states, nconns = _ct_states(zone)
        rss1 = _ovs_rss_mb()
        for p in procs:
            p.stdin.close()
        lasts = [json.loads(p.stdout.readline() or "{}") for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.wait(timeout=30)
    opened = sum(f.get("opened", 0) for f in firsts)
    failed = sum(f.get("failed", 0) for f in firsts)
    retried = sum(f.get("retried", 0) for f in firsts)
    why: dict[str, int] = {}
    for f in firsts:
        for k, v in f.get("errors_by", {}).items():
            why[k] = why.get(k, 0) + v
    held = sum(x.get("still_open", 0) for x in lasts)
    seconds = max((f.get("seconds", 0) for f in firsts), default=0)
    return Row("vip_concurrent_connections", min(held, tracked), "conn", target=50000,
               note=f"{opened} of {CONCURRENT_CONNECTIONS} opened through the VIP in "
                    f"{seconds} s by {n_procs} client processes ({retried} attempts retried, "
                    f"up to {CONCURRENT_RETRIES} per connection; errors {why}; failed "
                    f"{failed}), {held} "
                    f"still open when released, {tracked} open conntrack entries in the "
                    f"zone (states {states}; ct-get-nconns {nconns}); "
                    f"ovs-vswitchd RSS {rss0:.0f} -> {rss1:.0f} MB "
                    f"({1024 * (rss1 - rss0) / max(tracked, 1):.2f} KB per connection)")


def _pool_change(live, api, plan, dc: str, ip: str, repeats: int = 3) -> Row:
    """A REST change of one backend of 8 (remove, then add back) until the switch's barrier
    reply confirms its flow mods, each checked to have left every bucket flow with the new
    assignment; median over `repeats` of each."""
    from topologies import ovsstats
    from controller.vipmodel import TableLayout
    bridge = plan.switch(dc).name
    times = []
    # From a quiet switch: the rate runs before this one leave tens of thousands of
    # TIME_WAIT entries that ovs-vswitchd's conntrack sweeps meanwhile
    _flush_zone(LAB_ZONE)

    def installed_matches(vip_state) -> bool:
        table = ovsstats.bucket_table(bridge, TableLayout().bucket, 1)
        size = vip_state["bucket_entries"]
        if len(table) != size:
            return False
        slack = 1 + size - vip_state["table_size"]   # dp_hash: entries beyond M repeat slots
        counts: dict[int, int] = {}
        for backend in table.values():
            counts[backend] = counts.get(backend, 0) + 1
        import ipaddress
        want = {int(ipaddress.IPv4Address(b["ip"])): round(b["table_share"] * size)
                for b in vip_state["backends"] if b["table_share"]}
        return all(abs(counts.get(k, 0) - v) <= slack for k, v in want.items()) and \
            set(counts) == set(want)
    for _ in range(repeats):
        for change in (lambda: api.remove_backend(dc, ip), lambda: api.add_backend(dc, ip)):
            number = api.last_change(dc)["number"]
            t0 = time.monotonic()
            change()
            # the switch's barrier reply, which follows the change's flow mods: OpenFlow's
            # own "installed" (polled over REST every 5 ms; dumping 8,192 flows instead
            # takes ~0.1 s and competes with the flow mods in ovs-vswitchd)
            api.wait_change(dc, number)
            times.append((time.monotonic() - t0) * 1000)
            if not installed_matches(api.vip(dc)):   # and the flows are the new table's
                raise RuntimeError("the switch confirmed the pool change but its bucket "
                                   "flows are not the new assignment")
    size = api.vip(dc)["bucket_entries"]
    return Row("vip_pool_change_ms", statistics.median(times), "ms", target=200,
               note=f"REST remove/add of one backend of 8 until the switch's barrier reply "
                    f"after its flow mods (then all {size} bucket flows checked in a dump); "
                    f"median of {len(times)}, max {max(times):.0f} ms")


def bench_vip_gre() -> list[Row]:
    """GRE goodput through the VIP vs direct to the same backend, in one network of the
    bench-vip scenario (the hosts of bench_vip). A separate network from bench_vip's because
    GRE turns checksum offload off on the client (lab/gre.py), which would change
    the nat/dsr numbers. Both paths with the MSS clamped at the client edge (the 1500-byte
    underlay cannot carry full-size packets plus 24 bytes: gre-mtu). The note names the
    decapsulation mechanism and the decapsulator's CPU."""
    from experiments.vipclient import for_live
    from topologies import scenario
    from lab.net import LiveNet
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("bench-vip"))
    mech = detect_mechanisms()
    metric = "vip_goodput_gre_vs_direct"
    if mech.gre_decap == "none":
        return [Row(metric, None, "Mbit/s", target=0.7,
                    note="not measured: no GRE decapsulation (gre_decap none)")]
    run_id = new_run_id("bench-gre")
    client = plan.by_role("client")[0].name
    backends = [h.name for h in plan.by_role("backend")]
    direct_ip = str(plan.by_role("backend")[0].ip)
    vip = str(plan.scenario.dcs[0].vip)
    dc = plan.scenario.dcs[0].name
    with LiveNet(plan, mech, run_id, Path("/tmp") / f"lblab-{run_id}", log=lambda *_: 0,
                 gre=True) as live:
        api = for_live(live)
        for other in plan.by_role("backend")[1:]:   # iperf3: one backend
            api.remove_backend(dc, str(other.ip))
        api.change(dc, mode="gre")
        live.gre.levers.clamp_mss()
        vips, directs, cpu, wall = [], [], 0.0, 0.0
        for _ in range(2):  # interleaved, so drift in machine load hits both alike
            before = live.gre.decap_stats()
            t0 = time.monotonic()
            vips.append(_iperf_to(live, client, backends[:1], vip))
            wall += time.monotonic() - t0
            after = live.gre.decap_stats()
            cpu += sum(a.get("cpu_s", 0) - before.get(k, {}).get("cpu_s", 0)
                       for k, a in after.items())
            directs.append(_iperf_to(live, client, backends[:1], direct_ip, port=5201))
        rx = live.gre.port_counters(dc).get("rx_packets", 0)
        decap_impl = live.gre.decap_impl
    note = (f"gre_decap {mech.gre_decap}; iperf3 TCP 4 s, median of 2, same client, backend "
            f"and path; MSS clamped to 1436 and client tx offload off for both; outer packets "
            f"delivered by the LB switch to its own LAN's backend (no router hairpin); GRE "
            f"port rx packets {rx}")
    if mech.gre_decap == "userspace":
        share = cpu / wall if wall else 0.0
        gbps = statistics.mean(vips) / 1000
        note += (f"; decapsulator {decap_impl}: {100 * share:.0f}% of a core incl. iperf3 "
                 f"setup, {share / gbps:.2f} cores per Gbit/s" if gbps else "")
    return [Row(metric, statistics.median(vips), "Mbit/s",
                baseline=statistics.median(directs), target=0.7, note=note)]
