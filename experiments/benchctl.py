"""`make bench`: the controller frameworks side by side (os-ken as the value, Ryu as the
baseline, in one run): start-up, REST round trip, a pool change reaching the switch, and the
reactive mode's new-connection rate, where every connection's first packet goes to the
controller. The evidence behind the default (controller/frameworks.py, README)."""
from __future__ import annotations

import os
import statistics
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from controller import frameworks
from experiments.bench import Row, detect_mechanisms
from topologies.state import new_run_id

VALUE, BASELINE = "os-ken", "ryu"
STARTS = 5
REST_CALLS = 200


@contextmanager
def framework_env(name: str):
    """LBLAB_CONTROLLER=name for the controllers started inside."""
    old = os.environ.get(frameworks.ENV)
    os.environ[frameworks.ENV] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(frameworks.ENV, None)
        else:
            os.environ[frameworks.ENV] = old


def _startup_and_rest(work: Path) -> tuple[dict, dict]:
    """Median start-up (process start to OpenFlow and REST answering) over STARTS starts,
    interleaved, and median REST GET /vips round trip, per framework."""
    from lab import vip_config
    from lab.controller_process import ControllerProcess
    from topologies import scenario
    from topologies.plan import build_plan
    config = work / "vips.json"
    vip_config.write(vip_config.from_plan(build_plan(scenario.load("three-dc"))), config)
    starts: dict[str, list] = {VALUE: [], BASELINE: []}
    rest: dict[str, list] = {VALUE: [], BASELINE: []}
    for i in range(STARTS):
        for name in starts:
            with framework_env(name):
                ctl = ControllerProcess(work / f"controller-{name}.log",
                                        apps=("controller.l2app", "controller.vipapp"),
                                        extra_env={"LBLAB_VIP_CONFIG": str(config)})
            ctl.start()
            try:
                starts[name].append(ctl.info["startup_s"] * 1000)
                if i == 0:
                    url = f"http://127.0.0.1:{ctl.rest_port}/vips"
                    for _ in range(REST_CALLS):
                        t0 = time.perf_counter()
                        with urllib.request.urlopen(url, timeout=10) as resp:
                            resp.read()
                        rest[name].append((time.perf_counter() - t0) * 1000)
            finally:
                ctl.stop()
    return ({k: statistics.median(v) for k, v in starts.items()},
            {k: statistics.median(v) for k, v in rest.items()})


def _in_network(name: str) -> tuple[float, float, str]:
    """(reactive new connections/s, pool change ms, note) in the bench-vip network with the
    controller on `name`."""
    from experiments.benchvip import _pool_change
    from experiments.vipclient import for_live
    from experiments.workloads import control
    from lab import wrk
    from lab.net import LiveNet
    from topologies import scenario
    from topologies.plan import build_plan
    plan = build_plan(scenario.load("bench-vip"))
    run_id = new_run_id(f"bench-ctl-{name}")
    client = plan.by_role("client")[0].name
    dc = plan.scenario.dcs[0].name
    vip = str(plan.scenario.dcs[0].vip)
    with framework_env(name), LiveNet(plan, detect_mechanisms(), run_id,
                                      Path("/tmp") / f"lblab-{run_id}", log=lambda *_: 0) as live:
        api = for_live(live)
        control.start_http_backends(live, plan)
        pool = _pool_change(live, api, plan, dc, str(plan.by_role("backend")[-1].ip))
        api.change(dc, mode="nat", conntrack_impl="learn", reactive=True)
        rates, errors = [], 0
        for _ in range(2):
            res = wrk.run(live.node(client), f"http://{vip}/health", seconds=3, connections=8)
            rates.append(res.rps * (1 - res.error_share))
            errors += res.errors
    return statistics.median(rates), pool.value, f"wrk errors {errors}"


def bench_controllers() -> list[Row]:
    import tempfile
    for name in (VALUE, BASELINE):
        if frameworks.FRAMEWORKS[name].version() is None:
            return [Row("controller_startup_ms", None, "ms", note=f"{name} not installed")]
    versions = f"{frameworks.FRAMEWORKS[VALUE].describe()} vs " \
               f"{frameworks.FRAMEWORKS[BASELINE].describe()} (baseline)"
    with tempfile.TemporaryDirectory(prefix="lblab-bench-ctl-") as tmp:
        start, rest = _startup_and_rest(Path(tmp))
    rows = [Row("controller_startup_ms", start[VALUE], "ms", baseline=start[BASELINE],
                note=f"{versions}; process start to OpenFlow and REST answering, l2app and "
                     f"vipapp with three-dc's VIPs; median of {STARTS}, interleaved"),
            Row("controller_rest_ms", rest[VALUE], "ms", baseline=rest[BASELINE],
                note=f"GET /vips (three VIPs) on 127.0.0.1, median of {REST_CALLS}")]
    net = {name: _in_network(name) for name in (VALUE, BASELINE)}
    rows.append(Row("controller_reactive_conn_rate", net[VALUE][0], "conn/s",
                    baseline=net[BASELINE][0],
                    note=f"reactive nat through the bench-vip VIP, wrk -c8 3 s, median of 2; "
                         f"every connection's first packet to the controller and back; "
                         f"{VALUE} {net[VALUE][2]}, {BASELINE} {net[BASELINE][2]}"))
    rows.append(Row("controller_pool_change_ms", net[VALUE][1], "ms",
                    baseline=net[BASELINE][1],
                    note="vip_pool_change_ms under each framework (one of 8 backends removed "
                         "and added over REST until every bucket flow is installed)"))
    return rows
