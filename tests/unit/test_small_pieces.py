"""Pure helpers: ping parsing, MAC learning decisions, result files, parameters, overrides."""
from __future__ import annotations

import csv
import io

import pytest

from controller.l2logic import MacTables
from experiments.base import Experiment, Param
from experiments.results import RECORD_COLUMNS, RunDir, csv_text, columns_of
from experiments.runner import split_overrides
from topologies.pingparse import parse_ping
from topologies.system import InputError

PING = """PING 10.1.0.1 (10.1.0.1) 56(84) bytes of data.
64 bytes from 10.1.0.1: icmp_seq=1 ttl=64 time=6.10 ms
64 bytes from 10.1.0.1: icmp_seq=1 ttl=64 time=6.90 ms (DUP!)
64 bytes from 10.1.0.1: icmp_seq=3 ttl=64 time=6.30 ms

--- 10.1.0.1 ping statistics ---
3 packets transmitted, 2 received, +1 duplicates, 33.3333% packet loss, time 2003ms
"""


def test_ping_parse_ignores_duplicates_and_counts_loss():
    res = parse_ping(PING, 3)
    assert res.sent == 3 and res.received == 2
    assert res.rtts_ms == [6.10, 6.30]
    assert res.loss_pct == pytest.approx(33.33, abs=0.01)
    assert res.median_ms == pytest.approx(6.2)


def test_ping_parse_no_output_is_total_loss():
    res = parse_ping("", 5)
    assert res.sent == 5 and res.received == 0 and res.median_ms is None


def test_mac_learning_learns_once_and_tracks_moves():
    macs = MacTables()
    first = macs.packet_in(1, 3, "02:00:00:00:00:01")
    assert first.port == 3 and first.moved_from is None
    assert macs.packet_in(1, 3, "02:00:00:00:00:01") is None
    moved = macs.packet_in(1, 5, "02:00:00:00:00:01")
    assert moved.port == 5 and moved.moved_from == 3
    assert macs.packet_in(1, 3, "ff:ff:ff:ff:ff:ff") is None  # never learn a group address
    assert macs.packet_in(2, 3, "02:00:00:00:00:01").moved_from is None  # per switch


def test_csv_has_schema_columns_first_and_blank_for_missing():
    rows = [{"run_id": "r", "latency_ms": 1.5, "ok": True, "extra": "x"}]
    text = csv_text(rows, columns_of(rows, RECORD_COLUMNS))
    header, row = list(csv.reader(io.StringIO(text)))
    assert header[:len(RECORD_COLUMNS)] == list(RECORD_COLUMNS) and header[-1] == "extra"
    record = dict(zip(header, row))
    assert record["ok"] == "true" and record["latency_ms"] == "1.5" and record["backend"] == ""


def test_run_dir_publishes_whole_or_nothing(tmp_path):
    rd = RunDir(tmp_path, "exp", "run1")
    (rd.path("records.csv")).write_text("a\n")
    assert not (tmp_path / "exp" / "run1").exists()  # invisible until published
    final = rd.publish()
    assert (final / "records.csv").read_text() == "a\n"
    rd2 = RunDir(tmp_path, "exp", "run2")
    rd2.discard()
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["run1"]
    # a failed run leaves no results, but its logs (what explains the failure) are kept
    rd3 = RunDir(tmp_path, "exp", "run3")
    rd3.path("controller.log").write_text("boom\n")
    rd3.path("records.csv").write_text("half\n")
    kept = rd3.discard(keep_logs_in=tmp_path / "failed")
    assert (kept / "controller.log").read_text() == "boom\n"
    assert not (kept / "records.csv").exists()
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["run1"]


def test_params_quick_values_and_typed_overrides():
    exp = Experiment(name="e", summary="", claim="", run=lambda ctx: [],
                     params=(Param("pings", 20, "", quick=5), Param("ratio", 0.5, ""),
                             Param("flag", False, "")))
    assert exp.resolve_params(True, {})["pings"] == 5
    got = exp.resolve_params(False, {"pings": "7", "ratio": "0.25", "flag": "yes"})
    assert got == {"pings": 7, "ratio": 0.25, "flag": True}
    with pytest.raises(InputError, match="unknown parameter"):
        exp.resolve_params(False, {"ping": "7"})
    with pytest.raises(InputError, match="expected int"):
        exp.resolve_params(False, {"pings": "many"})


def test_set_splits_runner_keys():
    runner, params = split_overrides(["link_emulation=relay", "pings=3"])
    assert runner == {"link_emulation": "relay"} and params == {"pings": "3"}
    with pytest.raises(InputError):
        split_overrides(["novalue"])


def test_derived_seeds_are_stable_and_do_not_overlap_across_repetitions():
    """Repetition r uses --seed s+r: no stream of one repetition may replay a stream of
    another (what seed + i did), and the same --seed gives the same streams."""
    from experiments.seeds import derive
    reps = [{derive(s, "client", f"lbc-na{i}") for i in range(1, 5)} for s in (1, 2, 3)]
    assert all(len(r) == 4 for r in reps)
    assert not (reps[0] & reps[1]) and not (reps[1] & reps[2])
    assert derive(1, "client", "lbc-na1") == derive(1, "client", "lbc-na1")
    assert derive(1, "authority") != derive(2, "authority")


def test_cpu_starvation_is_sustained_low_idle_not_one_dip():
    """A second or two of low idle (workloads starting) is in every run: flagging it would
    flag every run. More than 10% of the run below 20% idle is starvation."""
    from experiments.cpu import CpuIdleSampler
    sampler = CpuIdleSampler()
    sampler.samples = [80.0] * 18 + [0.0, 5.0]          # 10%: a start-up dip
    assert not sampler.starved and sampler.min_idle_pct == 0.0
    sampler.samples = [80.0] * 17 + [0.0, 5.0, 10.0]    # 15%
    assert sampler.starved and sampler.starved_share_pct == 15.0
    assert CpuIdleSampler().starved is False            # no samples: no verdict


def test_wrk_summary_parsed_with_errors_and_non_2xx():
    from lab import wrk
    text = """Running 4s test @ http://10.0.0.2/search?size=64
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21ms  312.10us   9.00ms   80.00%
  95857 requests in 4.00s, 24.50MB read
  Socket errors: connect 3, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:  23964.37
Transfer/sec:      6.12MB
"""
    got = wrk.parse(text)
    assert (got.requests, got.seconds, got.rps, got.errors) == (95857, 4.0, 23964.37, 10)
    assert wrk.parse(text.replace("4.00s", "900.00ms")).seconds == 0.9
    with pytest.raises(ValueError, match="unable to connect"):
        wrk.parse("unable to connect to 10.0.0.2:80 Connection refused")
    assert "Connection: close" in wrk.command("http://x/") and \
        "Connection" not in wrk.command("http://x/", new_connections=False)


def test_conntrack_dump_parsed_by_vip_address_mark_and_state():
    from controller import ctcount
    text = (
        "tcp,orig=(src=10.1.0.10,dst=10.101.0.100,sport=40000,dport=80),reply=(src=10.101.0."
        "11,dst=10.1.0.10,sport=80,dport=40000),zone=1,mark=174391563,protoinfo=(state="
        "ESTABLISHED)\n"
        "tcp,orig=(src=10.1.0.10,dst=10.101.0.100,sport=40002,dport=80),reply=(src=10.101.0."
        "12,dst=10.1.0.10,sport=80,dport=40002),zone=1,mark=174391564,protoinfo=(state="
        "TIME_WAIT)\n"
        "udp,orig=(src=10.1.0.10,dst=10.1.0.53,sport=5353,dport=53),reply=(src=10.1.0.53,"
        "dst=10.1.0.10,sport=53,dport=5353),zone=1\n"
        "garbage line\n")
    a, b = ctcount.parse(text)
    assert (a.zone, a.orig_dst, a.mark, a.state, a.open) == (1, "10.101.0.100", 174391563,
                                                             "ESTABLISHED", True)
    assert b.state == "TIME_WAIT" and not b.open
    assert ctcount.command(3) == ["ovs-appctl", "dpctl/dump-conntrack", "zone=3"]


def test_search_schedule_is_fixed_in_advance_and_lateness_is_reported():
    from experiments.workloads import search
    fixed = search.schedule(100, 1.0, seed=1, poisson=False)
    assert len(fixed) == 100 and fixed[:3] == [0.0, 0.01, 0.02]
    assert search.schedule(100, 1.0, 7, True) == search.schedule(100, 1.0, 7, True)
    on_time = [{"start_lag_ms": 0.2}] * 99 + [{"start_lag_ms": 3.0}]
    assert not search.client_stats(on_time, 1.0, 100)["behind_schedule"]
    late = [{"start_lag_ms": 0.2}] * 90 + [{"start_lag_ms": 40.0}] * 10
    stats = search.client_stats(late, 1.0, 100)
    assert stats["behind_schedule"] and stats["start_lag_p99_ms"] == 40.0
    assert stats["load_generator"].startswith("lblab search (")


def test_bench_only_with_an_unknown_group_is_a_one_line_error_before_anything_runs():
    from experiments.bench import run_bench
    from topologies.system import InputError
    with pytest.raises(InputError) as exc:   # before OVS or any network is touched
        run_bench(only=["vip_concurrent"])
    assert "--only vip_concurrent: no such bench group" in str(exc.value)
    assert "vip, vip_gre" in str(exc.value) and "\n" not in str(exc.value)


def test_search_csv_has_a_column_for_everything_a_request_reports():
    # a key one_request adds must reach the CSV, or the client dies writing it
    import asyncio
    import socket
    from experiments.workloads import search
    with socket.socket() as s:   # a port nobody listens on: refused, but a full row
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    row = asyncio.run(search.one_request("127.0.0.1", port, "/search", 2.0))
    assert row["error"] == "refused"
    assert set(row) <= set(search.FIELDS)
