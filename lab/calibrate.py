"""Every live network's start-up calibration: measure, correct, check.

1. each site's LAN round trip, router <-> first host (`lan_rtt_ms`);
2. relay links only: restart each relay with the per-frame LAN correction
   (topologies/calibration.py says why and computes it);
3. ping across every WAN link, router to router (no LAN, no correction): median RTT
   against twice the configured one-way delay (entries of kind "link");
4. ping host to host across each link that is its ends' routed path: what users measure,
   LANs included (kind "path").
The entries go into each run's metadata; an entry off by more than
lab.fidelity.RTT_TOLERANCE_MS is a fidelity warning.
"""
from __future__ import annotations

from lab import fidelity
from lab.probes import PingJob, ping_many, rtt_many
from topologies import calibration as cal
from topologies.plan import site_subnets

LAN_PROBES, LAN_PROBE_INTERVAL_S = 30, 0.1    # LAN and host-to-host probes


def calibrate(live, count: int = 20, interval_s: float = 0.01
              ) -> tuple[list[dict], dict[str, float | None]]:
    """(calibration entries, lan_rtt_ms per site) of a running LiveNet (module docstring)."""
    plan = live.plan
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
    ping_many(live, lan_jobs + link_jobs + path_jobs, count=1, interval_s=0.2, timeout_s=3)
    # LAN round trips vary by a few tenths of a ms from probe to probe (OVS main-thread
    # wake-ups): more samples, spaced like the experiments' own probes, for the median.
    lan_rtt_ms = {job.label["site"]: (None if res.median_ms is None
                                      else round(res.median_ms, 3))
                  for job, res in rtt_many(live, lan_jobs, count=LAN_PROBES,
                                           interval_s=LAN_PROBE_INTERVAL_S)}
    link_delay = live.mech.link_delay
    comps = cal.compensations(plan, lan_rtt_ms) if link_delay == "relay" else {}
    for w in plan.wans:
        if w.index in comps and any(comps[w.index]):
            live.node(w.relay_name).set_compensation(*comps[w.index])
    entries = []
    for job, res in rtt_many(live, link_jobs, count=count, interval_s=interval_s):
        entries.append(_entry(job.label["wan"], "link", res.median_ms, res.loss_pct,
                              comps, link_delay))
    for job, res in rtt_many(live, path_jobs, count=LAN_PROBES,
                             interval_s=LAN_PROBE_INTERVAL_S):
        entry = _entry(job.label["wan"], "path", res.median_ms, res.loss_pct, comps,
                       link_delay)
        entry.update(src_host=job.label["src"], dst_host=job.label["dst"])
        entries.append(entry)
    return entries, lan_rtt_ms


def _entry(wan, kind: str, measured: float | None, loss_pct: float, comps: dict,
           link_delay: str) -> dict:
    configured = 2 * wan.link.delay_ms
    ab, ba = comps.get(wan.index, ((), ()))
    return {"link": f"{wan.link.a}-{wan.link.b}", "kind": kind,
            "mechanism": link_delay, "configured_rtt_ms": configured,
            "measured_rtt_ms": None if measured is None else round(measured, 3),
            "error_ms": None if measured is None else round(measured - configured, 3),
            "loss_pct": round(loss_pct, 1),
            "lan_correction": {"ab": [c.arg() for c in ab],
                               "ba": [c.arg() for c in ba]}}


def warnings(entries: list[dict], link_delay: str) -> list[str]:
    """One line per entry that is off (none without a delay mechanism: already warned)."""
    if link_delay == "none":
        return []
    tol = fidelity.RTT_TOLERANCE_MS
    return [f"{c.get('kind', 'link')} {c['link']}{_hosts(c)}: configured RTT "
            f"{c['configured_rtt_ms']:g} ms, measured "
            f"{c['measured_rtt_ms']} ms (> {tol:g} ms off)"
            for c in fidelity.calibration_off(entries)]


def _hosts(entry: dict) -> str:
    return f" ({entry['src_host']} -> {entry['dst_host']})" if "src_host" in entry else ""
