"""What GRE underlays leave outside the bridges, read and removed: OVS user routes (in
ovs-vswitchd, userspace datapath) and kernel policy rules (root namespace, kernel datapath).
Both outlive the bridges, so a run's teardown deletes its own and `lblab clean` finds any
that a crashed run left (only lblab's: marks MARK_BASE+i looking up TABLE_BASE+i, routes on
bridges with lblab's prefixes).
"""
from __future__ import annotations

from topologies.gre import parse_policy_rules, rule_selector
from topologies.system import run


def stale_policy_rules() -> list[dict]:
    """lblab's GRE policy rules present in the root namespace (for `lblab clean`)."""
    return parse_policy_rules(run(["ip", "rule", "show"], check=False).stdout)


def delete_policy_rule(rule: dict) -> bool:
    ok = run(["ip", "rule", "del", *rule_selector(rule)], check=False).returncode == 0
    run(["ip", "route", "flush", "table", str(rule["table"])], check=False)
    return ok


def ovs_user_routes() -> list[dict]:
    """OVS's user-added routes: [{prefix, mark, dev, gw}] from `ovs/route/show`."""
    out = run(["ovs-appctl", "ovs/route/show"], check=False).stdout
    routes = []
    for line in out.splitlines():
        parts = line.split()
        if not parts or parts[0] != "User:":
            continue
        r = {"prefix": parts[1], "mark": 0, "dev": "", "gw": ""}
        for key, field in (("MARK", "mark"), ("dev", "dev"), ("GW", "gw")):
            if key in parts and parts.index(key) + 1 < len(parts):
                r[field] = parts[parts.index(key) + 1]
        r["mark"] = int(r["mark"])
        routes.append(r)
    return routes


def delete_ovs_route(prefix: str, mark: int) -> bool:
    args = ["ovs-appctl", "ovs/route/del", prefix] + ([f"pkt_mark={mark}"] if mark else [])
    return run(args, check=False).returncode == 0


def stale_ovs_routes(prefixes: tuple[str, ...]) -> list[dict]:
    """User routes whose output bridge carries one of lblab's prefixes (for `lblab clean`)."""
    return [r for r in ovs_user_routes() if r["dev"].startswith(prefixes)]
