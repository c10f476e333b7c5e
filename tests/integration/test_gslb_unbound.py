"""A real unbound (subnetcache) between clients and the GSLB authority, all on loopback.

Shows the chapter's point end to end: with ECS forwarding the resolver's clients get their
own nearest DC, and unbound caches each answer per SCOPE prefix; without it the authority
sees only the resolver (127.0.0.1, in no region) and gives the fallback answer.
"""
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import pytest

from gslb.bench import _free_port
from gslb.config import example_config
from gslb.lifecycle import running_server
from lab.unbound import unbound_config
from topologies.system import stop_process

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("unbound") is None, reason="unbound not installed")]
HOST = "127.0.0.1"
EAST, CENTRAL, WEST = "10.100.1.1", "10.100.2.1", "10.100.3.1"


@contextlib.contextmanager
def running_unbound(tmp: Path, authority_port: int, ecs: bool) -> Iterator[int]:
    port = _free_port()
    conf = tmp / f"unbound-{port}.conf"
    conf.write_text(unbound_config(ip=HOST, name=f"test-{port}", work_dir=tmp,
                                   authority_ip=HOST, allow=[], ecs=ecs, port=port,
                                   authority_port=authority_port))
    proc = subprocess.Popen(["unbound", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # ready when it answers a query for our zone
            try:
                dns.query.udp(dns.message.make_query("lblab.test", "SOA"), HOST, port=port,
                              timeout=0.3)
                break
            except Exception:
                assert proc.poll() is None, (tmp / f"unbound-{port}.log").read_text()
                assert time.monotonic() < deadline, "unbound did not answer in 10 s"
        yield port
    finally:
        stop_process(proc)


def resolve(port: int, subnet: str | None, name: str = "www.lblab.test",
            ttl: list | None = None) -> list[str]:
    opts = [dns.edns.ECSOption(subnet, 24)] if subnet else None
    q = dns.message.make_query(name, "A", use_edns=0 if opts else False, options=opts)
    r = dns.query.udp(q, HOST, port=port, timeout=3)
    if ttl is not None:
        ttl.extend(rrset.ttl for rrset in r.answer)
    return sorted(rd.address for rrset in r.answer for rd in rrset)


def test_unbound_with_ecs_gives_each_client_its_nearest_dc(tmp_path: Path) -> None:
    with running_server(example_config(policy="geo", ttl_s=30), control_port=None) as auth, \
            running_unbound(tmp_path, auth.port, ecs=True) as resolver:
        assert resolve(resolver, "10.1.2.0") == [EAST]
        assert resolve(resolver, "10.3.2.0") == [WEST]
        assert resolve(resolver, "10.1.9.0") == [EAST]  # same /16 scope: cached answer fits
        assert resolve(resolver, "10.2.0.0") == [CENTRAL]


def test_unbound_without_ecs_hides_the_client(tmp_path: Path) -> None:
    with running_server(example_config(policy="geo", ttl_s=30), control_port=None) as auth, \
            running_unbound(tmp_path, auth.port, ecs=False) as resolver:
        # the authority sees the resolver's 127.0.0.1: no region, fallback to every DC
        assert resolve(resolver, "10.3.2.0") == sorted([EAST, CENTRAL, WEST])


def test_search_and_upload_names_lead_one_client_to_different_dcs(tmp_path: Path) -> None:
    """Through a real unbound: with east busy with searches, an east client's search goes
    to east (nearest, capacity to spare) and its upload to central (more spare capacity for
    uploads within 60 ms), each cached for its own TTL; www stays geo."""
    import json
    import urllib.request
    from gslb.config import ServiceInfo
    cfg = example_config(policy="geo", ttl_s=30, services=(
        ServiceInfo("search", "capacity", 10, capacity_share=0.6),
        ServiceInfo("upload", "spare", 60, capacity_share=0.4, max_distance_ms=60)))
    with running_server(cfg, seed=1) as auth, \
            running_unbound(tmp_path, auth.port, ecs=True) as resolver:
        host, port = auth.control
        for dc, body in (("dc-east", {"load": 500, "load_by_service": {"search": 400,
                                                                        "upload": 100}}),
                         ("dc-central", {"load": 100, "load_by_service": {"search": 90,
                                                                           "upload": 10}})):
            req = urllib.request.Request(f"http://{host}:{port}/dc/{dc}", method="POST",
                                         data=json.dumps(body).encode())
            assert urllib.request.urlopen(req, timeout=2).status == 200
        search_ttl, upload_ttl = [], []
        assert resolve(resolver, "10.1.2.0", "search.lblab.test", search_ttl) == [EAST]
        assert resolve(resolver, "10.1.2.0", "upload.lblab.test", upload_ttl) == [CENTRAL]
        assert resolve(resolver, "10.1.2.0") == [EAST]
        assert 0 < search_ttl[0] <= 10 and 10 < upload_ttl[0] <= 60
