"""BGP for the LB tier with real BIRD daemons (lab/bird.py) in plain network namespaces, no
Mininet: a router and three LB speakers on one LAN (a Linux bridge in the router's
namespace). Each speaker announces the VIP with itself as next hop; the router's BIRD
installs one multipath route over all three; when a speaker's data path fails BFD takes it
out, when its daemon dies the session does, and when it comes back so does its path.
Everything created carries the `lblbgp` prefix and is removed in a finally, by name and PID.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from contextlib import contextmanager

import pytest

from lab import ecmproute
from lab.bird import KERNEL_MAIN, Bird, Speaker, router_config, speaker_config

pytestmark = pytest.mark.integration
if shutil.which("bird") is None:
    pytestmark = [pytest.mark.integration,
                  pytest.mark.skip(reason="bird2 not installed (run `sudo make setup`)")]

REPO = Path(__file__).resolve().parents[2]
VIP = "10.250.9.100"
ROUTER_IP = "10.250.1.1"
K = 3


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def netns_popen(ns: str):
    def popen(argv, **kwargs):
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)
    return popen


@contextmanager
def bgp_lan(tmp_path, bfd: bool = True, shadow_table: int | None = None):
    tag = f"{os.getpid() % 10000}"
    router = f"lblbgp-{tag}-r"
    speakers = [f"lblbgp-{tag}-s{k}" for k in range(1, K + 1)]
    daemons: list[Bird] = []
    try:
        sh("ip", "netns", "add", router)
        sh("ip", "-n", router, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", router, "addr", "add", f"{ROUTER_IP}/24", "dev", "br0")
        sh("ip", "-n", router, "link", "set", "br0", "up")
        sh("ip", "-n", router, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
        sps = []
        for k, ns in enumerate(speakers, start=1):
            sh("ip", "netns", "add", ns)
            port = f"p{k}"
            sh("ip", "-n", router, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", router, "link", "set", port, "master", "br0", "up")
            ip = f"10.250.1.{10 + k}"
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sps.append(Speaker(f"s{k}", ip))
        daemons.append(Bird("router", router_config(ROUTER_IP, "br0", sps, [VIP], bfd=bfd,
                                                    shadow_table=shadow_table),
                            tmp_path, netns_popen(router)))
        for sp, ns in zip(sps, speakers):
            daemons.append(Bird(sp.name, speaker_config(sp, ROUTER_IP, "eth0", [VIP], bfd=bfd),
                                tmp_path, netns_popen(ns)))
        for d in daemons:
            d.start()
        yield router, speakers, daemons
    finally:
        for d in daemons:
            d.stop()
        for ns in [router, *speakers]:
            sh("ip", "netns", "del", ns, check=False)


def next_hops(router: str) -> list[str]:
    out = sh("ip", "-n", router, "-j", "route", "show", f"{VIP}/32").stdout
    routes = json.loads(out or "[]")
    if not routes:
        return []
    r = routes[0]
    hops = r.get("nexthops") or ([{"gateway": r["gateway"]}] if "gateway" in r else [])
    return sorted(h["gateway"] for h in hops)


def wait_for(predicate, timeout_s: float, what: str) -> float:
    """Seconds until predicate() holds; fails with `what` after timeout_s."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


ALL = [f"10.250.1.{10 + k}" for k in range(1, K + 1)]


def test_router_installs_one_multipath_route_over_every_speaker(tmp_path):
    with bgp_lan(tmp_path) as (router, _, daemons):
        wait_for(lambda: next_hops(router) == ALL, 30, f"ECMP route via {ALL}")
        assert sorted(daemons[0].established()) == ["sp_s1", "sp_s2", "sp_s3"]
        # nothing listens on all interfaces: BGP only on the router's LAN address
        listening = sh("ip", "netns", "exec", router, "ss", "-Hltn").stdout.splitlines()
        bgp = [line.split()[3] for line in listening if line.split()[3].endswith(":179")]
        assert bgp == [f"{ROUTER_IP}:179"], listening


def test_bfd_takes_out_a_speaker_whose_data_path_fails_and_brings_it_back(tmp_path):
    with bgp_lan(tmp_path) as (router, _, daemons):
        wait_for(lambda: next_hops(router) == ALL, 30, "ECMP route over all three")
        # the speaker's path stops forwarding (its LAN port goes down, BGP's TCP session
        # does not notice on its own before the hold time)
        sh("ip", "-n", router, "link", "set", "p2", "down")
        took = wait_for(lambda: next_hops(router) == [ALL[0], ALL[2]], 10,
                        "the failed speaker's next hop withdrawn")
        assert "sp_s2" not in daemons[0].established()
        sh("ip", "-n", router, "link", "set", "p2", "up")
        wait_for(lambda: next_hops(router) == ALL, 30, "the speaker's next hop back")
        print(f"withdrawn {took:.2f} s after the link failed")


def test_a_killed_speaker_is_withdrawn_and_no_daemon_outlives_the_lan(tmp_path):
    with bgp_lan(tmp_path) as (router, _, daemons):
        wait_for(lambda: next_hops(router) == ALL, 30, "ECMP route over all three")
        s2 = daemons[2]            # daemons: the router's, then s1, s2, s3
        assert s2.name == "s2"
        s2.proc.kill()
        s2.proc.wait(timeout=10)
        wait_for(lambda: next_hops(router) == [ALL[0], ALL[2]], 10, "killed speaker withdrawn")
        pids = [d.pid for d in daemons]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().split(") ")[-1][0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"BIRD {pid} outlived the LAN"


def buckets(router: str) -> dict[int, int]:
    out = sh("ip", "-n", router, "-j", "nexthop", "bucket", "show", "id",
             str(ecmproute.GROUP_ID)).stdout
    return {b["bucket"]["index"]: b["bucket"]["nhid"] for b in json.loads(out or "[]")}


def test_resilient_group_moves_only_the_failed_speakers_buckets(tmp_path):
    """The resilient variant: BIRD feeds a shadow table, the agent keeps one resilient group
    in place; when a speaker's path fails, the buckets of the others stay where they were."""
    with bgp_lan(tmp_path, shadow_table=100) as (router, _, daemons):
        wait_for(lambda: next_hops(router) == ALL, 30, "BIRD's ECMP route")
        daemons[0].show("disable", KERNEL_MAIN)
        wait_for(lambda: next_hops(router) == [], 10, "BIRD's main-table route gone")
        agent = netns_popen(router)([sys.executable, "-m", "lab.ecmproute", "map", "--prefix",
                                     f"{VIP}/32", "--table", "100", "--dev", "br0"],
                                    cwd=REPO, stdout=subprocess.PIPE)
        try:
            assert agent.stdout.readline().strip() == b"mapping"
            wait_for(lambda: next_hops(router) == ALL and len(buckets(router)) == 128, 10,
                     "the resilient group over all three")
            before = buckets(router)
            s2 = ecmproute.ResilientMapper.nh_id(ALL[1])
            sh("ip", "-n", router, "link", "set", "p2", "down")
            wait_for(lambda: next_hops(router) == [ALL[0], ALL[2]], 10, "s2 withdrawn")
            after = buckets(router)
            kept = [i for i, nh in before.items() if nh != s2]
            assert kept and all(after[i] == before[i] for i in kept)
            assert s2 not in after.values()
            assert "nhid" in sh("ip", "-n", router, "route", "show", f"{VIP}/32").stdout
        finally:
            agent.terminate()
            agent.wait(10)
        assert next_hops(router) == [], "the agent left its route behind"
