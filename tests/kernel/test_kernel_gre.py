"""Kernel GRE decapsulation on a backend (what `gre_decap: kernel` stands for): an address
answered only through the ip_gre device that the live network's GRE setup gave the backend
(`lbg-gre`). The client encapsulates with its own GRE device (standing in for the LB
switch's GRE port); the backend's device decapsulates; the reply goes back directly
(DSR-style), not through the tunnel."""
from __future__ import annotations

import json

import pytest

from topologies.gre import KERNEL_DEV

pytestmark = [pytest.mark.integration, pytest.mark.kernel]

TEST_VIP = "192.0.2.10"  # TEST-NET-1: nothing else in the scenario uses it


def cmd(node, command: str) -> str:
    out = node.cmd(f"{command} 2>&1; echo rc=$?").strip()
    assert out.endswith("rc=0"), f"{node.name}: {command}: {out}"
    return out


def rx_packets(node, dev: str) -> int:
    out = node.cmd(f"ip -s -j link show {dev}")
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def test_vip_answered_through_kernel_gre_device_on_backend(two_dc):
    plan = two_dc.plan
    client_plan = plan.hosts_in(plan.scenario.regions[0].name, "client")[0]
    backend_plan = plan.hosts_in(plan.scenario.dcs[0].name, "backend")[0]
    client, backend = two_dc.node(client_plan.name), two_dc.node(backend_plan.name)
    c_ip, b_ip = str(client_plan.ip), str(backend_plan.ip)
    # Backend: the GRE device LiveNet made (gre_decap kernel) accepts tunnels from anyone to
    # its address; the test's VIP goes on lo.
    assert "UP" in cmd(backend, f"ip link show {KERNEL_DEV}"), "no kernel GRE device"
    cmd(backend, f"ip addr add {TEST_VIP}/32 dev lo")
    # Client: reaches the VIP only through its GRE tunnel to the backend.
    cmd(client, f"ip link add lbkgre0 type gre local {c_ip} remote {b_ip} ttl 64")
    cmd(client, "ip link set lbkgre0 up")
    cmd(client, f"ip route add {TEST_VIP}/32 dev lbkgre0")
    cmd(client, "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0")
    try:
        before = rx_packets(backend, KERNEL_DEV)
        res = two_dc.ping(client_plan.name, TEST_VIP, count=5, interval=0.2, timeout_s=3)
        after = rx_packets(backend, KERNEL_DEV)
        assert res.received >= 4, f"VIP over GRE: {res}"
        assert after - before >= res.received, \
            f"requests did not arrive through the backend's GRE device ({before} -> {after})"
    finally:
        client.cmd("ip link del lbkgre0")
        backend.cmd(f"ip addr del {TEST_VIP}/32 dev lo")
