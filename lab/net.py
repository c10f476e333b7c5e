"""A live network: a NetworkPlan replayed into Mininet with OVS, routers and a controller.

`LiveNet` is a context manager that owns everything it starts: the controller process, the
Mininet net (hosts, OVS bridges, links, relays), the GRE underlay when a VIP needs it, the
processes started in hosts, and the run state file used by `lblab clean`. Teardown runs in
`__exit__`, so callers get it on errors and on KeyboardInterrupt (the runner turns SIGTERM
into one). It composes: the plan and the Topo (topologies/) say what to build, the VIP
config (lab/vip_config.py) what the controller serves, lab/nodes.py what each node is,
lab/calibrate.py how the WAN is checked at start, lab/gre.py the tunnel underlay.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from controller.l2logic import BASE_COOKIE
from lab import calibrate as calibration_procedure
from lab import nodes, vip_config
from lab.controller_process import ControllerProcess
from lab.mechanisms import Mechanisms
from topologies import ovs
from topologies.netlock import network_lock
from topologies.pingparse import PingResult, parse_ping
from topologies.plan import SERVICE_PORT, NetworkPlan, lan_carriers
from topologies.state import RUN_ENV, RunState
from topologies.system import LblabError, run, stop_processes
from topologies.topo import ScenarioTopo


@dataclass
class Timing:
    up_s: float = 0.0
    down_s: float = 0.0
    extra: dict = field(default_factory=dict)


DEFAULT_APPS = ("controller.l2app", "controller.vipapp")


class LiveNet:
    def __init__(self, plan: NetworkPlan, mechanisms: Mechanisms, run_id: str, work_dir: Path,
                 controller_apps=None, log=print, vip_overrides: dict | None = None,
                 calibrate_links: bool = True, gre: bool | None = None,
                 ecmp: str = "hash-threshold"):
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
        self.vip_settings: dict[str, dict] = {}
        self.calibrate_links = calibrate_links
        self.calibration: list[dict] = []
        self.lan_rtt_ms: dict[str, float | None] = {}
        self.procs: list = []  # processes started in hosts; Mininet's stop() does not reap them
        self.client_stats: list[dict] = []   # load generators' own summaries (run metadata)
        self.population_blocks: dict[str, int] = {}   # host -> local routes (lab/population.py)
        # GRE port, underlay and decapsulators (lab/gre.py): on request, or when the
        # scenario or the overrides put a VIP in mode gre.
        self.gre_enabled = gre if gre is not None else (
            self.vip_overrides.get("mode") == "gre" or
            any(d.mode == "gre" or d.remote_backends for d in plan.scenario.dcs))
        self.gre = None
        self.tier = None      # lab/bgp.py's LbTier when the plan has LB tiers
        self.ecmp = ecmp
        # what carries each site's LAN (topologies/plan.py): OVS for DCs, a Linux bridge
        # for client regions unless `--set region_lan=ovs`
        self.lan_carriers = lan_carriers(plan, mechanisms.region_lan)
        self.ovs_switches = [s for s in plan.switches if self.lan_carriers[s.site] == "ovs"]

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
        self.state.data["bridges"] = [s.name for s in self.ovs_switches]
        self.state.data["interfaces"] = self._expected_root_interfaces()
        self.state.save()
        ovs.ensure_running(self.log)
        self.health_dir.mkdir(parents=True, exist_ok=True)
        if self.gre_enabled and self.mech.gre_decap == "none":
            raise LblabError("GRE mode needs a backend decapsulator: this kernel has no ip_gre "
                             "and the userspace decapsulator is unavailable (lblab doctor)")
        config = vip_config.from_plan(self.plan, self.health_dir, self.vip_overrides,
                                      gre=self.gre_enabled)
        vip_config.write(config, self.vip_config_path)
        # what each DC's VIP started with (run metadata: experiments may change it later)
        self.vip_settings = {v["name"]: {k: v.get(k) for k in (
            "mode", "algorithm", "conntrack", "conntrack_impl", "hash_impl")}
            for sw in config["switches"].values() for v in sw["vips"]}
        self.controller.start()
        self.state.data["rest_url"] = f"http://127.0.0.1:{self.controller.rest_port}"
        self.state.add("pids", self.controller.pid)
        QuietTCLink = nodes.quiet_tclink()
        make_host, make_switch = nodes.node_classes(self.mech.ovs_datapath_mininet)
        topo = ScenarioTopo(plan=self.plan, link_delay=self.mech.link_delay,
                            lan_bw=self.plan.scenario.lan_bw_mbps,
                            region_lan=self.mech.region_lan)
        self.net = Mininet(topo=topo, host=make_host, switch=make_switch, link=QuietTCLink,
                           controller=None, autoSetMacs=False, build=False, waitConnected=False)
        self.net.addController("c0", controller=RemoteController, ip="127.0.0.1",
                               port=self.controller.of_port)
        self.net.build()
        self.net.start()
        for sw in self.ovs_switches:
            ovs.tag_bridge(sw.name, self.run_id)
        self._install_routes()
        if self.plan.scenario.populations:   # users' and resolvers' address blocks
            from lab import population
            self.population_blocks = population.prepare(self)
        self._prepare_backends()
        if self.gre_enabled:
            from lab.gre import GreUnderlay
            self.gre = GreUnderlay(self)
            self.gre.setup()
        self.controller.wait_switches([s.name for s in self.ovs_switches], BASE_COOKIE)
        self._warm_up()
        if self.plan.lbs:   # LB tiers: BGP speakers, the routers' BGP and ECMP (lab/bgp.py)
            from lab.bgp import LbTier
            self.tier = LbTier(self, ecmp=self.ecmp)
            self.tier.start()
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
                    self.turn_tx_offload_off(node, node.defaultIntf().name)
            if fix_offload:
                router = self.net[self.plan.router(dc.name).name]
                self.turn_tx_offload_off(router, router.defaultIntf().name)

    def turn_tx_offload_off(self, node, ifname: str) -> None:
        """Checksum offload off on one interface of a node, once; recorded for metadata."""
        if ifname not in self.tx_offload_off:
            nodes.tx_offload_off(node, ifname)
            self.tx_offload_off.append(ifname)

    def start_health_checks(self, interval_s: float = 0.5, port: int = SERVICE_PORT) -> None:
        """One TCP health checker per DC, in the DC router's namespace (inside the emulated
        network); the VIP app reads its state file. Call once backends serve `port`."""
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
        """The start-up calibration (lab/calibrate.py): LAN round trips, relay corrections,
        WAN links and paths checked; kept for the run's metadata."""
        self.calibration, self.lan_rtt_ms = calibration_procedure.calibrate(
            self, count, interval_s)
        return self.calibration

    def calibration_warnings(self) -> list[str]:
        return calibration_procedure.warnings(self.calibration, self.mech.link_delay)

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
        with nodes.signals_deferred():
            self._stop()

    def _stop(self) -> None:
        t0 = time.monotonic()
        try:
            self._stop_procs()
            if self.net is not None:
                for node in self.net.values():
                    # A KeyboardInterrupt inside node.cmd() leaves the shell "waiting";
                    # Mininet would then refuse every teardown command on that node.
                    # A command still running in a shell (SIGTERM during `lbc-na1 sleep
                    # 30` in the CLI) is interrupted first, or teardown waits for it.
                    if getattr(node, "waiting", False):
                        node.sendInt()
                        node.waiting = False
                    # A node whose shell has exited (`lbc-na1 exit` typed in the CLI)
                    # would block teardown's `ip link del` in it forever; its namespace
                    # and interfaces went with its last process.
                    shell = getattr(node, "shell", None)
                    if shell is not None and shell.poll() is not None:
                        node.cmd = lambda *args, **kwargs: ""
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
                elif self.lan_carriers.get(sw.site) == "linux-bridge":
                    run(["ip", "link", "del", sw.name], check=False)
            self.state.remove()
            os.environ.pop(RUN_ENV, None)
            self.timing.down_s = time.monotonic() - t0

    def _stop_procs(self) -> None:
        stop_processes(self.procs, timeout_s=5)
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
