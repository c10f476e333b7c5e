"""The flow IR rendered two ways, checked against Open vSwitch's own parser: ovs-ofctl lines
(controller/ofctl.py) and Ryu OpenFlow 1.3 messages (controller/ofmsg.py), for every kind of
flow both apps install."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from controller import l2logic
from controller import vipflows as vf
from controller.flows import normalize_match
from controller.ofctl import to_ofctl
from controller.vipmodel import Backend
from support.datapath import MODULES, of_datapath, ofproto_parser
from support.vipcase import KEYS, SWITCH, backends, vip


def _shapes(flows):
    """One flow per (table, priority): each kind of flow once."""
    seen, out = set(), []
    for f in flows:
        if (f.table, f.priority) not in seen:
            seen.add((f.table, f.priority))
            out.append(f)
    return out


def _all_modes_flows():
    far = tuple(Backend(f"r{i}", f"10.102.0.{10 + i}") for i in range(2))
    key = KEYS[0]
    flows = []
    for v in (vip(mode="nat", conn_fin_timeout=2), vip(mode="dsr", conntrack=False),
              vip(mode="gre", backends=far), vip(mode="gre"), vip(reactive=True),
              vip(mode="nat", conntrack_impl="ct"), vip(mode="dsr", conntrack_impl="ct"),
              vip(algorithm="leastload", conntrack_impl="ct"),
              vip(hash_impl="multipath"), vip(hash_impl="multipath", conntrack_impl="ct")):
        flows += _shapes(vf.desired_flows(SWITCH, [v]))
    flows += vf.reactive_flows(vip(), key, backends()[0])
    delete, add = l2logic.learn_flows(l2logic.Learn("02:1b:0a:65:00:0b", 3, moved_from=2))
    return flows + l2logic.table_miss_flows() + delete + add


def test_to_ofctl_is_plausible():
    pat = re.compile(r"^table=\d+,priority=\d+,cookie=0x[0-9a-f]+(,[a-z_0-9]+=[^, ]+)*"
                     r" actions=\S+$")
    for f in _all_modes_flows():
        line = to_ofctl(f)
        assert pat.match(line), line
    arp = next(to_ofctl(f) for f in vf.desired_flows(SWITCH, [vip()])
               if f.priority == vf.PRIO_ARP)
    assert "arp_tpa=10.101.0.100" in arp and arp.endswith(",in_port")


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl not installed")
def test_to_ofctl_parses_with_ovs_ofctl():
    # parse-flow only parses (no switch is contacted); OVS also checks prerequisites here.
    for f in _all_modes_flows():
        r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "parse-flow", to_ofctl(f)],
                           capture_output=True, text=True)
        assert r.returncode == 0, (to_ofctl(f), r.stderr)


# --- Ryu and os-ken messages (ofmsg): each test under both frameworks --------------------
over_frameworks = pytest.mark.parametrize("fw", MODULES)


def _dp(fw):
    pytest.importorskip(fw)
    return of_datapath(fw)


@over_frameworks
def test_ofmsg_serialises_and_parses_back(fw):
    dp = _dp(fw)

    from controller import ofmsg
    for f in _all_modes_flows():
        m = ofmsg.flow_mod(dp, f)
        m.serialize()
        back = ofproto_parser(fw).msg(dp, m.version, m.msg_type, m.msg_len, m.xid, m.buf)
        assert (back.table_id, back.priority, back.cookie) == (f.table, f.priority, f.cookie)
        n_actions = sum(len(getattr(i, "actions", [None])) for i in back.instructions)
        assert n_actions == len(f.actions)
        assert normalize_match(list(back.match.items())) == f.match
        d = ofmsg.flow_mod(dp, f, "delete_strict")
        d.serialize()


def _decoded_by_ovs(tmp_path, msg) -> str:
    """A message serialised by the framework, as OVS's own parser prints it."""
    msg.serialize()
    path = tmp_path / "msg.bin"
    path.write_bytes(bytes(msg.buf))
    return subprocess.run(["ovs-ofctl", "ofp-parse", str(path)], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl not installed")
@over_frameworks
def test_ofmsg_bytes_decode_in_ovs_as_the_ofctl_text(tmp_path, fw):
    """Ryu's bytes, decoded by OVS's own parser, equal the to_ofctl line parsed by OVS."""
    dp = _dp(fw)
    from controller import ofmsg
    for f in _all_modes_flows():
        from_bytes = _decoded_by_ovs(tmp_path, ofmsg.flow_mod(dp, f))
        from_text = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "parse-flow",
                                    to_ofctl(f)], capture_output=True, text=True,
                                   check=True).stdout.splitlines()[-1]
        strip = lambda s: re.sub(r"\(xid=0x[0-9a-f]+\)", "", s).strip()  # noqa: E731
        assert strip(from_bytes) == strip(from_text)


@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl not installed")
@over_frameworks
def test_group_mod_decodes_in_ovs_as_create_or_modify_with_the_ofctl_buckets(tmp_path, fw):
    """The dp_hash select group: Ryu's bytes, decoded by OVS, are an ADD_OR_MOD (so
    installing it again is harmless) with the bucket group_to_ofctl writes."""
    from controller import ofmsg
    from controller.ofctl import group_to_ofctl
    dp = _dp(fw)
    (group,) = vf.vip_groups(SWITCH, [vip()])
    decoded = _decoded_by_ovs(tmp_path, ofmsg.group_mod(dp, group))
    assert "ADD_OR_MOD" in decoded, decoded
    bucket = group_to_ofctl(group).split("bucket=weight:1,")[1]
    assert bucket.replace("NXM_NX_DP_HASH", "dp_hash").replace("NXM_NX_REG0", "reg0") in \
        decoded.replace("NXM_NX_DP_HASH", "dp_hash").replace("NXM_NX_REG0", "reg0"), decoded
    assert "dp_hash[0..12]" in decoded.replace("NXM_NX_DP_HASH", "dp_hash"), decoded


@over_frameworks
def test_ofmsg_diff_messages_and_helpers(fw):
    dp = _dp(fw)
    from controller import ofmsg
    v = vip()
    d = vf.vip_diff([], vf.desired_flows(SWITCH, [v]))
    msgs = ofmsg.diff_messages(dp, d)
    assert len(msgs) == len(d.add) + 1
    for m in (msgs[0], msgs[-1], ofmsg.delete_by_cookie(dp, vf.vip_cookie_prefix(1),
                                                        vf.COOKIE_VIP_MASK),
              ofmsg.count_request(dp, SWITCH.tables.conn, vf.conn_cookie(1, "10.101.0.10"))):
        m.serialize()


@over_frameworks
def test_flow_mods_sharing_instructions_serialise_as_built_alone(fw):
    """diff_messages builds each action list once for the entries that share it: the
    bytes are those of flow mods built one by one."""
    dp = _dp(fw)
    from controller import ofmsg
    d = vf.vip_diff([], vf.desired_flows(SWITCH, [vip(algorithm="maglev")]))
    shared = ofmsg.diff_messages(dp, d)[:-1]
    alone = [ofmsg.flow_mod(dp, s) for s in d.add + d.modify]
    assert len(shared) == len(alone) > 1000
    for a, b in zip(shared, alone):
        a.serialize()
        b.serialize()
        assert bytes(a.buf) == bytes(b.buf)


@over_frameworks
def test_resync_deletes_flows_read_back_from_the_switch(fw):
    """At (re)connection the app diffs the switch's actual VIP flows (flow stats) against
    the desired ones; stale ones are deleted from their stats entries, which carry no
    timeouts. (A crash here left a reconnected switch without its VIP flows.)"""
    dp = _dp(fw)
    from controller import ofmsg
    desired = vf.desired_flows(SWITCH, [vip()])
    gone = vip(name="gone", address="10.101.0.200", mac="02:1c:0a:65:00:c8", index=2,
               mode="dsr")
    stale = vf.desired_flows(SWITCH, [vip(), gone])
    msgs = [ofmsg.flow_mod(dp, f) for f in stale]
    for m in msgs:
        m.serialize()
    stats = [ofmsg.read_back(ofproto_parser(fw).msg(dp, m.version, m.msg_type, m.msg_len, m.xid,
                                                m.buf)) for m in msgs]
    d = vf.vip_diff(stats, desired)
    assert d.delete, "the flows of the VIP that is gone must be deleted"
    out = ofmsg.diff_messages(dp, d)
    for m in out:
        m.serialize()
    deletes = [m for m in out if getattr(m, "command", None) == dp.ofproto.OFPFC_DELETE_STRICT]
    assert len(deletes) == len(d.delete)
