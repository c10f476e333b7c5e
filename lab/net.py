"""Live network glue: a NetworkPlan replayed into Mininet with OVS, routers and a controller.

`LiveNet` is a context manager that owns everything it starts: the controller process,
the Mininet net (hosts, OVS bridges, links) and the run state file used by `lblab clean`.
Teardown runs in `__exit__`, so callers get it on errors and on KeyboardInterrupt (the
runner turns SIGTERM into one). Thin on purpose: all decisions are in plan.py and topo.py.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import vip_config
from controller.l2logic import BASE_COOKIE
from controller.process import ControllerProcess
from topologies import ovs
from topologies.mechanisms import Mechanisms
from topologies.netlock import network_lock
from topologies.pingparse import PingResult, parse_ping
from topologies.plan import NetworkPlan, site_subnets
from topologies.state import RUN_ENV, RunState
from topologies.system import LblabError
from topologies.topo import ScenarioTopo


@dataclass
class Timing:
    up_s: float = 0.0
    down_s: float = 0.0
    extra: dict = field(default_factory=dict)


def _node_classes(datapath: str):
    """Host and switch factories that pick the class from the node's `role` param."""
    from mininet.node import Host, Node, OVSSwitch

    class LinuxRouter(Node):
        """A site router: a namespace that forwards IPv4 between its LAN and WAN links."""

        def config(self, **params):
            super().config(**params)
            self.cmd("sysctl -qw net.ipv4.ip_forward=1")
            _quiet_ipv6(self)

    class QuietHost(Host):
        def config(self, **params):
            result = super().config(**params)
            _quiet_ipv6(self)
            return result

    def make_host(name, role="client", site=None, **params):
        cls = LinuxRouter if role == "router" else QuietHost
        return cls(name, **params)

    def make_switch(name, role="edge", **params):
        if role == "relay":
            from topologies.relay.node import RelaySwitch
            return RelaySwitch(name, **params)
        return OVSSwitch(name, datapath=datapath, protocols="OpenFlow13", failMode="secure",
                         **params)

    return make_host, make_switch


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM during teardown and re-deliver the first one afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]} during teardown")


def _quiet_tclink():
    """TCLink minus htb's harmless 'quantum of class is big' warning, which Mininet prints
    as an error for every capped link and which would bury real errors."""
    from mininet.link import TCIntf, TCLink

    class QuietTCIntf(TCIntf):
        def tc(self, cmd, tc="tc"):
            out = super().tc(cmd, tc)
            return "\n".join(line for line in out.splitlines()
                             if "quantum of class" not in line)

    class QuietTCLink(TCLink):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("cls1", QuietTCIntf)
            kwargs.setdefault("cls2", QuietTCIntf)
            super().__init__(*args, **kwargs)

    return QuietTCLink


def _quiet_ipv6(node) -> None:
    """No IPv6 in the emulated network: router solicitations and MLD reports would otherwise
    wake the controller and skew packet counters."""
    node.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")


DEFAULT_APPS = ("controller.l2app", "controller.vipapp")
CALIBRATION_TOLERANCE_MS = 1.0
LAN_PROBES, LAN_PROBE_INTERVAL_S = 30, 0.1    # LAN and host-to-host probes (calibrate)
HEALTH_PORT = 80


class LiveNet:
    def __init__(self, plan: NetworkPlan, mechanisms: Mechanisms, run_id: str, work_dir: Path,
                 controller_apps=None, log=print, vip_overrides: dict | None = None,
                 calibrate_links: bool = True, gre: bool | None = None):
        self.plan = plan
        self.mech = mechanisms
        self.run_id = run_id
        self.work_dir = Path(work_dir)
        self.log = log
        self.state = RunState(run_id)
        self.vip_config_path = self.work_dir / "vip-config.json"
        self.health_dir = self.work_dir / "health"
        self.vip_overrides = dict(vip_overrides or {})
        self.controller = ControllerProcess(
            self.work_dir / "controller.log", apps=controller_apps or DEFAULT_APPS,
            extra_env={"LBLAB_VIP_CONFIG": str(self.vip_config_path)})
        self.net = None
        self.timing = Timing()
        self.tx_offload_off: list[str] = []
        self.calibrate_links = calibrate_links
        self.calibration: list[dict] = []
        self.lan_rtt_ms: dict[str, float | None] = {}
        self.procs: list = []  # processes started in hosts; Mininet's stop() does not reap them
        # GRE port, underlay and decapsulators (topologies/gre.py): on request, or when the
        # scenario or the overrides put a VIP in mode gre.
        self.gre_enabled = gre if gre is not None else (
            self.vip_overrides.get("mode") == "gre" or
            any(d.mode == "gre" or getattr(d, "remote_backends", ()) for d in plan.scenario.dcs))
        self.gre = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "LiveNet":
        self._lock = network_lock(log=self.log)
        self._lock.__enter__()
        try:
            self.start()
        except BaseException:
            self.stop()
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self._lock.__exit__(None, None, None)

    def start(self) -> None:
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import RemoteController

        setLogLevel(os.environ.get("LBLAB_MININET_LOG", "error"))
        os.environ[RUN_ENV] = self.run_id  # inherited by every host shell and helper
        t0 = time.monotonic()
        self.state.data["bridges"] = [s.name for s in self.plan.switches]
        self.state.data["interfaces"] = self._expected_root_interfaces()
        self.state.save()
        ovs.ensure_running(self.log)
        self.health_dir.mkdir(parents=True, exist_ok=True)
        if self.gre_enabled and self.mech.gre_decap == "none":
            raise LblabError("GRE mode needs a backend decapsulator: this kernel has no ip_gre "
                             "and the userspace decapsulator is unavailable (lblab doctor)")
        vip_config.write(vip_config.from_plan(self.plan, self.health_dir, self.vip_overrides,
                                            gre=self.gre_enabled),
                        self.vip_config_path)
        self.controller.start()
        self.state.data["rest_url"] = f"http://127.0.0.1:{self.controller.rest_port}"
        self.state.add("pids", self.controller.pid)
        QuietTCLink = _quiet_tclink()
        make_host, make_switch = _node_classes(self.mech.ovs_datapath_mininet)
        topo = ScenarioTopo(plan=self.plan, link_delay=self.mech.link_delay,
                            lan_bw=self.plan.scenario.lan_bw_mbps)
        self.net = Mininet(topo=topo, host=make_host, switch=make_switch, link=QuietTCLink,
                           controller=None, autoSetMacs=False, build=False, waitConnected=False)
        self.net.addController("c0", controller=RemoteController, ip="127.0.0.1",
                               port=self.controller.of_port)
        self.net.build()
        self.net.start()
        for sw in self.plan.switches:
            ovs.tag_bridge(sw.name, self.run_id)
        self._install_routes()
        self._prepare_backends()
        if self.gre_enabled:
            from topologies.gre import GreUnderlay
            self.gre = GreUnderlay(self)
            self.gre.setup()
        self.controller.wait_switches([s.name for s in self.plan.switches], BASE_COOKIE)
        self._warm_up()
        self.timing.up_s = time.monotonic() - t0
        if self.calibrate_links:
            self.calibrate()

    def _prepare_backends(self) -> None:
        """Every backend holds its DC's VIP on lo and never answers ARP for it, so a VIP can
        switch between nat and dsr at run time without touching the hosts.

        On the userspace datapath, packets that the LB rewrites (NAT: client->VIP arriving
        from the DC router, replies from backends) must carry complete checksums: OVS 3.1's
        netdev datapath rewrites addresses of a checksum-offloaded (partial) segment without
        fixing its TCP checksum, and the receiver drops it (measured: SYN-ACKs lost). So
        checksum offload is turned off on the backends and on the DC routers' LAN ports
        (recorded in metadata as `tx_checksum_offload_off`)."""
        fix_offload = self.mech.ovs_datapath == "userspace"
        for dc in self.plan.scenario.dcs:
            for host in self.plan.hosts_in(dc.name, "backend"):
                node = self.net[host.name]
                node.cmd(f"ip addr add {dc.vip}/32 dev lo; "
                         "sysctl -qw net.ipv4.conf.all.arp_ignore=1 "
                         "net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.all.rp_filter=0")
                if fix_offload:
                    self._tx_offload_off(node, node.defaultIntf().name)
            if fix_offload:
                router = self.net[self.plan.router(dc.name).name]
                self._tx_offload_off(router, router.defaultIntf().name)

    def _tx_offload_off(self, node, ifname: str) -> None:
        out = node.cmd(f"ethtool -K {ifname} tx off 2>&1 >/dev/null; echo rc=$?")
        if "rc=0" not in out:
            raise LblabError(f"cannot turn off checksum offload on {ifname}: {out.strip()}")
        self.tx_offload_off.append(ifname)

    def start_health_checks(self, interval_s: float = 0.5, port: int = HEALTH_PORT) -> None:
        """One TCP health checker per DC, in the DC router's namespace (inside the emulated
        network); the VIP app reads its state file. Call once backends serve `port`."""
        import sys
        for dc in self.plan.scenario.dcs:
            targets = []
            for host in self.plan.hosts_in(dc.name, "backend"):
                targets += ["--target", f"{host.ip}:{port}"]
            self.spawn(self.plan.router(dc.name).name,
                       [sys.executable, "-m", "controller.healthcheck", "--out",
                        str(self.health_dir / f"{dc.name}.json"), "--interval",
                        str(interval_s), *targets])

    def _warm_up(self) -> None:
        """Each host pings its gateway once (concurrently): ARP caches fill and every switch
        learns every host and its router before anything is measured."""
        procs = [self.net[h.name].popen(["ping", "-n", "-q", "-c", "1", "-W", "2",
                                         str(h.gateway)])
                 for h in self.plan.hosts]
        for proc in procs:
            proc.wait(timeout=10)

    def calibrate(self, count: int = 20, interval_s: float = 0.01) -> list[dict]:
        """Measure, correct, check (topologies/calibration.py says why):
        1. each site's LAN round trip, router <-> first host (`lan_rtt_ms`);
        2. relay links only: restart each relay with the per-frame LAN correction;
        3. ping across every WAN link, router to router (no LAN, no correction): median RTT
           against twice the configured one-way delay (entries of kind "link");
        4. ping host to host across each link that is its ends' routed path: what users
           measure, LANs included (kind "path").
        Recorded in each run's metadata; an error above CALIBRATION_TOLERANCE_MS is a
        fidelity warning."""
        from experiments.workloads.probes import PingJob, ping_many, rtt_many
        from topologies import calibration as cal
        plan = self.plan
        lan_jobs = []
        for site in site_subnets(plan.scenario):
            host = cal.lan_probe_host(plan, site)
            if host is not None:
                lan_jobs.append(PingJob(plan.router(site).name, str(host.ip), {"site": site}))
        link_jobs = [PingJob(w.a_router, str(w.b_ip), {"wan": w}) for w in plan.wans]
        path_jobs = []
        for w in plan.wans:
            ends = cal.direct_path_hosts(plan, w)
            if ends is not None:
                path_jobs.append(PingJob(ends[0].name, str(ends[1].ip),
                                         {"wan": w, "src": ends[0].name, "dst": ends[1].name}))
        # Resolve ARP on every hop first: pings sent while ARP is pending wait for it and
        # would read up to one extra RTT.
        ping_many(self, lan_jobs + link_jobs + path_jobs, count=1, interval_s=0.2,
                  timeout_s=3)
        # LAN round trips vary by a few tenths of a ms from probe to probe (OVS main-thread
        # wake-ups): more samples, spaced like the experiments' own probes, for the median.
        self.lan_rtt_ms = {job.label["site"]: (None if res.median_ms is None
                                               else round(res.median_ms, 3))
                           for job, res in rtt_many(self, lan_jobs, count=LAN_PROBES,
                                                    interval_s=LAN_PROBE_INTERVAL_S)}
        comps = cal.compensations(plan, self.lan_rtt_ms) \
            if self.mech.link_delay == "relay" else {}
        for w in plan.wans:
            if w.index in comps and any(comps[w.index]):
                self.net[w.relay_name].set_compensation(*comps[w.index])
        self.calibration = []
        for job, res in rtt_many(self, link_jobs, count=count, interval_s=interval_s):
            self.calibration.append(self._calibration_entry(
                job.label["wan"], "link", res.median_ms, res.loss_pct, comps))
        for job, res in rtt_many(self, path_jobs, count=LAN_PROBES,
                                 interval_s=LAN_PROBE_INTERVAL_S):
            entry = self._calibration_entry(job.label["wan"], "path", res.median_ms,
                                            res.loss_pct, comps)
            entry.update(src_host=job.label["src"], dst_host=job.label["dst"])
            self.calibration.append(entry)
        return self.calibration

    def _calibration_entry(self, wan, kind: str, measured: float | None, loss_pct: float,
                           comps: dict) -> dict:
        configured = 2 * wan.link.delay_ms
        ab, ba = comps.get(wan.index, ((), ()))
        return {"link": f"{wan.link.a}-{wan.link.b}", "kind": kind,
                "mechanism": self.mech.link_delay, "configured_rtt_ms": configured,
                "measured_rtt_ms": None if measured is None else round(measured, 3),
                "error_ms": None if measured is None else round(measured - configured, 3),
                "loss_pct": round(loss_pct, 1),
                "lan_correction": {"ab": [c.arg() for c in ab],
                                   "ba": [c.arg() for c in ba]}}

    def calibration_warnings(self) -> list[str]:
        if self.mech.link_delay == "none":
            return []  # already warned: no delay mechanism at all
        bad = [c for c in self.calibration
               if c["error_ms"] is None or abs(c["error_ms"]) > CALIBRATION_TOLERANCE_MS]
        return [f"{c.get('kind', 'link')} {c['link']}{self._hosts(c)}: configured RTT "
                f"{c['configured_rtt_ms']:g} ms, measured "
                f"{c['measured_rtt_ms']} ms (> {CALIBRATION_TOLERANCE_MS:g} ms off)"
                for c in bad]

    @staticmethod
    def _hosts(entry: dict) -> str:
        return f" ({entry['src_host']} -> {entry['dst_host']})" if "src_host" in entry else ""

    def _expected_root_interfaces(self) -> list[str]:
        names = []
        for sw in self.plan.switches:
            names.append(sw.name)  # the bridge's own internal port
        return names

    def _install_routes(self) -> None:
        for route in self.plan.routes:
            out = self.net[route.router].cmd(f"ip route replace {route.dst} via {route.via}")
            if out.strip():
                raise LblabError(f"route {route.dst} via {route.via} on {route.router}: "
                                 f"{out.strip()}")

    def stop(self) -> None:
        """Tear down everything; safe on a half-built net and on a net whose last host
        command was interrupted. SIGINT/SIGTERM are held off until teardown is done, so a
        second Ctrl-C cannot leave bridges or processes behind."""
        with _signals_deferred():
            self._stop()

    def _stop(self) -> None:
        t0 = time.monotonic()
        try:
            self._stop_procs()
            if self.net is not None:
                for node in self.net.values():
                    # A KeyboardInterrupt inside node.cmd() leaves the shell "waiting";
                    # Mininet would then refuse every teardown command on that node.
                    if getattr(node, "waiting", False):
                        node.waiting = False
                controllers = list(self.net.controllers)
                self.net.stop()
                # RemoteController.stop() is a no-op in Mininet 2.3: its helper shell
                # (bash "mininet:c0") would outlive the net.
                for ctl in controllers:
                    ctl.terminate()
        finally:
            self.net = None
            if self.gre is not None:  # OVS user routes outlive bridges
                self.gre.teardown()
            self.controller.stop()
            for sw in self.plan.switches:  # a half-built net may have left bridges
                if sw.name in ovs.bridges():
                    ovs.delete_bridge(sw.name)
            self.state.remove()
            os.environ.pop(RUN_ENV, None)
            self.timing.down_s = time.monotonic() - t0

    def _stop_procs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                proc.kill()
                proc.wait()
        self.procs.clear()

    # -- helpers for experiments -----------------------------------------------------------
    def node(self, name: str):
        return self.net[name]

    def spawn(self, host: str, argv: list[str], **kwargs):
        """Start a process inside a host; it is stopped at teardown (and carries the run's
        LBLAB_RUN marker for `lblab clean`)."""
        proc = self.node(host).popen(argv, **kwargs)
        self.procs.append(proc)
        self.state.add("pids", proc.pid)
        return proc

    def wait_until(self, host: str, shell_check: str, what: str, timeout_s: float = 15) -> None:
        """Poll a shell check inside a host until it succeeds (a readiness check, not a
        sleep); raise a clear error naming `what` on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.node(host).cmd(f"{shell_check} >/dev/null 2>&1; echo $?").strip() \
                    .endswith("0"):
                return
            time.sleep(0.05)
        raise LblabError(f"{what} not ready after {timeout_s:g}s")

    def ping(self, src: str, dst_ip: str, count: int = 5, interval: float = 0.2,
             timeout_s: float = 2.0) -> "PingResult":
        out = self.node(src).cmd(f"ping -n -c {count} -i {interval} -W {timeout_s:g} "
                                 f"{dst_ip}")
        return parse_ping(out, count)
