"""`lblab topo up` as a user drives it: DNS answers from every region through its resolver,
`fail dc` takes the DC out of the answers within the global view's detection budget and the
clients' answers follow within TTL plus detection, a cut WAN link drops traffic until it is
recovered, background load reports its shares, wrong arguments get one line and change
nothing, and exit leaves nothing behind (lblab_clean checks)."""
from __future__ import annotations

import os
import re
import select
import subprocess
import time

import pytest

from conftest import LBLAB, REPO
from experiments.dns_failover import DETECT_BUDGET_S

pytestmark = pytest.mark.integration

PROMPT = "mininet> "


class CliSession:
    """The Mininet CLI of `lblab topo up`, one command at a time: send a line, read what
    it printed (stdout and stderr, in order) up to the next prompt."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*LBLAB, "topo", "up", *args], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.pending = ""
        self.banner = self.read_until(PROMPT, timeout_s=300)

    def read_until(self, marker: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while marker not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None and not select.select(
                    [self.proc.stdout], [], [], 0)[0]:
                raise AssertionError(f"no {marker!r} within {timeout_s} s (exit "
                                     f"{self.proc.poll()}); got: {self.pending[-2000:]}")
            if select.select([self.proc.stdout], [], [], min(left, 1.0))[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                self.pending += chunk.decode(errors="replace")
        out, self.pending = self.pending.split(marker, 1)
        return out

    def run(self, line: str, timeout_s: float = 60) -> str:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        out = self.read_until(PROMPT, timeout_s)
        assert "Traceback" not in out, out
        return out.strip()

    def exit(self) -> str:
        self.proc.stdin.write(b"exit\n")
        self.proc.stdin.flush()
        rest, _ = self.proc.communicate(timeout=120)
        return self.pending + rest.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # lblab tears the lab down on SIGTERM
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()   # lblab_clean then reports what was left
                self.proc.wait(10)


def answer_dc(ask_output: str) -> str | None:
    """The DC named in `ask`'s first line (what the host's resolver answered); None when
    the query got no reply (a timeout under load: ask again)."""
    first = ask_output.splitlines()[0]
    m = re.search(r": \S+ \((\w+)\) TTL", first)
    assert m or "no reply" in first, ask_output
    return m.group(1) if m else None


@pytest.fixture
def lab(lblab_clean):
    session = CliSession("three-dc")
    try:
        yield session
    finally:
        session.kill()


def test_the_live_lab_fails_a_dc_and_dns_follows(lab):
    assert "DNS: www.lblab.test from the authority on" in lab.banner, lab.banner
    assert "lab commands (help NAME): vip, dns, fail, recover, ask, load" in lab.banner
    # short TTLs from the start, so the resolvers' caches follow within seconds
    assert "TTL 2 s" in lab.run("dns ttl 2")
    # the README's first query, typed as a Mininet node command
    dug = lab.run("lbc-ap1 dig +short +time=2 +tries=3 @10.3.0.53 www.lblab.test")
    assert "10.103.0.100" in dug.split(), dug
    # every region's resolver answers its clients with the nearest DC (geo policy)
    for host, dc in (("lbc-na1", "us1"), ("lbc-eu1", "eu1"), ("lbc-ap1", "ap1")):
        got = lab.run(f"ask {host}")
        if answer_dc(got) is None:
            got = lab.run(f"ask {host}")
        assert answer_dc(got) == dc, got
        assert "scope /24" in got, got   # ECS forwarded by the resolver, honoured
    ttl_left = int(re.search(r"TTL (\d+) s", got).group(1))   # lbc-ap1's cached answer

    failed = lab.run("fail dc ap1")
    m = re.search(r"marked it down ([\d.]+) s after the stop", failed)
    assert m and float(m.group(1)) <= DETECT_BUDGET_S, failed
    ap_line = next(line for line in failed.splitlines() if "a user in ap" in line)
    assert "ap1" not in ap_line.split("gets", 1)[1], failed   # out of the answers
    state = lab.run("dns")
    assert re.search(r"ap1 +10\.103\.0\.100 +DOWN", state), state
    # lbc-ap1's resolver may still hold ap1 for what its TTL had left: then another DC
    deadline = time.monotonic() + ttl_left + DETECT_BUDGET_S + 3
    while answer_dc(got := lab.run("ask lbc-ap1")) in ("ap1", None):
        assert time.monotonic() < deadline, f"lbc-ap1 still sent to ap1: {got}"
        time.sleep(0.5)
    assert answer_dc(got) in ("us1", "eu1"), got
    assert "recovered" in lab.run("recover dc ap1")

    # a cut WAN link drops what crosses it until it is recovered
    assert "cut" in lab.run("fail link ap-ap1")
    assert " 0 received" in lab.run("lbc-ap1 ping -c 2 -W 1 10.103.0.11")
    assert "restored" in lab.run("recover link ap-ap1")
    # (the first packet may wait for ARP entries the cut let expire)
    assert " 0 received" not in lab.run("lbc-ap1 ping -c 3 -W 2 10.103.0.11")

    # background load: its shares come when it ends (na's users all go to us1 under geo)
    assert "load #1" in lab.run("load lbc-na1 10 1")
    # printed while the CLI waits for input: type nothing until it came
    lab.read_until("load #1 on lbc-na1 ended: ", 30)
    line = lab.read_until("\n", 10)
    assert "answered: us1 100%" in line, line

    # wrong arguments: one line with the usage, and the lab as it was
    before = lab.run("vip ap1")
    for bad in ("vip mode ap1 bogus", "vip drain ap1 lbb-zz9", "fail dc mars", "fail",
                "recover dc us1", "load lbc-na1 x 2", "ask lbd-ap", "dns policy nope",
                "dns ttl -5", "vip mode ap1 gre"):
        out = lab.run(bad)
        assert out.startswith("***") and len(out.splitlines()) == 1, (bad, out)
    assert _pool(lab.run("vip ap1")) == _pool(before)
    assert "every backend server" in lab.run("help fail")

    out = lab.exit()
    assert lab.proc.returncode == 0, out[-2000:]
    assert "torn down" in out


def _pool(vip_output: str) -> list[tuple]:
    """(backend, admin, health, share) rows of `vip DC`: what a wrong command must not
    change (connection and byte counters move with the health checks)."""
    rows = []
    for line in vip_output.splitlines()[2:]:
        parts = line.split()
        rows.append((parts[0], parts[2], parts[3], parts[-1]))
    return rows
