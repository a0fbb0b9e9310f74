"""What a search costs: best-found AP vs compute per search strategy, trials/hour with/without cache.

    python -m benchmarks.search_cost [--size ci|cpu|gpu] [--tasks default_small] [--throughput-trials K]

1. **Best-found AP vs compute.** Three studies of the same space and trial count, run with the
   library's ``run_search``: TPE + median pruning with the baselines first (the default search,
   shared with ``quality``), TPE without pruning with the baselines first, and random search
   (random sampler, no pruning, no baselines; shared with ``quality``). From each study's trials,
   in completion order: cumulative trial-iterations (the proxy iterations each trial actually
   trained: a pruned trial counts up to its pruning step, a reused identical curriculum 0) and
   cumulative trial wall time, against the best proxy AP found so far. Plotted.
2. **Trials/hour with and without the teacher-output cache.** Two more studies with the same
   ``K`` random-sampler trials (same sampler seed, hence the same curricula; no pruning, no
   baselines): one with the teacher-output cache on, starting empty (its own folder, so its first
   trials fill it), one with the cache off. Trials/hour = trials / the time during which some trial
   was running (union of the trials' start–end intervals: process start-up of every trial
   included, idle gaps of an interrupted and resumed study excluded).

Writes ``benchmarks/out/<size>/search_cost.json`` and plots.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Series,
    add_common_args,
    ensure_study,
    fmt_range,
    machine_info,
    machine_line,
    md_table,
    resolve_threads,
    save_plot,
    setup_logging,
    size_dir,
    studies_root,
    summarize,
    task_space,
    teacher_cache,
    trial_rows,
    write_result,
)

STRATEGIES = (
    ("tpe", "TPE + median pruning (default)"),
    ("tpe_nopruning", "TPE, no pruning"),
    ("random", "random search"),
)
THROUGHPUT_TRIALS = {"ci": 2, "cpu": 4, "gpu": 8}
DEFAULT_TASKS = {"ci": "default_small", "cpu": "default_small", "gpu": "default_small,shapes_hard"}


def curve(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Cumulative iterations / wall seconds and best-so-far AP after each finished trial."""
    its, wall, best = [], [], []
    ci = cw = 0.0
    b = float("nan")
    for r in rows:
        ci += r["iterations"]
        cw += r["wall_s"]
        if r["state"] == "complete" and r["value"] is not None and not (r["value"] <= b):
            b = float(r["value"])
        its.append(ci)
        wall.append(round(cw, 1))
        best.append(b)
    return {"iterations": its, "wall_s": wall, "best_ap": best}


def busy_span(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end]`` intervals: time during which some trial was running
    (idle gaps, e.g. while an interrupted study waited to be resumed, do not count)."""
    total, cur_start, cur_end = 0.0, None, None
    for a, b in sorted(intervals):
        if cur_end is None or a > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total


def throughput(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Trials/hour over the time some trial was running (union of the trials' start–end intervals,
    so parallel workers overlap and idle gaps do not count) and per-trial figures."""
    ran = [r for r in rows if not r["reused"] and r["start"] is not None and r["complete"] is not None]
    if not ran:
        return {"trials": 0}
    span = busy_span([(r["start"], r["complete"]) for r in ran])
    return {
        "trials": len(ran),
        "span_s": round(span, 1),
        "trials_per_hour": round(3600 * len(ran) / span, 2) if span > 0 else None,
        "trial_wall_s": summarize(r["wall_s"] for r in ran),
        "teacher_forwards": [r["teacher_forwards"] for r in ran],
    }


def throughput_study(
    task: str,
    size: str,
    out: Path,
    label: str,
    trials: int,
    *,
    cache_on: bool,
    workers: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run (or reopen) the K-trial random-sampler throughput study ``<task>-thr-<label>``."""
    root = studies_root(size, out)
    space = task_space(task, size)
    name = f"{space.name}-thr-{label}"
    sub = f"teachers-thr-{label}"
    if not (root / name).is_dir():  # a new study starts with an empty cache of its own
        shutil.rmtree(root / "_cache" / sub, ignore_errors=True)
    cache = teacher_cache(root, enabled=cache_on, sub=sub)
    sr = ensure_study(
        task,
        size,
        "random",
        out_dir=out,
        trials=trials,
        workers=workers,
        cache=cache,
        name=name,
        threads=threads,
    )
    rows = trial_rows(sr.trials)
    return {
        "study": name,
        "cache": cache_on,
        "workers": workers,
        "threads": threads,
        "wall_s_this_call": round(sr.wall_s, 1),
        "resumed": sr.resumed,
        **throughput(rows),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    resolve_threads(args)
    out = Path(args.out)
    tasks = (args.tasks or DEFAULT_TASKS[args.size]).split(",")
    k = args.throughput_trials or THROUGHPUT_TRIALS[args.size]
    rdir = size_dir(args.size, out)
    result: dict[str, Any] = {
        "part": "search_cost",
        "size": args.size,
        "machine": machine_info(),
        "threads": args.threads,
        "tasks": {},
    }
    print(f"machine: {machine_line(result['machine'])}", flush=True)
    t0 = time.perf_counter()
    for task in tasks:
        tr: dict[str, Any] = {"strategies": {}}
        result["tasks"][task] = tr
        for variant, label in STRATEGIES:
            sr = ensure_study(task, args.size, variant, out_dir=out, threads=args.threads)
            rows = trial_rows(sr.trials)
            tr["strategies"][variant] = {
                "label": label,
                "study": sr.name,
                "trials": rows,
                "curve": curve(rows),
                "total_iterations": sum(r["iterations"] for r in rows),
                "total_trial_wall_s": round(sum(r["wall_s"] for r in rows), 1),
                "pruned": sum(1 for r in rows if r["state"] == "pruned"),
                "reused": sum(1 for r in rows if r["reused"]),
                "best_ap": max((r["value"] for r in rows if r["state"] == "complete"), default=None),
            }
            result["wall_s"] = round(time.perf_counter() - t0, 1)
            write_result("search_cost", result, rdir)
        tr["throughput"] = {
            "cache": throughput_study(task, args.size, out, "cache", k, cache_on=True, threads=args.threads),
        }
        write_result("search_cost", result, rdir)
        tr["throughput"]["nocache"] = throughput_study(
            task, args.size, out, "nocache", k, cache_on=False, threads=args.threads
        )
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        write_result("search_cost", result, rdir)
        tr["plots"] = _plots(task, tr, rdir)
    result["complete"] = True
    write_result("search_cost", result, rdir)
    print(markdown(result), flush=True)
    return result


def _plots(task: str, tr: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    out = {}
    for axis, xlabel in (
        ("iterations", "cumulative trial-iterations"),
        ("wall_s", "cumulative trial wall time (s)"),
    ):
        series = [
            Series(s["label"], s["curve"][axis], s["curve"]["best_ap"], step=True)
            for s in tr["strategies"].values()
        ]
        files = save_plot(
            f"search_cost_{task}_{axis}",
            "line",
            f"{task}: best proxy AP found vs compute",
            xlabel,
            "best proxy AP so far",
            series,
            out_dir,
        )
        out[axis] = {"html": files.html, "png": files.png, "note": files.note}
    return out


def _at_fraction(curve_: dict[str, list[float]], budget: float) -> float | None:
    """Best AP found within ``budget`` trial-iterations (``None`` before the first completed trial)."""
    best = None
    for its, ap in zip(curve_["iterations"], curve_["best_ap"]):
        if its <= budget and ap == ap:
            best = ap
    return best


def headline(result: dict[str, Any]) -> list[str]:
    out = []
    for task, tr in result.get("tasks", {}).items():
        st = tr.get("strategies", {})
        if "tpe" in st and "random" in st:
            a, b = st["tpe"], st["random"]
            budget = min(a["total_iterations"], b["total_iterations"])
            ba, bb = _at_fraction(a["curve"], budget), _at_fraction(b["curve"], budget)
            if ba is not None and bb is not None:
                out.append(
                    f"{task}: within {budget:.0f} trial-iterations, TPE + pruning found proxy AP {ba:.3f} "
                    f"vs {bb:.3f} for random search (single search run each: no error bars)."
                )
        thr = tr.get("throughput", {})
        c, n = thr.get("cache", {}), thr.get("nocache", {})
        if c.get("trials_per_hour") and n.get("trials_per_hour"):
            out.append(
                f"{task}: {c['trials_per_hour']:.1f} trials/hour with the teacher-output cache vs "
                f"{n['trials_per_hour']:.1f} without ({c['trials_per_hour'] / n['trials_per_hour']:.2f}×, "
                f"{c['trials']} trials each, one run)."
            )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = []
    if not result.get("complete"):
        lines.append("**Partial results: this part did not finish.**\n")
    for task, tr in result.get("tasks", {}).items():
        lines.append(f"#### {task}\n")
        rows = []
        for s in tr.get("strategies", {}).values():
            rows.append(
                [
                    s["label"],
                    len(s["trials"]),
                    s["pruned"],
                    s["reused"],
                    s["total_iterations"],
                    f"{s['total_trial_wall_s']:.0f}",
                    f"{s['best_ap']:.3f}" if s["best_ap"] is not None else "—",
                ]
            )
        if rows:
            lines.append(
                md_table(
                    [
                        "strategy",
                        "trials",
                        "pruned",
                        "reused",
                        "trial-iterations",
                        "trial wall s",
                        "best proxy AP",
                    ],
                    rows,
                )
            )
        thr = tr.get("throughput", {})
        if thr:
            lines.append("")
            lines.append(
                md_table(
                    [
                        "teacher-output cache",
                        "trials",
                        "span s",
                        "trials/hour",
                        "trial wall s (median, min–max)",
                    ],
                    [
                        [
                            "on (starts empty)" if v.get("cache") else "off",
                            v.get("trials", 0),
                            v.get("span_s", "—"),
                            v.get("trials_per_hour", "—"),
                            fmt_range(v["trial_wall_s"], 0) if v.get("trial_wall_s") else "—",
                        ]
                        for v in thr.values()
                    ],
                )
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_cost", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--tasks", default=None, help="comma list of tasks (default: default_small; gpu: both)")
    p.add_argument("--throughput-trials", type=int, default=None, help="trials of each throughput study")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["busy_span", "curve", "headline", "markdown", "run", "throughput", "throughput_study"]
