"""`lblab report RUN_DIR...`: report.md + report.html + figures/*.png from run directories.

Where: in the suite directory when one is given (the first, if several), else in the parent
of the first run directory (results/<experiment>/), or in --out. The report carries no time
of its own making: building it twice from the same runs gives identical files.
"""
from __future__ import annotations

from pathlib import Path

from experiments import rundirs
from experiments.registry import find, suite_rank
from experiments.report import core
from experiments.report.core import Group, Section, fmt
from experiments.report.doc import to_html, to_markdown
from lab import fidelity
from topologies.state import write_atomic as write_atomic_text


def claim_of(experiment: str, runs) -> str:
    for run in runs:
        if run.metadata.get("claim"):
            return run.metadata["claim"]
    exp = find(experiment)  # runs made before metadata carried the claim
    return exp.claim if exp else ""


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
    """One line per fidelity problem of a run, from the flags its runner recorded."""
    m, flags = run.metadata, run.fidelity
    limits = {**fidelity.thresholds(), **(flags.get("thresholds") or {})}
    name = f"{run.experiment} `{run.run_id}`"
    out = []
    if flags.get("link_delay_none"):
        out.append(f"WARNING {name}: link delay mechanism `none`: configured WAN delays and "
                   f"loss were NOT applied; latencies are LAN latencies.")
    if flags.get("cpu_starved"):
        share = m.get("cpu_starved_share_pct")
        during = f" for {fmt(share)}% of the run" if share is not None else ""
        out.append(f"WARNING {name}: CPU-starved (CPU idle below "
                   f"{limits['cpu_starved_below_pct']:g}%{during}, lowest "
                   f"{fmt(m.get('min_cpu_idle_pct'))}%; mean idle "
                   f"{fmt(m.get('mean_cpu_idle_pct'))}%): latencies include CPU queueing.")
    bad = flags.get("calibration_off") or []
    if bad:
        measured = [p for p in bad if p.get("error_ms") is not None]
        worst = max(measured, key=lambda p: abs(float(p["error_ms"]))) if measured else bad[0]
        unmeasured = len(bad) - len(measured)
        what = f" ({unmeasured} not measured at all)" if unmeasured else ""
        out.append(f"WARNING {name}: calibration: {len(bad)} of "
                   f"{flags.get('calibration_paths', len(bad))} WAN paths off by more than "
                   f"{limits['rtt_tolerance_ms']:g} ms{what} (worst "
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
                        f"{fidelity.RTT_TOLERANCE_MS:g} ms."))
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
    facts = find(exp)
    render = facts.render if facts is not None and facts.renderer else None
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
    starved = [r for r in group.runs if r.fidelity.get("cpu_starved")]
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
    # the experiment's own warnings (fidelity flags are in the header, from `fidelity`)
    other = [f"{r.run_id}: {w}" for r in group.runs for w in r.metadata.get("warnings", [])]
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
    inputs = rundirs.load_inputs([Path(p) for p in paths], out_dir)
    groups = core.group_runs(inputs.runs)
    fw = core.FigureWriter(inputs.out_dir)
    blocks = header(inputs, groups)
    chapters = [(g.experiment, chapter(g, fw)) for g in groups]
    chapters += missing_chapters(inputs, groups)
    chapters.sort(key=lambda c: suite_rank(c[0]))  # stable within one experiment
    for _, part in chapters:
        blocks += part
    md_path = inputs.out_dir / "report.md"
    write_atomic_text(md_path, to_markdown(blocks))
    write_atomic_text(inputs.out_dir / "report.html", to_html(blocks, "lblab report"))
    return md_path
