"""A VIP switch's whole life, driven through controller.vipswitch against a fake switch that
also holds the L2 app's flows (tests/support/vipswitch_harness.py): connect and resync,
health flaps, REST drain/remove/add, back-to-back changes, a reconnect. What a user of the
balancer cares about: learned connections keep their backend, no stale bucket survives,
the switch ends up with exactly the desired flows."""
from __future__ import annotations

import pytest

from controller import vipflows as vf
from controller import viprest
from controller.flows import FlowDiff
from controller.hashing import synthetic_keys
from controller.l2logic import BASE_COOKIE
from controller.vipconfig import SwitchConfig
from controller.vipswitch import (CountConns, DeleteCookie, EnsureGroups, ReadBytes,
                                  ReadVipFlows, Resend, VipSwitch)
from support.fakeoftable import CONTROLLER
from support.vipcase import (BY_PORT, KEYS, SWITCH, VIP_IP, backend_of, backends,
                             client_packet, send, vip)
from support.vipswitch_harness import FakeSwitch


def config(**vip_kw) -> SwitchConfig:
    hosts = {b.ip: {"name": b.name, "mac": b.mac, "port": b.switch_port} for b in backends()}
    return SwitchConfig(dpid=0x1B1A0003, dc="us1", lb=SWITCH, vips={"web": vip(**vip_kw)},
                        hosts=hosts)


def computed(table) -> set:
    return {(f.identity, f.cookie) for f in table.flows(cookie=vf.COOKIE_VIP,
                                                        mask=vf.COOKIE_PREFIX_MASK)}


def assert_in_sync(fake: FakeSwitch) -> None:
    """The switch holds exactly the desired computed flows: nothing missing, nothing stale."""
    want = {(f.identity, f.cookie) for f in fake.sw.desired()}
    assert computed(fake.table) == want
    bucket_backends = {f.actions[0].value for f in fake.table.flows(table=SWITCH.tables.bucket)
                       if f.actions}
    up = {vf.ipv4_int(b.ip) for b in fake.sw.effective_vips()[0].backends if b.state == "up"}
    assert bucket_backends <= up, "a bucket still names a backend that takes no new connections"


def health(seq: int, down=()) -> dict:
    return {"seq": seq, "backends": {b.ip: ("down" if b.name in down else "up")
                                     for b in backends()}}


def ip_of(name: str) -> str:
    return next(b.ip for b in backends() if b.name == name)


def test_a_whole_life_keeps_connections_and_leaves_no_stale_bucket():
    fake = FakeSwitch(VipSwitch(config(algorithm="maglev", conntrack=True)))
    l2 = fake.table.flows(cookie=BASE_COOKIE)

    # Connect: the VIP's select group, then read the switch's VIP flows (none yet), install
    # the desired ones.
    fake.event(fake.sw.connected)
    assert [type(op) for op in fake.sent[:2]] == [EnsureGroups, ReadVipFlows]
    assert_in_sync(fake)
    conns = {k: backend_of(send(fake.table, k)) for k in KEYS[:200]}   # learned entries
    assert set(conns.values()) == {f"b{i}" for i in range(8)}

    def survivors_kept(gone=()):
        """Connections to surviving backends keep them; those of a removed backend are
        gone, and a packet with the same 5-tuple starts a new connection elsewhere."""
        for key, was in list(conns.items()):
            now = backend_of(send(fake.table, key))
            if was in gone:
                assert now is not None and now not in gone, (key, was, now)
                conns[key] = now
            else:
                assert now == was, (key, was, now)

    # Health flap: b3 down (no new connections, its learned ones stay), then back up.
    fake.event(fake.sw.health_report, health(1, down=("b3",)))
    assert_in_sync(fake)
    fresh = synthetic_keys(300, VIP_IP, seed=11)
    assert "b3" not in {backend_of(send(fake.table, k)) for k in fresh}
    survivors_kept()
    assert fake.sw.health_report(health(1, down=("b3",))) == []   # same report: nothing
    fake.event(fake.sw.health_report, health(2))
    assert_in_sync(fake)

    # REST: drain b2, then remove b5 (its connection entries are deleted too).
    fake.event(fake.sw.update, "web", lambda c, v: viprest.set_admin(v, "b2", "drain"))
    assert "b2" not in {backend_of(send(fake.table, k)) for k in synthetic_keys(300, VIP_IP,
                                                                              seed=12)}
    survivors_kept()
    before = len(fake.sent)
    fake.event(fake.sw.update, "web", lambda c, v: viprest.remove_backend(v, ip_of("b5")))
    assert DeleteCookie(vf.conn_cookie(1, ip_of("b5")), vf.COOKIE_ALL) in fake.sent[before:]
    assert_in_sync(fake)
    survivors_kept(gone=("b5",))
    assert not fake.table.flows(cookie=vf.conn_cookie(1, ip_of("b5")))

    # Two back-to-back changes, each computed before either is sent (the app sends them in
    # order under its lock): add b5 back and undrain b2.
    first = fake.sw.update("web", lambda c, v: viprest.add_backend(c, v, {"ip": ip_of("b5")}))
    second = fake.sw.update("web", lambda c, v: viprest.set_admin(v, "b2", "up"))
    fake.apply(first)
    fake.apply(second)
    assert_in_sync(fake)
    survivors_kept()

    # Reconnect (a controller restart, or the switch's connection dropping): the switch
    # kept every flow; meanwhile b1 was removed over REST, which could not be sent.
    fake.sw.disconnected()
    assert fake.sw.update("web", lambda c, v: viprest.remove_backend(v, ip_of("b1"))) == []
    before = len(fake.sent)
    fake.event(fake.sw.connected)
    resync = [op for op in fake.sent[before:] if isinstance(op, FlowDiff)]
    assert resync and resync[0].delete, "b1's flows read back from the switch must go"
    assert_in_sync(fake)
    # ... and its learned entries with them: a reused 5-tuple must not follow an entry
    # that leads nowhere for a whole idle timeout.
    assert not fake.table.flows(cookie=vf.conn_cookie(1, ip_of("b1")))
    survivors_kept(gone=("b1",))
    assert fake.table.flows(cookie=BASE_COOKIE) == l2, "the L2 app's flows were touched"


def test_reconnect_with_nothing_changed_sends_nothing_but_the_read():
    fake = FakeSwitch(VipSwitch(config()))
    fake.event(fake.sw.connected)
    for k in KEYS[:20]:
        send(fake.table, k)
    fake.sw.disconnected()
    before = len(fake.sent)
    fake.event(fake.sw.connected)
    # the groups again (create-or-modify: idempotent, nothing points elsewhere meanwhile)
    assert [type(op) for op in fake.sent[before:]] == [EnsureGroups, ReadVipFlows]
    assert_in_sync(fake)


def test_nothing_is_computed_before_the_switch_is_read():
    sw = VipSwitch(config())
    assert sw.health_report(health(1, down=("b0",))) == []
    assert sw.poll() == []
    ops = sw.connected()
    assert [type(op) for op in ops] == [EnsureGroups, ReadVipFlows]
    assert sw.update("web", lambda c, v: viprest.set_admin(v, "b1", "drain")) == []


def test_poll_counts_connections_and_leastload_follows_them():
    fake = FakeSwitch(VipSwitch(config(algorithm="leastload", conntrack=True)))
    fake.event(fake.sw.connected)
    ops = fake.sw.poll()
    assert {op.backend for op in ops if isinstance(op, CountConns)} == {f"b{i}" for i in range(8)}
    assert any(isinstance(op, ReadBytes) for op in ops)
    # Load b0..b6 with connections; the next poll gives every new bucket to b7.
    for k in synthetic_keys(2000, VIP_IP, seed=3):
        out = send(fake.table, k)
        if out is not None and BY_PORT[out.port].name == "b7":
            fake.table.delete_cookie(vf.conn_cookie(1, BY_PORT[out.port].ip))
    fake.apply(fake.sw.poll())       # counts arrive
    fake.apply(fake.sw.poll())       # table rebuilt from them
    assert fake.sw.loads()["web"]["b7"] == 0
    assert {backend_of(send(fake.table, k)) for k in synthetic_keys(50, VIP_IP, seed=4)} \
        == {"b7"}
    assert fake.sw.describe("web")["backends"][7]["active_connections"] == 0


def test_reactive_packet_in_installs_the_connection_and_resends():
    fake = FakeSwitch(VipSwitch(config(reactive=True)))
    fake.event(fake.sw.connected)
    (out,) = fake.table.lookup(client_packet(KEYS[0]))
    assert out.port == CONTROLLER
    select = next(h for h in fake.table.trace(client_packet(KEYS[0])).hits
                  if h.table == SWITCH.tables.select)
    ops = fake.sw.packet_in(select.cookie, KEYS[0])
    assert isinstance(ops[0], FlowDiff) and ops[0].add and isinstance(ops[1], Resend)
    fake.apply(ops)
    assert send(fake.table, KEYS[0]).port in BY_PORT
    assert fake.sw.packet_in(BASE_COOKIE, KEYS[0]) == []       # the L2 app's packet-in
    assert fake.sw.packet_in(select.cookie, None) == []        # not TCP/IPv4


def test_a_bad_change_is_refused_and_changes_nothing():
    fake = FakeSwitch(VipSwitch(config()))
    fake.event(fake.sw.connected)
    before = computed(fake.table)
    with pytest.raises(viprest.BadRequest, match="not a host on web.s LB switch"):
        fake.sw.update("web", lambda c, v: viprest.add_backend(c, v, {"ip": "10.102.0.11"}))
    with pytest.raises(viprest.BadRequest, match="unknown mode"):
        fake.sw.update("web", lambda c, v: viprest.change_vip(c, v, {"mode": "tunnel"}))
    with pytest.raises(viprest.BadRequest, match="unknown hash_impl 'crc'.*dp_hash, multipath"):
        fake.sw.update("web", lambda c, v: viprest.change_vip(c, v, {"hash_impl": "crc"}))
    assert fake.sw.vips["web"] == vip() and computed(fake.table) == before


def test_switching_the_hash_keeps_connections_and_sends_the_group_first():
    """multipath -> dp_hash over REST: the group goes out before the flows pointing at it;
    tracked connections keep their backend (the new hash only places new ones)."""
    fake = FakeSwitch(VipSwitch(config(algorithm="maglev", conntrack=True,
                                       hash_impl="multipath")))
    fake.event(fake.sw.connected)
    assert not fake.table.groups
    conns = {k: backend_of(send(fake.table, k)) for k in KEYS[:100]}
    ops = fake.sw.update("web", lambda c, v: viprest.change_vip(c, v, {"hash_impl": "dp_hash"}))
    assert [type(op) for op in ops][:2] == [EnsureGroups, FlowDiff]
    fake.apply(ops)
    assert {k: backend_of(send(fake.table, k)) for k in conns} == conns
    assert fake.sw.describe("web")["hash_impl"] == "dp_hash"
    assert fake.sw.describe("web")["bucket_entries"] == 8192
    assert_in_sync(fake)


def test_entries_of_a_removed_backend_go_after_its_buckets():
    fake = FakeSwitch(VipSwitch(config()))
    fake.event(fake.sw.connected)
    ops = fake.sw.update("web", lambda c, v: viprest.remove_backend(v, ip_of("b5")))
    kinds = [type(op) for op in ops]
    # deleted first, they could be learnt again from a bucket still naming b5
    assert kinds == [FlowDiff, DeleteCookie]


def test_a_vip_renumbered_across_a_restart_keeps_its_connections():
    before = FakeSwitch(VipSwitch(config(index=1)))
    before.event(before.sw.connected)
    conns = {k: backend_of(send(before.table, k)) for k in KEYS[:100]}
    after = FakeSwitch(VipSwitch(config(index=2)), table=before.table)
    after.event(after.sw.connected)
    assert not any(isinstance(op, DeleteCookie) for op in after.sent)
    assert_in_sync(after)
    assert {k: backend_of(send(after.table, k)) for k in conns} == conns


def test_ct_vip_counts_connections_from_conntrack_not_from_learned_flows():
    from controller.vipswitch import CountCt
    fake = FakeSwitch(VipSwitch(config(conntrack_impl="ct")))
    fake.event(fake.sw.connected)
    keys = synthetic_keys(300, VIP_IP, seed=5)
    sent = [backend_of(send(fake.table, k)) for k in keys]
    ops = fake.sw.poll()
    assert CountCt(SWITCH.ct_zone) in ops and not any(isinstance(op, CountConns) for op in ops)
    fake.apply(ops)
    got = {b["name"]: b["active_connections"] for b in fake.sw.describe("web")["backends"]}
    assert got == {f"b{i}": sent.count(f"b{i}") for i in range(8)}
    assert fake.table.flows(table=SWITCH.tables.conn, cookie=vf.COOKIE_CONN,
                            mask=vf.COOKIE_PREFIX_MASK) == []
