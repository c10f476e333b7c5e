"""`lblab report RUN_DIR...`: report.md + report.html + figures/*.png from run directories.

Where: in the suite directory when one is given (the first, if several), else in the parent
of the first run directory (results/<experiment>/), or in --out. The report carries no time
of its own making: building it twice from the same runs gives identical files.
"""
from __future__ import annotations

from pathlib import Path

from experiments.report import core
from experiments.report.core import Group, Section, fmt
from experiments.report.doc import to_html, to_markdown
from topologies.state import write_atomic as write_atomic_text


def renderers() -> dict:
    from experiments.report import dns, gre, rtt, vip
    return {"rtt-matrix": rtt.render, "vip-modes": vip.render_modes,
            "vip-hashing": vip.render_hashing, "gre-mtu": gre.render,
            "dns-rr": dns.render_rr, "dns-geo": dns.render_geo,
            "dns-failover": dns.render_failover}


def claim_of(experiment: str, runs) -> str:
    for run in runs:
        if run.metadata.get("claim"):
            return run.metadata["claim"]
    try:  # runs made before metadata carried the claim
        from experiments.registry import experiments
        exp = experiments().get(experiment)
        return exp.claim if exp else ""
    except Exception:
        return ""


def _distinct(values) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def mechanisms_line(m: dict) -> str:
    return (f"OVS datapath **{m.get('ovs_datapath', '?')}**, link delay "
            f"**{m.get('link_delay', '?')}**, GRE decapsulation **{m.get('gre_decap', '?')}**, "
            f"controller {m.get('controller', '?')}")


def fidelity_warnings(run) -> list[str]:
    """One line per fidelity problem of a run (from its metadata)."""
    m = run.metadata
    name = f"{run.experiment} `{run.run_id}`"
    out = []
    if (m.get("mechanisms") or {}).get("link_delay") == "none":
        out.append(f"WARNING {name}: link delay mechanism `none`: configured WAN delays and "
                   f"loss were NOT applied; latencies are LAN latencies.")
    idle = m.get("min_cpu_idle_pct")
    if m.get("cpu_starved"):
        share = m.get("cpu_starved_share_pct")
        during = f" for {fmt(share)}% of the run" if share is not None else ""
        out.append(f"WARNING {name}: CPU-starved (CPU idle below "
                   f"{core.CPU_STARVED_BELOW_PCT:g}%{during}, lowest {fmt(idle)}%; mean idle "
                   f"{fmt(m.get('mean_cpu_idle_pct'))}%): latencies include CPU queueing.")
    paths = [p for net in (m.get("calibration") or []) for p in (net or [])
             if isinstance(p, dict)]
    bad = [p for p in paths if p.get("error_ms") is not None
           and abs(float(p["error_ms"])) > core.CALIBRATION_MAX_ERROR_MS]
    if bad:
        worst = max(bad, key=lambda p: abs(float(p["error_ms"])))
        out.append(f"WARNING {name}: calibration: {len(bad)} of {len(paths)} WAN paths off "
                   f"by more than {core.CALIBRATION_MAX_ERROR_MS:g} ms (worst "
                   f"{worst.get('kind', 'link')} {worst.get('link')}: "
                   f"configured {fmt(worst.get('configured_rtt_ms'))} ms, measured "
                   f"{fmt(worst.get('measured_rtt_ms'))} ms).")
    return out


def header(inputs, groups: list[Group]) -> list:
    runs = inputs.runs
    blocks: list = [("h", 1, "lblab report")]
    m = inputs.manifest
    if m:
        blocks.append(("p", f"Suite **{m.get('suite')}** (`{m.get('suite_run_id')}`), seed "
                            f"{m.get('seed')}, {m.get('repetitions')} repetition(s), status "
                            f"**{m.get('status')}**; started {m.get('started_utc')}, "
                            f"{fmt(m.get('duration_s'))} s."))
        rows = []
        for e in m.get("runs", []):
            rows.append([e.get("experiment", ""), str(e.get("repetition", 0)),
                         e.get("status", ""), fmt(e.get("duration_s")),
                         f"`{e['run_dir']}`" if e.get("run_dir") else "–",
                         e.get("error") or ""])
        blocks.append(("table", ["experiment", "rep", "status", "seconds", "run directory",
                                 "error"], rows))
    blocks.append(("p", f"Built from {len(runs)} run(s) of {len({r.experiment for r in runs})}"
                        f" experiment(s); every figure and table below comes from their "
                        f"`summary.csv`, `records.csv` and `metadata.json`."))
    facts = []
    mechs = _distinct(tuple(sorted((r.metadata.get("mechanisms") or {}).items()))
                      for r in runs)
    if len(mechs) == 1:
        facts.append("Mechanisms: " + mechanisms_line(dict(mechs[0])))
    else:
        for r in runs:
            facts.append(f"Mechanisms of {r.experiment} `{r.run_id}`: "
                         + mechanisms_line(r.metadata.get("mechanisms") or {}))
    machines = _distinct((r.metadata.get("kernel_release"), r.metadata.get("machine"),
                          r.metadata.get("cpus"), r.metadata.get("hostname")) for r in runs)
    for kernel, arch, cpus, host in machines:
        facts.append(f"Machine: kernel {kernel}, {arch}, {cpus} CPUs, host `{host}`")
    for commit, dirty in _distinct(((r.metadata.get("git") or {}).get("commit"),
                                    (r.metadata.get("git") or {}).get("dirty")) for r in runs):
        state = " (with uncommitted changes)" if dirty else ""
        facts.append(f"Code: git commit `{str(commit)[:12]}`{state}")
    versions = _distinct(tuple(sorted((r.metadata.get("versions") or {}).items()))
                         for r in runs)
    if len(versions) == 1 and versions[0]:
        facts.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions[0]))
    seeds = _distinct(r.metadata.get("seed") for r in runs)
    facts.append("Seeds: " + ", ".join(str(s) for s in seeds))
    blocks.append(("ul", facts))
    warnings = [w for r in runs for w in fidelity_warnings(r)]
    blocks.append(("h", 2, "Fidelity warnings"))
    blocks.append(("ul", warnings) if warnings else
                  ("p", "None: no run was CPU-starved, every WAN link had a delay mechanism, "
                        "no calibration was off by more than "
                        f"{core.CALIBRATION_MAX_ERROR_MS:g} ms."))
    if inputs.notes:
        blocks.append(("ul", inputs.notes))
    return blocks


def chapter(group: Group, fw: core.FigureWriter) -> list:
    exp = group.experiment
    title = exp + (f" — {group.label}" if group.label else "")
    blocks: list = [("h", 2, title)]
    claim = claim_of(exp, group.runs)
    blocks.append(("p", f"**Claim.** {claim}" if claim else "**Claim.** (not recorded)"))
    params = group.metadata.get("parameters") or {}
    size = "quick" if group.metadata.get("quick") else "full"
    scen = (group.metadata.get("scenario") or {}).get("name", "?")
    runs_text = ", ".join(f"`{r.run_id}`" for r in group.runs)
    blocks.append(("p", f"Runs: {runs_text} ({size} parameters, scenario `{scen}`; "
                        + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")."))
    render = renderers().get(exp)
    section = Section()
    if render is None:
        section.notes.append(f"No renderer for `{exp}`: claim and summary table only.")
    elif group.summary.empty:
        section.notes.append("No summary rows: nothing to draw.")
    else:
        try:
            section = render(group)
        except core.MissingColumns as exc:
            section.notes.append(f"Figures and reading not produced: {exc}.")
        except Exception as exc:
            section.notes.append(f"Renderer failed ({type(exc).__name__}: {exc}).")
    slug = exp + (f"-{group.runs[0].run_id[-4:]}" if group.label else "")
    for name, fig, caption in section.figures:
        blocks.append(("img", fw.save(fig, f"{slug}-{name}"), caption))
    if group.n_runs > 1:
        blocks.append(("p", f"Means over {group.n_runs} runs (seeds "
                            f"{', '.join(str(r.metadata.get('seed')) for r in group.runs)}); "
                            f"tables give mean ± half-width of the 95% confidence interval "
                            f"(Student t, n−1 degrees of freedom)."))
    starved = [r for r in group.runs if r.metadata.get("cpu_starved")]
    if starved and section.readings:
        lowest = min(r.metadata.get("min_cpu_idle_pct") or 0 for r in starved)
        section.readings.insert(0, f"WARNING: {len(starved)} of {group.n_runs} run(s) here "
                                   f"were CPU-starved (CPU idle down to {fmt(lowest)}%): "
                                   f"latencies and rates below include CPU queueing.")
    if section.readings:
        blocks.append(("h", 3, "Reading"))
        blocks.append(("ul", section.readings))
    blocks.append(("h", 3, "Summary"))
    cols, rows = core.summary_table(group)
    if cols:
        blocks.append(("table", cols, rows))
        if len(group.agg) > len(rows):
            blocks.append(("p", f"({len(group.agg) - len(rows)} more rows in summary.csv)"))
    else:
        blocks.append(("p", "summary.csv has no rows."))
    notes = list(section.notes) + [n for r in group.runs for n in r.notes]
    other = [f"{r.run_id}: {w}" for r in group.runs for w in r.metadata.get("warnings", [])
             if not w.startswith(("CPU idle", "calibration:", "link_delay is"))]
    if notes or other:
        blocks.append(("h", 3, "Notes"))
        blocks.append(("ul", notes + other))
    return blocks


def missing_chapters(inputs, groups) -> list[tuple[str, list]]:
    """Experiments the suite planned that produced no run (failed, interrupted, not run)."""
    if not inputs.manifest:
        return []
    have = {g.experiment for g in groups}
    out = []
    for entry in inputs.manifest.get("runs", []):
        exp = entry.get("experiment")
        if exp in have or entry.get("status") == "ok":
            continue
        have.add(exp)
        blocks = [("h", 2, exp)]
        claim = claim_of(exp, [])
        if claim:
            blocks.append(("p", f"**Claim.** {claim}"))
        blocks.append(("p", f"No results: {entry.get('status')}"
                            + (f" — {entry['error']}" if entry.get("error") else "") + "."))
        out.append((exp, blocks))
    return out


def build_report(paths, out_dir: Path | None = None) -> Path:
    """Build report.md, report.html and figures/; returns the path of report.md."""
    from experiments.suites import ORDER
    inputs = core.load_inputs([Path(p) for p in paths], out_dir)
    groups = core.group_runs(inputs.runs, ORDER)
    fw = core.FigureWriter(inputs.out_dir)
    blocks = header(inputs, groups)
    chapters = [(g.experiment, chapter(g, fw)) for g in groups]
    chapters += missing_chapters(inputs, groups)
    rank = {name: i for i, name in enumerate(ORDER)}
    chapters.sort(key=lambda c: (rank.get(c[0], len(rank)), c[0]))  # stable within one
    for _, part in chapters:
        blocks += part
    md_path = inputs.out_dir / "report.md"
    write_atomic_text(md_path, to_markdown(blocks))
    write_atomic_text(inputs.out_dir / "report.html", to_html(blocks, "lblab report"))
    return md_path
