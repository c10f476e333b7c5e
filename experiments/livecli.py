"""The live lab's commands in `lblab topo up`'s Mininet CLI: look at and change the VIPs, the
DNS authority, faults and load, from where the user is typing.

Each command is parsed in full (pure functions below, unit-tested without root) before it
changes anything, so a wrong argument gets one line of usage and leaves the lab as it was;
an error while acting (the controller refused a change, a wait timed out) is one line too,
never a traceback, and the CLI goes on. Changes are the lab's own mechanisms: the VIP app's
REST API (confirmed by every LB's barrier reply before the command returns), the
authority's control channel, the backends' servers (a failed DC is the dns-failover
experiment's: every backend's server stopped, so connections are refused), and for a WAN
link an nftables table in both routers that drops everything crossing it (the static routes
stay, as a cut fibre leaves them: nothing reroutes around it).
"""
from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import Counter

from gslb.config import MAX_TTL_S, POLICIES
from lab.dns import DigResult, query
from topologies.plan import NetworkPlan, WanPlan
from topologies.system import LblabError

MODES = ("nat", "dsr", "gre")
POOL_ACTIONS = ("drain", "undrain", "remove", "add")
FAULT_KINDS = ("dc", "backend", "link")
MAX_LOAD_RPS = 500          # the DNS-resolving Python client, one resolution per request
MAX_LOAD_S = 3600
HEALTH_WAIT_S = 10.0        # a backend's health check: 0.5 s interval
FAULT_TABLE = "lblab_fault"  # the nftables table a link fault adds in each router

USAGE = {
    "vip": "vip [DC] | vip mode DC nat|dsr|gre | vip drain|undrain|remove|add DC BACKEND",
    "dns": "dns | dns policy " + "|".join(POLICIES) + " | dns ttl SECONDS",
    "fail": "fail dc DC | fail backend BACKEND | fail link SITE-SITE",
    "recover": "recover dc DC | recover backend BACKEND | recover link SITE-SITE",
    "ask": "ask HOST [NAME]",
    "load": "load HOST RATE SECONDS",
}


class Usage(ValueError):
    """A wrong argument: the message is one line, usage included."""

    def __init__(self, command: str, problem: str) -> None:
        super().__init__(f"{problem}; usage: {USAGE[command]}")


# ---------------------------------------------------------------------------------------
# parsing: words -> a validated command, or Usage


def _dc(cmd: str, plan: NetworkPlan, word: str) -> str:
    names = [d.name for d in plan.scenario.dcs]
    if word not in names:
        raise Usage(cmd, f"unknown DC {word!r} (DCs: {', '.join(names)})")
    return word


def _backend_host(cmd: str, plan: NetworkPlan, word: str):
    hosts = plan.by_role("backend")
    for h in hosts:
        if word in (h.name, str(h.ip)):
            return h
    raise Usage(cmd, f"unknown backend {word!r} (backends: {hosts[0].name} ... "
                     f"{hosts[-1].name}, or their addresses)")


def _client(cmd: str, plan: NetworkPlan, word: str):
    clients = plan.by_role("client")
    for h in clients:
        if word == h.name:
            return h
    raise Usage(cmd, f"{word!r} is not a client host (clients: "
                     f"{', '.join(h.name for h in clients) or 'none'})")


def _number(cmd: str, word: str, what: str, lo: float, hi: float, integer=False) -> float:
    try:
        value = int(word) if integer else float(word)
    except ValueError:
        raise Usage(cmd, f"{what} must be a{'n integer' if integer else ' number'}, "
                         f"got {word!r}") from None
    if not lo < value <= hi:
        raise Usage(cmd, f"{what} must be above {lo:g} and at most {hi:g}, got {word}")
    return value


def parse_vip(plan: NetworkPlan, words: list[str]) -> tuple:
    """("show", DC|None) | ("mode", DC, MODE) | (ACTION, DC, BACKEND_IP)"""
    if not words:
        return ("show", None)
    if len(words) == 1 and words[0] not in ("mode", *POOL_ACTIONS):
        return ("show", _dc("vip", plan, words[0]))
    action = words[0]
    if action == "mode":
        if len(words) != 3:
            raise Usage("vip", "vip mode takes a DC and a mode")
        if words[2] not in MODES:
            raise Usage("vip", f"unknown mode {words[2]!r}")
        return ("mode", _dc("vip", plan, words[1]), words[2])
    if action in POOL_ACTIONS:
        if len(words) != 3:
            raise Usage("vip", f"vip {action} takes a DC and a backend (name or address)")
        dc = _dc("vip", plan, words[1])
        if action == "add":  # any address: the controller says whether it can serve
            try:
                ip = str(ipaddress.IPv4Address(words[2]))
            except ValueError:
                ip = str(_backend_host("vip", plan, words[2]).ip)
            return (action, dc, ip)
        return (action, dc, str(_backend_host("vip", plan, words[2]).ip))
    raise Usage("vip", f"unknown subcommand {action!r}")


def parse_dns(words: list[str]) -> tuple:
    """("show",) | ("policy", POLICY) | ("ttl", SECONDS)"""
    if not words:
        return ("show",)
    if words[0] == "policy" and len(words) == 2:
        if words[1] not in POLICIES:
            raise Usage("dns", f"unknown policy {words[1]!r}")
        return ("policy", words[1])
    if words[0] == "ttl" and len(words) == 2:
        return ("ttl", int(_number("dns", words[1], "the TTL", -1, MAX_TTL_S, integer=True)))
    raise Usage("dns", f"cannot read {' '.join(words)!r}")


def find_wan(plan: NetworkPlan, word: str) -> WanPlan | None:
    for wan in plan.wans:
        if word in (f"{wan.link.a}-{wan.link.b}", f"{wan.link.b}-{wan.link.a}",
                    wan.relay_name):
            return wan
    return None


def parse_fault(cmd: str, plan: NetworkPlan, words: list[str]) -> tuple:
    """("dc", DC) | ("backend", HOST_NAME) | ("link", WAN_INDEX)"""
    if len(words) != 2 or words[0] not in FAULT_KINDS:
        raise Usage(cmd, f"{cmd} takes one of {', '.join(FAULT_KINDS)} and a name")
    kind, name = words
    if kind == "dc":
        return ("dc", _dc(cmd, plan, name))
    if kind == "backend":
        return ("backend", _backend_host(cmd, plan, name).name)
    wan = find_wan(plan, name)
    if wan is None:
        raise Usage(cmd, f"no WAN link {name!r} (links: " + ", ".join(
            f"{w.link.a}-{w.link.b}" for w in plan.wans[:4]) +
            (", ..." if len(plan.wans) > 4 else "") + ")")
    return ("link", wan.index)


def parse_ask(plan: NetworkPlan, words: list[str], default_name: str) -> tuple:
    if not 1 <= len(words) <= 2:
        raise Usage("ask", "ask takes a client host and optionally a name")
    name = words[1] if len(words) == 2 else default_name
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,253}", name):
        raise Usage("ask", f"{name!r} is not a DNS name")
    return (_client("ask", plan, words[0]).name, name)


def parse_load(plan: NetworkPlan, words: list[str]) -> tuple:
    if len(words) != 3:
        raise Usage("load", "load takes a client host, a rate and a duration")
    host = _client("load", plan, words[0]).name
    rate = _number("load", words[1], "RATE (requests per second)", 0, MAX_LOAD_RPS)
    seconds = _number("load", words[2], "SECONDS", 0, MAX_LOAD_S)
    return (host, rate, seconds)


# ---------------------------------------------------------------------------------------
# WAN link faults


def wan_ends(live, wan: WanPlan) -> list[tuple[str, str]]:
    """(router, interface name) of both ends of a WAN link, whatever carries it (a relay
    node between the routers, or a netem veth pair between them)."""
    net = live.net
    ends = []
    for router, peer in ((wan.a_router, wan.b_router), (wan.b_router, wan.a_router)):
        other = wan.relay_name if wan.relay_name in net else peer
        links = net.linksBetween(net[router], net[other])
        if not links:
            raise LblabError(f"no link between {router} and {other}")
        link = links[0]
        intf = link.intf1 if link.intf1.node.name == router else link.intf2
        ends.append((router, intf.name))
    return ends


def cut_wan(live, wan: WanPlan) -> None:
    """Drop everything that arrives on the link's interface in both routers (an nftables
    netdev ingress chain per interface, in the router's namespace: it goes with it)."""
    for router, intf in wan_ends(live, wan):
        table = _fault_table(intf)
        out = live.node(router).cmd(
            f"nft 'add table netdev {table}; add chain netdev {table} in {{ type filter "
            f"hook ingress device \"{intf}\" priority 0; policy drop; }}' 2>&1 "
            "&& echo LBLAB_OK")
        if "LBLAB_OK" not in out:
            restore_wan(live, wan)
            last = out.strip().splitlines()[-1] if out.strip() else "nft failed"
            raise LblabError(f"could not cut {wan.link.a}-{wan.link.b} in {router}: {last}")


def restore_wan(live, wan: WanPlan) -> None:
    for router, intf in wan_ends(live, wan):
        live.node(router).cmd(f"nft delete table netdev {_fault_table(intf)} 2>/dev/null")


# ---------------------------------------------------------------------------------------
# the lab the commands act on


class LiveLab:
    """The running lab of `lblab topo up`: live network, plan, DNS service, VIP API."""

    def __init__(self, live, plan: NetworkPlan, config, svc, work_dir, say=print) -> None:
        from experiments.dnsnet import dc_of_address
        from experiments.vipclient import for_live
        self.live, self.plan, self.config, self.svc = live, plan, config, svc
        self._dc_of = dc_of_address(config)
        self.work_dir = work_dir
        self.api = for_live(live)
        self.say = say                      # where background results are printed
        self.servers = {}                   # backend host -> its running server process
        for dc, procs in svc.backends.items():
            for host, proc in zip(plan.hosts_in(dc, "backend"), procs):
                self.servers[host.name] = proc
        self.failed_dcs: set[str] = set()
        self.failed_backends: set[str] = set()
        self.failed_links: set[int] = set()
        self._load_no = 0
        self.closing = False                # set at exit: teardown stops running loads

    def dc_of(self, address: str) -> str:
        return self._dc_of.get(address, "?")

    # -- vip --------------------------------------------------------------------------

    def vip_show(self, dc: str | None) -> list[str]:
        if dc is None:
            from experiments.vipclient import summary
            return [summary(v) for v in self.api.vips()] + ["(vip DC for one VIP's pool)"]
        v = self.api.vip(dc)
        lines = [f"{v['name']} {v['address']} mode {v['mode']} algorithm {v['algorithm']} "
                 f"connection table {v['connection_table']} ({v['table_size']} buckets)",
                 f"  {'backend':<10} {'address':<13} {'admin':<6} {'health':<6} "
                 f"{'conns':>6} {'bytes':>12} {'share':>6}"]
        for b in v["backends"]:
            conns = "-" if b["active_connections"] is None else b["active_connections"]
            size = "-" if b["bytes"] is None else b["bytes"]
            lines.append(f"  {b['name']:<10} {b['ip']:<13} {b['admin']:<6} {b['health']:<6} "
                         f"{conns:>6} {size:>12} {b['table_share']:>6.1%}")
        return lines

    def _changed(self, dc: str, act) -> dict:
        """Apply one REST change and wait until every LB of the DC confirmed its flows."""
        before = self.api.last_change(dc).get("number", 0)
        act()
        return self.api.wait_change(dc, before)

    def vip_mode(self, dc: str, mode: str) -> list[str]:
        if mode == "gre" and getattr(self.live, "gre", None) is None:
            raise LblabError("GRE is not wired in this lab: bring it up with "
                             "`lblab topo up --gre` (needs a GRE decapsulator, `lblab doctor`)")
        done = self._changed(dc, lambda: self.api.change(dc, mode=mode))
        if getattr(self.live, "gre", None) is not None:
            # the MSS clamp (at every client edge) stays on while any VIP tunnels
            levers = self.live.gre.levers
            levers.unclamp_mss()
            if any(v["mode"] == "gre" for v in self.api.vips()):
                levers.clamp_mss()
        return [f"{dc}: mode {mode}, in the switches {done.get('disagreement_ms')} ms after "
                "the first flow mod (every LB confirmed)"]

    def vip_pool(self, action: str, dc: str, ip: str) -> list[str]:
        calls = {"drain": self.api.drain, "undrain": self.api.undrain,
                 "remove": self.api.remove_backend, "add": self.api.add_backend}
        self._changed(dc, lambda: calls[action](dc, ip))
        return [f"{dc}: {action} {ip} done, in the switches"] + self.vip_show(dc)[1:]

    # -- dns --------------------------------------------------------------------------

    def dns_show(self) -> list[str]:
        st = self.svc.authority.state()
        lines = [f"authority {self.svc.authority.ip}: {st['zone']} policy {st['policy']}, "
                 f"TTL {st['ttl_s']} s, global view version {st['version']}"]
        for name, d in st["dcs"].items():
            lines.append(f"  {name:<6} {d['vip']:<15} {'healthy' if d['healthy'] else 'DOWN':<8}"
                         f" load {d['load']:g} of {d['capacity_rps']:g} req/s")
        return lines + self.region_answers()

    def region_answers(self) -> list[str]:
        """What the authority answers a user of each region now (ECS: the region's subnet)."""
        lines = []
        for region in self.plan.scenario.regions:
            got = self.svc.authority.answer(subnet=str(region.subnet))
            named = ", ".join(f"{a} ({self.dc_of(a)})" for a in got) or "no answer"
            lines.append(f"  a user in {region.name} (ECS {region.subnet}) gets {named}")
        return lines

    def dns_set(self, key: str, value) -> list[str]:
        if key == "policy":
            self.svc.authority.set_policy(value)
        else:
            self.svc.authority.set_ttl(value)
        return [f"authority: {key} {value} (answers cached by resolvers keep their old TTL)"] \
            + self.dns_show()

    # -- faults -----------------------------------------------------------------------

    def _wait(self, check, timeout_s: float, what: str, since: float | None = None) -> float:
        """Poll `check` until true; seconds from `since` (a time.monotonic(), default now)."""
        start = time.monotonic() if since is None else since
        while not check():
            if time.monotonic() - start > timeout_s:
                raise LblabError(f"{what} did not happen within {timeout_s:g} s")
            time.sleep(0.05)
        return time.monotonic() - start

    def _dc_healthy(self, dc: str) -> bool:
        return self.svc.authority.state()["dcs"][dc]["healthy"]

    def _backend_health(self, host) -> str:
        v = self.api.vip(host.site)
        return next((b["health"] for b in v["backends"] if b["ip"] == str(host.ip)), "absent")

    def _start_servers(self, hosts) -> None:
        """Start the hosts' servers; if one does not come up, stop all that were started
        (nothing half-recovered, nothing untracked)."""
        from experiments.workloads.control import start_http_backends
        from topologies.system import stop_processes
        names = {h.name for h in hosts}
        first = len(self.live.procs)
        try:
            started = start_http_backends(self.live, self.plan, hosts=names)
        except BaseException:
            stop_processes(self.live.procs[first:])
            raise
        for dc, procs in started.items():  # in the plan's order within each DC
            ordered = [h for h in self.plan.hosts_in(dc, "backend") if h.name in names]
            for host, proc in zip(ordered, procs):
                self.servers[host.name] = proc

    def fail(self, kind: str, name) -> list[str]:
        from topologies.system import stop_processes
        if kind == "dc":
            if name in self.failed_dcs:
                raise LblabError(f"{name} is already failed (recover dc {name})")
            from experiments.dns_failover import DETECT_BUDGET_S
            state = self.svc.authority.state()
            others = [d for d, v in state["dcs"].items() if d != name and v["healthy"]]
            hosts = [h for h in self.plan.hosts_in(name, "backend")
                     if h.name not in self.failed_backends]
            start = time.monotonic()
            stop_processes([self.servers[h.name] for h in hosts])
            self.failed_dcs.add(name)
            took = self._wait(lambda: not self._dc_healthy(name), DETECT_BUDGET_S,
                              f"the authority marking {name} down", since=start)
            lines = [f"{name} failed: its backends' servers stopped (connections refused); "
                     f"the authority's probes marked it down {took:.1f} s after the stop"]
            if not others:
                lines.append(f"no other DC is healthy: the authority fails open and keeps "
                             f"answering with {name}")
            return lines + self.region_answers() + [
                f"resolvers keep a cached answer up to its TTL (now {state['ttl_s']} s): "
                "ask HOST shows what a client gets"]
        if kind == "backend":
            host = self.plan.host(name)
            if host.site in self.failed_dcs:
                raise LblabError(f"{host.site} is failed: recover dc {host.site} first")
            if name in self.failed_backends:
                raise LblabError(f"{name} is already failed (recover backend {name})")
            if self._backend_health(host) == "absent":
                raise LblabError(f"{name} is not in {host.site}'s pool (vip add {host.site} "
                                 f"{name}), so no health check would see it fail")
            stop_processes([self.servers[name]])
            self.failed_backends.add(name)
            took = self._wait(lambda: self._backend_health(host) == "down", HEALTH_WAIT_S,
                              f"the health check marking {name} down")
            return [f"{name} failed: its server stopped; health checks took it out of "
                    f"{host.site}'s table after {took:.1f} s"] + self.vip_show(host.site)[1:]
        wan = self.plan.wans[name]
        if name in self.failed_links:
            raise LblabError(f"{wan.link.a}-{wan.link.b} is already failed")
        try:
            cut_wan(self.live, wan)
        except KeyboardInterrupt:
            restore_wan(self.live, wan)   # not half cut
            raise
        self.failed_links.add(name)
        return [f"link {wan.link.a}-{wan.link.b} cut: both routers drop every packet that "
                "arrives on it (routes unchanged: traffic routed over it is lost)"]

    def recover(self, kind: str, name) -> list[str]:
        if kind == "dc":
            if name not in self.failed_dcs:
                raise LblabError(f"{name} is not failed")
            from experiments.dns_failover import DETECT_BUDGET_S
            hosts = self.plan.hosts_in(name, "backend")  # those failed one by one too
            start = time.monotonic()
            self._start_servers(hosts)
            self.failed_dcs.discard(name)
            self.failed_backends -= {h.name for h in hosts}
            took = self._wait(lambda: self._dc_healthy(name), DETECT_BUDGET_S,
                              f"the authority marking {name} healthy", since=start)
            return [f"{name} recovered: all {len(hosts)} backend servers answer again; the "
                    f"authority's probes marked it healthy {took:.1f} s after the start"]
        if kind == "backend":
            host = self.plan.host(name)
            if name not in self.failed_backends:
                raise LblabError(f"{name} is not failed")
            if host.site in self.failed_dcs:
                raise LblabError(f"{host.site} is failed: recover dc {host.site} first")
            self._start_servers([host])
            self.failed_backends.discard(name)
            took = self._wait(lambda: self._backend_health(host) == "up", HEALTH_WAIT_S,
                              f"the health check marking {name} up")
            return [f"{name} recovered: back in {host.site}'s table after {took:.1f} s"] \
                + self.vip_show(host.site)[1:]
        wan = self.plan.wans[name]
        if name not in self.failed_links:
            raise LblabError(f"{wan.link.a}-{wan.link.b} is not failed")
        restore_wan(self.live, wan)
        self.failed_links.discard(name)
        return [f"link {wan.link.a}-{wan.link.b} restored"]

    # -- ask and load -----------------------------------------------------------------

    def _resolver(self, host: str) -> tuple[str, str, bool | None]:
        """(name, address, ECS) of what a client resolves through: its resolver, or the
        authority itself when the scenario gives the client none (ECS None)."""
        from lab.dns_config import resolver_of
        res = resolver_of(self.plan, host)
        if res is None:
            return ("the authority", self.svc.authority.ip, None)
        resolver = self.svc.resolvers.get(res.name)
        if resolver is None:
            raise LblabError(f"{host}'s resolver {res.name} is not running")
        return (res.name, resolver.ip, resolver.ecs)

    def ask(self, host: str, name: str) -> list[str]:
        res, res_ip, ecs = self._resolver(host)
        got = query(self.live, host, res_ip, name)
        if ecs is None:
            return [f"{host} has no resolver in this scenario and asks the authority "
                    f"{res_ip} directly (it sees the client's own address): "
                    + _answer_text(got, self.dc_of)]
        lines = [f"{host} asks {res} {res_ip} (unbound, ECS {'on' if ecs else 'off'}): "
                 + _answer_text(got, self.dc_of)]
        # what the authority says to that resolver for this user, asked from the resolver's
        # own address with the subnet it would forward
        ip = self.plan.host(host).ip
        subnet = f"{ipaddress.IPv4Network(f'{ip}/24', strict=False)}" if ecs else None
        auth = query(self.live, res, self.svc.authority.ip, name, subnet=subnet)
        scope = (f"ECS {auth.ecs[0]}, scope /{auth.ecs[1]}" if auth.ecs else
                 "no ECS: the authority sees only the resolver's address")
        lines.append(f"the authority now answers {res} for this user ({scope}): "
                     + _answer_text(auth, self.dc_of, ttl=False))
        return lines

    def load(self, host: str, rate: float, seconds: float) -> list[str]:
        from experiments import dnsnet
        from experiments.seeds import derive
        res, res_ip, _ = self._resolver(host)
        self._load_no += 1
        job = dnsnet.ClientJob(host, res_ip, rate, "random",
                               derive(1, "cli-load", str(self._load_no)))
        _, running = dnsnet.start_clients(self.live, [job], seconds, self.work_dir,
                                          start_in_s=0.5)
        number = self._load_no

        def report() -> None:
            try:
                rows = dnsnet.collect_clients(running, seconds)
            except LblabError as exc:
                if not self.closing:
                    self.say(f"load #{number} on {host}: {exc}")
                return
            if not self.closing:
                self.say(f"load #{number} on {host} ended: " + load_summary(rows, self.dc_of))

        threading.Thread(target=report, name=f"lblab-load-{number}", daemon=True).start()
        return [f"load #{number}: {host} sends {rate:g} search requests/s for {seconds:g} s "
                f"through {res} (each request resolves first); shares follow when it "
                "ends"]


def _answer_text(got: DigResult, dc_of, ttl: bool = True) -> str:
    if got.status is None:
        return "no reply (timed out)"
    if not got.answers:
        return f"{got.status}, no A record"
    return ", ".join(f"{a} ({dc_of(a)})" + (f" TTL {t} s" if ttl else "")
                     for a, t in got.answers)


def _fault_table(intf: str) -> str:
    return f"{FAULT_TABLE}_{re.sub(r'[^A-Za-z0-9_]', '_', intf)}"


def load_summary(rows: list[dict], dc_of) -> str:
    """'N requests, M answered: us1 70%, eu1 30%; K failed: ap1 K' from dnssearch rows:
    each DC's share of the answered requests, and where the failed ones were sent."""
    ok = Counter(dc_of(r["dst"]) for r in rows if r["ok"])
    failed = Counter(dc_of(r["dst"]) if r["dst"] else "unresolved"
                     for r in rows if not r["ok"])
    answered = sum(ok.values())
    text = f"{len(rows)} requests, {answered} answered"
    if ok:
        text += ": " + ", ".join(f"{dc} {n / answered:.0%}" for dc, n in ok.most_common())
    if failed:
        text += f"; {sum(failed.values())} failed, sent to: " + ", ".join(
            f"{dc} {n}" for dc, n in failed.most_common())
    return text
