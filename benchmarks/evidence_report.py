"""``benchmarks/RESULTS.md`` and its plots, generated from ``benchmarks/results.json`` alone.

    python -m benchmarks.evidence --report     # rewrite RESULTS.md from results.json

Every sentence that compares two arms uses the race's words ("beats" only when the paired interval
clears zero, "is within noise of" otherwise) and gives the interval with its number of pairs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Series, machine_line, md_table, save_plot

ARM_LABELS = {
    "student_only": "student alone",
    "direct_strongest": "direct KD from the strongest teacher",
    "weak_to_strong": "teachers weak→strong",
    "heuristic": "adaptation-cost heuristic order",
}
GOAL_LABELS = {
    "kd_gain_at_least_5_paired_sd": "task has signal: a KD gain over the student alone ≥ 5 × the sd of its paired difference",
    "never_worse_than_best_baseline": "pick never worse than the best baseline (mean ≥ 0, lower bound ≥ −1 seed sd)",
    "harm_rate_at_most_10pct": "harm rate ≤ 10%",
    "beats_best_baseline_by_0.01": "pick beats the best baseline by ≥ 0.01 AP, interval excluding 0",
    "kendall_tau_with_interval": "Kendall τ reported with its interval",
}


def _f(x: float | None, digits: int = 4, sign: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _iv(iv: Sequence[float] | None, digits: int = 4) -> str:
    return f"[{iv[0]:+.{digits}f}, {iv[1]:+.{digits}f}]" if iv else "[n/a]"


def _delta(d: Mapping[str, Any] | None) -> str:
    """``+0.0123 [+0.0050, +0.0196] (n=3)``."""
    if not d or d.get("mean") is None:
        return "—"
    return f"{d['mean']:+.4f} {_iv(d.get('interval'))} (n={d.get('n')})"


def _words(d: Mapping[str, Any] | None) -> str:
    """The race's words for a paired difference; "is identical to" when every pair was the same
    run (the pick *is* that curriculum on those seeds: a zero-width interval at 0 is no noise
    statement)."""
    if not d:
        return ""
    if d.get("mean") == 0 and list(d.get("interval") or [None]) == [0, 0]:
        return "is identical to"
    return str(d.get("words", ""))


def _call_line(call: Mapping[str, Any]) -> str:
    """One call of the benchmark: its command, machine, wall time, load and conditions."""
    if call.get("earlier"):
        return "an earlier call, not recorded (measured before tasks carried their call)"
    line = (
        f"`{call.get('command', 'python -m benchmarks.evidence')}` on {machine_line(call.get('machine') or {})}; "
        f"{call.get('wall_s_this_call', 0) / 60:.0f} min for its tasks; 1-min load average at the end "
        f"{call.get('load_average_end')}."
    )
    return line + (f" Conditions: {call['conditions']}" if call.get("conditions") else "")


def _yes(v: bool | None) -> str:
    return "not measured" if v is None else ("**met**" if v else "**not met**")


def _plot_md(files: Any, report_dir: Path, title: str) -> str:
    parts = []
    if files.png:
        parts.append(f"![{title}]({os.path.relpath(files.png, report_dir)})")
    if files.html:
        parts.append(f"[interactive]({os.path.relpath(files.html, report_dir)})")
    if files.note:
        parts.append(f"({files.note})")
    return " ".join(parts)


def _fidelity_plot(task: str, fid: Mapping[str, Any], plots: Path) -> Any:
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for c in fid.get("curricula", []):
        by_kind.setdefault(c["kind"], []).append(c)
    series = []
    for kind, cs in by_kind.items():
        err = [
            (sum((v - c["full_mean"]) ** 2 for v in c["full_ap"]) / max(1, len(c["full_ap"]) - 1)) ** 0.5
            for c in cs
        ]
        series.append(Series(kind, [c["proxy_mean"] for c in cs], [c["full_mean"] for c in cs], err))
    tau = fid.get("kendall_tau_b")
    return save_plot(
        f"evidence_{task}_fidelity",
        "scatter",
        f"{task}: proxy vs full-length AP per curriculum (τ_b {_f(tau, 2)}; bars: full-length seed sd)",
        f"mean proxy AP ({fid.get('seeds')} seeds, selection split, proxy subset)",
        f"mean full-length AP ({fid.get('seeds')} seeds, report split)",
        series,
        plots,
    )


def _arms_plot(task: str, tr: Mapping[str, Any], plots: Path) -> Any:
    pipe = tr["pipeline"]
    labels, means, errs = [], [], []
    for b, v in tr.get("baseline_ap", {}).items():
        vals = list(v["per_seed"].values())
        labels.append(ARM_LABELS.get(b, b))
        means.append(v["mean"])
        errs.append(_sd(vals))
    for name, field in (("random search (equal compute)", "random_pick_ap"), ("pipeline pick", "pick_ap")):
        vals = [x for r in pipe["per_repeat"] for x in r[field]]
        labels.append(name)
        means.append(sum(vals) / len(vals))
        errs.append(_sd(vals))
    return save_plot(
        f"evidence_{task}_arms",
        "bar",
        f"{task}: held-out AP at full length (mean ± sd over the race seeds of every repeat)",
        "arm",
        "AP (report split)",
        [Series("AP", labels, means, errs)],
        plots,
    )


def _sd(v: Sequence[float]) -> float:
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return float((sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5)


def task_section(task: str, tr: Mapping[str, Any], report_dir: Path, plots: Path) -> list[str]:
    sp = tr.get("space", {})
    lines = [f"## Task `{task}`", ""]
    lines.append(
        f"Space `{tr.get('space_file')}`: {sp.get('student')} student at {sp.get('image_size')} px; proxy "
        f"{sp.get('proxy_iterations')} iterations, full length {sp.get('full_iterations')}; "
        f"{sp.get('trials')} trials per search; the race on {sp.get('race_seeds')} seeds."
    )
    call = tr.get("call") or {}
    if call and not call.get("earlier"):
        lines += [
            "",
            f"Measured at code {tr.get('code', '?')} by the call started "
            f"{(call.get('machine') or {}).get('date', '?')} (see the calls at the top).",
        ]
    if tr.get("design"):
        lines += ["", f"**How it was designed.** {tr['design']}"]
    if not tr.get("complete"):
        lines += ["", "**Partial: this task did not finish; the figures below are what had run.**"]
    if tr.get("stale"):
        lines += [
            "",
            f"**Measured before a change to what it tests** (code {tr.get('code', 'before records named it')}): "
            f"{tr['stale']} Not counted in the goals; `python -m benchmarks.evidence --tasks {task}` "
            "measures it again.",
        ]
    teachers = tr.get("teachers") or []
    if teachers:
        lines += [
            "",
            md_table(
                ["teacher", "model", "AP (selection split)", "params", "GFLOPs"],
                [
                    [
                        t["name"],
                        t["label"],
                        _f(t.get("ap_selection_split"), 3),
                        f"{t['params'] / 1e6:.1f} M" if t.get("params") else "—",
                        _f(t.get("gflops"), 2),
                    ]
                    for t in teachers
                ],
            ),
        ]
    kd = tr.get("kd_gain_over_student_alone") or {}
    if kd:
        lines += [
            "",
            "**What distillation buys here** (baselines vs the student alone, full length, paired seeds):",
            "",
        ]
        lines.append(
            md_table(
                [
                    "curriculum",
                    "difference to the student alone",
                    "mean / sd of the paired difference",
                    "words",
                ],
                [
                    [ARM_LABELS.get(b, b), _delta(d), _f(d.get("ratio_mean_to_sd"), 1), d.get("words", "")]
                    for b, d in kd.items()
                ],
            )
        )
    bg = (tr.get("headline") or {}).get("best_curriculum_vs_student_alone")
    if bg:
        lines += [
            "",
            f"The best curriculum at full length among the fidelity set ({bg['curriculum']}) against the "
            f"student alone: {_delta(bg)}, mean / sd of the paired difference "
            f"{_f(bg.get('ratio_mean_to_sd'), 1)}.",
        ]
    pipe = tr.get("pipeline")
    if pipe:
        best = pipe["best_baseline"]
        lines += [
            "",
            f"### The pipeline against every baseline ({len(pipe['per_repeat'])} repeats)",
            "",
            "Each repeat is the whole `run` (search → selection → shipped student) with its own seed; its "
            "pick is scored on the report split on the seeds its race used, paired with every arm trained "
            "on those seeds. Differences are the mean over repeats of each repeat's mean paired "
            f"difference, with a {int(100 * tr['settings']['confidence'])}% t interval over the repeats.",
            "",
        ]
        rows = []
        for b, v in tr.get("baseline_ap", {}).items():
            rows.append(
                [
                    ARM_LABELS.get(b, b) + (" (best baseline)" if b == best else ""),
                    _f(v["mean"]),
                    _delta(pipe["vs_baseline"].get(b)),
                    _words(pipe["vs_baseline"].get(b)),
                ]
            )
        rows.append(
            [
                "random search at equal compute",
                _f(pipe.get("random_pick_ap_mean")),
                _delta(pipe.get("pick_vs_random")),
                (pipe.get("pick_vs_random") or {}).get("words", ""),
            ]
        )
        rows.append(["**the pipeline's pick**", _f(pipe.get("pick_ap_mean")), "", ""])
        lines.append(md_table(["arm", "AP (report split, mean)", "pick − arm", "the pick ..."], rows))
        d = pipe["vs_best_baseline"]
        lines += [
            "",
            f"Pick vs the best baseline ({ARM_LABELS.get(best, best)}): {_delta(d)}; the pick "
            f"{_words(d)} it. Harm rate (repeats whose pick is worse than the best baseline "
            f"beyond its paired interval): {pipe['harm_rate']:.0%}. Seed sd at full length: "
            f"{_f(tr.get('seed_std'))}. Random search at equal compute vs the best baseline: "
            f"{_delta(pipe.get('random_vs_best_baseline'))}.",
            "",
            md_table(
                [
                    "repeat (seed)",
                    "pick",
                    "pick AP per seed",
                    "vs best baseline",
                    "vs random search",
                    "compute (full runs)",
                    "harm",
                ],
                [
                    [
                        r["seed"],
                        r["winner_description"],
                        ", ".join(f"{x:.4f}" for x in r["pick_ap"]),
                        f"{_delta(r['vs_best_baseline'])} {_words(r['vs_best_baseline'])}",
                        _delta(r["pick_vs_random"]),
                        f"{r['compute_full_runs']:.1f} (random: {r['random_compute_full_runs']:.1f})",
                        "yes" if r["harm"] else "no",
                    ]
                    for r in pipe["per_repeat"]
                ],
            ),
            "",
            f"Compute of search + selection: {pipe['compute_full_runs_mean']:.1f} full-run equivalents per "
            "repeat (student iterations trained / full-length iterations; teacher forward passes not counted).",
        ]
        checks = [
            r["pairing_check_max_abs_diff"] for r in pipe["per_repeat"] if "pairing_check_max_abs_diff" in r
        ]
        if checks:
            lines.append(
                f"Pairing check: the race's student-alone runs and this benchmark's, same seeds, differ by at "
                f"most {max(checks):.4f} AP on the report split."
            )
        if tr.get("runs_reused_from_races"):
            lines.append(
                f"{tr['runs_reused_from_races']} of the full-length runs above are the races' own runs of the "
                "same recipe and seed (read back, not trained again)."
            )
        lines += ["", _plot_md(_arms_plot(task, tr, plots), report_dir, f"{task} arms")]
    fid = tr.get("fidelity")
    if fid:
        lines += [
            "",
            f"### Proxy fidelity ({fid['n_curricula']} curricula × {fid['seeds']} seeds, proxy and full length)",
            "",
            md_table(
                ["figure", "value"],
                [
                    [
                        "Kendall τ_b (mean proxy AP vs mean full AP)",
                        f"{_f(fid['kendall_tau_b'], 2)} {_iv(fid['kendall_tau_b_interval'], 2)}",
                    ],
                    ["Spearman ρ", f"{_f(fid['spearman_rho'], 2)} {_iv(fid['spearman_rho_interval'], 2)}"],
                    [
                        "noise ceiling (τ_b between halves of the full-length seeds)",
                        _f(fid["noise_ceiling_tau_b"], 2),
                    ],
                    ["P(proxy's best is the full-length best), bootstrap over seeds", f"{fid['p_best']:.2f}"],
                    ["proxy's pick is the observed full-length best", "yes" if fid["pick_is_best"] else "no"],
                    [
                        "regret of the proxy's pick (best full AP − pick's)",
                        f"{fid['regret']:.4f} (bootstrap {fid['regret_bootstrap_mean']:.4f} {_iv(fid['regret_interval'])})",
                    ],
                    ["seed sd: proxy / full", f"{_f(fid['proxy_seed_std'])} / {_f(fid['full_seed_std'])}"],
                ],
            ),
            "",
            f"Intervals: {int(100 * fid['confidence'])}% percentile bootstrap over curricula (τ, ρ) or seeds (regret).",
            "",
            md_table(
                ["curriculum", "kind", "proxy AP per seed", "full AP per seed", "proxy mean", "full mean"],
                [
                    [
                        tr["curricula"][c["key"]]["description"]
                        if c["key"] in tr.get("curricula", {})
                        else c["label"],
                        c["label"],
                        ", ".join(f"{x:.3f}" for x in c["proxy_ap"]),
                        ", ".join(f"{x:.3f}" for x in c["full_ap"]),
                        f"{c['proxy_mean']:.4f}",
                        f"{c['full_mean']:.4f}",
                    ]
                    for c in sorted(fid["curricula"], key=lambda c: -c["full_mean"])
                ],
            ),
            "",
            _plot_md(_fidelity_plot(task, fid, plots), report_dir, f"{task} fidelity"),
        ]
    t = tr.get("timings_s") or {}
    if t:
        lines += [
            "",
            "Wall time (s): " + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in t.items()) + ".",
        ]
    return lines


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``<out_dir>/RESULTS.md`` and ``<out_dir>/plots/evidence_*`` from ``results``."""
    from curriculum_search.utils.io import atomic_write_text

    path = out_dir / "RESULTS.md"
    plots = out_dir / "plots"
    st = results.get("settings") or {}
    lines = [
        "# Benchmark results: what the whole pipeline buys",
        "",
        "_Generated by `python -m benchmarks.evidence` from `benchmarks/results.json` (`python -m "
        "benchmarks.evidence --report` rewrites this file from it; do not edit by hand). Every figure was "
        "measured on the machine named with its call below; nothing is extrapolated._",
        "",
        f"Settings: {st.get('reps')} pipeline repeats, {st.get('seeds')} seeds per curriculum, ≥ "
        f"{st.get('curricula')} curricula for fidelity, {st.get('workers')} processes of 1 thread, "
        f"{int(100 * st.get('confidence', 0.9))}% intervals.",
        "",
        "Measured in these calls (a task rerun alone with `--tasks NAME` is its own call):",
        "",
    ]
    calls: dict[str, list[str]] = {}
    for t, tr in (results.get("tasks") or {}).items():
        calls.setdefault(_call_line(tr.get("call") or results), []).append(f"`{t}`")
    lines += [f"- {', '.join(ts)}: {line}" for line, ts in calls.items()] + [""]
    heads = {t: tr["headline"] for t, tr in (results.get("tasks") or {}).items() if tr.get("headline")}
    if heads:
        lines += ["## Headline", ""]
        lines.append(
            md_table(
                [
                    "task",
                    "student alone",
                    "best baseline",
                    "random search (equal compute)",
                    "pipeline's pick",
                    "pick − best baseline",
                    "harm rate",
                    "Kendall τ_b proxy→full (ceiling)",
                    "search + selection (full runs)",
                ],
                [
                    [
                        f"`{t}`"
                        + (
                            " (stale: measured before a change, see its section)"
                            if results["tasks"][t].get("stale")
                            else ""
                        ),
                        _f(h["student_alone_ap"]),
                        f"{_f(h['baseline_ap'][h['best_baseline']])} ({ARM_LABELS.get(h['best_baseline'], h['best_baseline'])})",
                        _f(h["random_search_equal_compute_ap"]),
                        _f(h["pick_ap"]),
                        f"{_delta(h['pick_minus_best_baseline'])}: {_words(h['pick_minus_best_baseline'])}",
                        f"{h['harm_rate']:.0%}",
                        f"{_f(h['kendall_tau_b'], 2)} {_iv(h['kendall_tau_b_interval'], 2)} ({_f(h['noise_ceiling_tau_b'], 2)})",
                        f"{h['compute_full_runs_per_pipeline']:.1f}",
                    ]
                    for t, h in heads.items()
                ],
            )
        )
        lines += [
            "",
            "AP: COCO AP on the held-out report split at full length, mean over the race seeds of every "
            'repeat. "pick − best baseline": mean over repeats of each repeat\'s paired difference to '
            "the baseline that is best in hindsight on the report split (the hardest comparison), with "
            'its t interval over repeats; "beats" only when the interval excludes zero.',
            "",
        ]
    g = results.get("goals") or {}
    if g.get("per_task"):
        names = list(g["per_task"])
        lines += ["## Goals", ""]
        lines.append(
            md_table(
                ["goal", *names],
                [
                    [label, *[_yes(g["per_task"][n].get(key)) for n in names]]
                    for key, label in GOAL_LABELS.items()
                ],
            )
        )
        lines.append("")
    for task, tr in (results.get("tasks") or {}).items():
        lines += [*task_section(task, tr, out_dir, plots), ""]
    gpu = results.get("gpu_smoke")
    lines += ["## GPU readiness", ""]
    lines.append(
        gpu.get("summary", "")
        if isinstance(gpu, dict)
        else "Not run here: no GPU was lent to the sessions that produced these results. "
        "`python -m benchmarks.gpu_smoke` runs it on one CUDA GPU."
    )
    lines += [
        "",
        "## Component benchmarks",
        "",
        "Step overhead, search cost, scaling and dashboard render time: [PARTS.md](PARTS.md) "
        "(`python -m benchmarks`; its figures predate the selection stage and the current default).",
    ]
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


__all__ = ["task_section", "write_report"]
