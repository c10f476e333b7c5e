"""Workloads across the emulated WAN: every reply names the backend and DC that served it,
and an upload succeeds only when the server acknowledged every byte."""
from __future__ import annotations

import pytest

from experiments.workloads import control
from lab import mechanisms
from topologies import scenario
from lab.net import LiveNet
from topologies.plan import build_plan
from topologies.state import new_run_id

pytestmark = pytest.mark.integration


# Port 80 is the VIPs' service port: in NAT mode the LB rewrites every reply from a
# backend's port 80 to the outside (as a NAT load balancer does), so direct access is tested
# on another port.
PORT = 8080


def test_http_from_every_region_to_every_dc_and_upload(lblab_clean, tmp_path):
    plan = build_plan(scenario.load("two-dc"))
    with LiveNet(plan, mechanisms.detect(), new_run_id("test"), tmp_path) as live:
        control.start_http_backends(live, plan, port=PORT)
        for client in plan.by_role("client"):
            for backend in plan.by_role("backend"):
                reply = control.http_get(live, client.name,
                                         f"http://{backend.ip}:{PORT}/search?size=3000")
                assert reply == {"status": 200, "bytes": 3000, "backend": backend.name,
                                 "dc": backend.site}
        client, backend = plan.by_role("client")[0], plan.by_role("backend")[-1]
        rows = control.run_search(live, client.name, str(backend.ip), rate=40, duration=1.5,
                                  seed=3, port=PORT)
        assert len(rows) == 60 and all(r["ok"] for r in rows), rows[:3]
        assert {r["backend"] for r in rows} == {backend.name}
        result = control.run_upload(live, client.name, str(backend.ip), size_mb=20,
                                    timeout_s=60, port=PORT)
        assert result["ok"] and result["acked_bytes"] == 20_000_000, result
        # No server at that address: the upload fails with an error, within its timeout.
        failed = control.run_upload(live, client.name, "10.101.0.99", size_mb=1,
                                    timeout_s=5, port=PORT)
        assert not failed["ok"] and failed["error"]
