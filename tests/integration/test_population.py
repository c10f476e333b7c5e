"""A population in the emulated network (two-dc with 60 users in na, 100 in eu each in a /24
of its own, 3 resolvers per region and a public resolver in eu): every user is a real source address from its host to the
backend, through its own resolver, and the authority places it by what it sees.

- every request is answered, from the user's own address (the backend's X-Client), through
  the user's resolver; the region's resolvers forward the user's /24 (ECS), so every user
  behind them gets the nearest DC;
- behind the public resolver without ECS the authority sees the resolver (in eu), so na's
  users there are sent to eu1 (the chapter's middleman); with ECS, to their nearest DC;
- no resolver is left running (the fixture checks every lblab process is gone), also when
  a population run is interrupted with Ctrl-C mid-traffic.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from experiments import dnsnet
from experiments.workloads.control import start_http_backends
from lab import dns, mechanisms, unbound
from lab.dns_config import gslb_config
from lab.net import LiveNet
from topologies import population, scenario
from topologies.plan import build_plan
from topologies.state import new_run_id

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("unbound") is None, reason="unbound not installed")]

SCENARIO = {
    "name": "two-dc-pop", "description": "two-dc with a small population per region",
    "regions": {
        "na": {"subnet": "10.1.0.0/24", "clients": 1,
               "population": {"users": 60, "user_prefix": "10.11.0.0/20", "resolvers": 3,
                              "users_per_subnet": 20, "public_share": 0.25}},
        "eu": {"subnet": "10.2.0.0/24", "clients": 1,   # 100 /24s: 100 local routes
               "population": {"users": 100, "user_prefix": "10.12.0.0/17", "resolvers": 3,
                              "users_per_subnet": 1, "public_share": 0.25}}},
    "dcs": {"us1": {"subnet": "10.101.0.0/24", "vip": "10.101.0.100", "backends": 2},
            "eu1": {"subnet": "10.102.0.0/24", "vip": "10.102.0.100", "backends": 2}},
    "dns": {"authority": "us1", "policy": "geo", "ttl_s": 2,
            "public_resolver": {"site": "eu", "ecs": False}},
    "links": [{"a": "na", "b": "us1", "delay_ms": 5}, {"a": "na", "b": "eu1", "delay_ms": 20},
              {"a": "eu", "b": "us1", "delay_ms": 20}, {"a": "eu", "b": "eu1", "delay_ms": 5}],
}


def _run(live, users, tmp_path) -> list[dict]:
    _, rows = dnsnet.run_population(live, users, 3.0, tmp_path, rate=0.5, seed=7)
    assert rows, "no requests"
    return rows


def test_users_are_real_addresses_placed_by_what_the_authority_sees(lblab_clean, tmp_path):
    scen = scenario.parse(copy.deepcopy(SCENARIO), "two-dc-pop.yaml")
    plan = build_plan(scen)
    config = gslb_config(plan)
    to_dc = dnsnet.dc_of_address(config)
    users = population.make_users(scen, seed=7)
    by_name = {u.name: u for u in users}
    pub = population.public_resolver(scen)
    with LiveNet(plan, mechanisms.detect(), new_run_id("test-pop"), tmp_path) as live:
        start_http_backends(live, plan)
        live.start_health_checks()
        auth = dns.start_authority(live, plan, config, tmp_path)
        with unbound.instances(live, plan, population.all_resolvers(scen), auth.ip, tmp_path):
            rows = _run(live, users, tmp_path)
        assert all(r["ok"] for r in rows), [r["error"] for r in rows if not r["ok"]][:5]
        seen = dnsnet.addresses_seen(rows)
        assert seen["backend_saw_user_ip"] == len(rows), "a backend saw another address"
        assert seen["users"] > 80 and seen["resolvers"] == 7
        assert seen["user_subnets"] > 50   # eu's users each in a /24 of their own
        assert live.population_blocks == {"lbc-na1": 3, "lbd-na": 1, "lbc-eu1": 100,
                                          "lbd-eu": 1}
        for r in rows:
            user = by_name[r["user"]]
            assert (r["user_ip"], r["resolver"]) == (str(user.ip), user.resolver)
            expect = (config.nearest_dc(user.region) if user.resolver != pub.name
                      else config.nearest_dc(pub.region))   # no ECS: the resolver's place
            assert to_dc[r["dst"]] == r["dc"] == expect, (r["user"], r["resolver"], r["dc"])
        public_na = [r for r in rows if r["resolver"] == pub.name and r["user"][:2] == "na"]
        assert public_na, "no na user behind the public resolver sent a request"

        # the same public resolver forwarding ECS: its na users go to their nearest DC
        with unbound.instances(live, plan, [dataclasses.replace(pub, ecs=True)], auth.ip,
                               tmp_path / "ecs"):
            rows = _run(live, [u for u in users if u.resolver == pub.name], tmp_path)
        assert all(r["ok"] for r in rows), [r["error"] for r in rows if not r["ok"]][:5]
        for r in rows:
            assert r["dc"] == config.nearest_dc(by_name[r["user"]].region), r
        assert {r["dc"] for r in rows} == {"us1", "eu1"}


def _cmdlines(pids) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return out


def test_sigint_mid_population_run_leaves_no_resolver_client_or_result(lblab_clean, tmp_path):
    from experiments.cleanup import marked_processes, wait_no_leftovers
    from conftest import LBLAB, REPO
    data = copy.deepcopy(SCENARIO)
    data["dns"]["public_resolver"]["ecs"] = True
    scen_file = tmp_path / "two-dc-pop.yaml"
    scen_file.write_text(yaml.safe_dump(data))
    out_dir = tmp_path / "results"
    proc = subprocess.Popen([*LBLAB, "run", "dns-rr-pop", "--scenario", str(scen_file),
                             "--set", "resolver_counts=6", "--set", "zipf_counts=",
                             "--set", "picks=first", "--set", "duration_s=120",
                             "--out", str(out_dir)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:   # until its 6 resolvers and both population clients run
            assert proc.poll() is None, proc.stdout.read()
            lines = _cmdlines(marked_processes())
            if sum("unbound -d" in c for c in lines) == 6 and \
                    sum("experiments.workloads.population" in c for c in lines) == 2:
                break
            assert time.monotonic() < deadline, "the population run did not get going"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in out, out
    left = wait_no_leftovers()
    assert not any(left.values()), left
    assert not any((out_dir / "dns-rr-pop").iterdir())   # nothing half-written published


def test_retry_next_users_survive_a_dead_dc_that_first_users_lose(lblab_clean, tmp_path):
    """Policy all, and an authority that does not probe (so it keeps answering the dead DC
    for the whole run): a user that tries the next address is answered by the other DC;
    a user that takes the first address fails whenever the dead DC came first."""
    from topologies.system import stop_processes
    scen = scenario.parse(copy.deepcopy(SCENARIO), "two-dc-pop.yaml")
    plan = build_plan(scen)
    config = gslb_config(plan, policy="all")
    dead = str(config.dc("us1").vip)
    own = {r.name: population.region_resolvers(r) for r in scen.populations}
    users = population.with_public_share(population.make_users(scen, seed=3), own, None,
                                         0.0, seed=3)
    with LiveNet(plan, mechanisms.detect(), new_run_id("test-pop"), tmp_path) as live:
        backends = start_http_backends(live, plan)
        auth = dns.start_authority(live, plan, config, tmp_path, probe=False)
        stop_processes(backends["us1"])
        with unbound.instances(live, plan, [r for v in own.values() for r in v], auth.ip,
                               tmp_path):
            _, retry = dnsnet.run_population(live, population.with_behaviour(users,
                                                                             "retry-next"),
                                             3.0, tmp_path, rate=0.5, seed=3,
                                             retry_delay_s=0.5)
            _, first = dnsnet.run_population(live, population.with_behaviour(users, "first"),
                                             3.0, tmp_path, rate=0.5, seed=3)
    assert all(r["ok"] and r["dc"] == "eu1" for r in retry), \
        [(r["answers"], r["error"]) for r in retry if not r["ok"]][:5]
    dead_first = [r for r in retry if r["answers"].split()[0] == dead]
    assert dead_first and all(r["tries"] == 2 for r in dead_first)
    assert all(r["tries"] == 1 for r in retry if r["answers"].split()[0] != dead)
    lost = [r for r in first if r["answers"].split()[0] == dead]
    assert lost and not any(r["ok"] for r in lost)
    assert all(r["ok"] for r in first if r["answers"].split()[0] != dead)


def test_closed_loop_users_wait_for_each_reply_and_their_uploads_arrive_whole(lblab_clean,
                                                                              tmp_path):
    """na's users are closed loop (think 0.3 s) and half of them upload 256 KB per request;
    eu's stay open-loop searchers: every upload is acknowledged whole and the backends'
    own byte counters hold exactly what the users sent; no closed-loop user ever has two
    requests in flight, and each sends again and again."""
    import json
    data = copy.deepcopy(SCENARIO)
    data["regions"]["na"]["population"].update(
        think_time_s=0.3, workloads={"search": 1, "upload": 1}, upload_kb=256)
    scen = scenario.parse(data, "two-dc-pop.yaml")
    plan = build_plan(scen)
    config = gslb_config(plan)
    users = population.make_users(scen, seed=5)
    with LiveNet(plan, mechanisms.detect(), new_run_id("test-pop"), tmp_path) as live:
        start_http_backends(live, plan)
        live.start_health_checks()
        auth = dns.start_authority(live, plan, config, tmp_path)
        with unbound.instances(live, plan, population.all_resolvers(scen), auth.ip, tmp_path):
            _, rows = dnsnet.run_population(live, users, 4.0, tmp_path, seed=5)
        received = sum(json.loads(live.node(b.name).cmd(
            f"curl -s -m 5 http://{b.ip}/stats"))["bytes_in"] for b in plan.by_role("backend"))
    assert rows and all(r["ok"] for r in rows), [r["error"] for r in rows if not r["ok"]][:5]
    uploads = [r for r in rows if r["workload"] == "upload"]
    assert uploads and all(r["bytes"] == 256 * 1024 and r["user"].startswith("na-")
                           for r in uploads)
    assert received == sum(r["bytes"] for r in uploads)
    assert {r["workload"] for r in rows if r["user"].startswith("eu-")} == {"search"}
    per_user: dict[str, list] = {}
    for r in rows:
        if r["user"].startswith("na-"):
            per_user.setdefault(r["user"], []).append(r)
    assert len(per_user) == 60, "a closed-loop user never sent"
    for name, mine in per_user.items():
        mine.sort(key=lambda r: r["t_s"])
        for prev, nxt in zip(mine, mine[1:]):
            assert nxt["t_s"] >= prev["t_s"] + prev["latency_ms"] / 1000 - 0.001, (name, prev,
                                                                                    nxt)
    assert sum(map(len, per_user.values())) / 60 > 3, "closed-loop users did not loop"
