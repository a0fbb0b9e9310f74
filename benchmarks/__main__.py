"""Run the component benchmarks and (re)write ``benchmarks/PARTS.md``.

(The headline evidence — the whole pipeline against every baseline, proxy fidelity — is
``python -m benchmarks.evidence``, which writes ``benchmarks/results.json`` and ``RESULTS.md``.)

    python -m benchmarks [--size ci|cpu|gpu] [--only step_overhead,quality,search_cost,scaling,dashboard_render]
    python -m benchmarks --only report      # only rewrite PARTS.md from the saved results
    python -m benchmarks --size gpu-smoke   # the GPU readiness check instead (benchmarks/gpu_smoke.py)

Each part writes ``benchmarks/out/<size>/<part>.json``; after every part the report is rewritten
from all saved results of that size, so an interrupted suite still leaves a report of what ran
(parts without results are listed as not run, unfinished parts are labelled partial). ``--size
cpu`` and ``gpu`` write ``benchmarks/PARTS.md`` and copy the plots to ``benchmarks/plots/``;
``--size ci`` (a plumbing check whose numbers mean nothing) writes ``benchmarks/out/ci/PARTS.md``.
A ``benchmarks/out/<size>/NOTES.md`` written by whoever ran the suite (e.g. "the CPU was shared
with ...") is copied into the report under "Conditions of this run".
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks import PARTS
from benchmarks.common import (
    BENCH_DIR,
    DEFAULT_SIZE,
    OUT_DIR,
    SIZES,
    copy_plot,
    machine_line,
    read_result,
    setup_logging,
    size_dir,
    write_result,
)

log = logging.getLogger("benchmarks")

TITLES = {
    "step_overhead": "Step overhead: distillation step vs plain student step (issue 3)",
    "quality": "Quality: final student AP of baselines, random search and the default search (issue 6)",
    "search_cost": "Search cost: best-found AP vs compute; trials/hour with and without the cache",
    "scaling": "Scaling: trials/hour with 1 vs 2 workers; device use of one proxy trial",
    "dashboard_render": "Dashboard: render time of a generated study (issue 13)",
}
COMMANDS = {
    "step_overhead": "python -m benchmarks.step_overhead",
    "quality": "python -m benchmarks.quality",
    "search_cost": "python -m benchmarks.search_cost",
    "scaling": "python -m benchmarks.scaling",
    "dashboard_render": "python -m benchmarks.dashboard_render",
}


def _module(part: str) -> Any:
    return importlib.import_module(f"benchmarks.{part}")


def run_part(part: str, size: str, out: Path, threads: int | None = None) -> None:
    """Run one part with its default settings for ``size``; a failure is recorded, not raised."""
    mod = _module(part)
    argv = ["--size", size, "--out", str(out)] + (["--threads", str(threads)] if threads else [])
    args = mod.build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        mod.run(args)
    except Exception as exc:  # keep going: the report says which part failed and why
        traceback.print_exc()
        failure: dict[str, Any] = {
            "part": part,
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
            "after_s": round(time.perf_counter() - t0, 1),
        }
        write_result(f"{part}.error", failure, size_dir(size, out))
        return
    (size_dir(size, out) / f"{part}.error.json").unlink(missing_ok=True)


def _plot_links(plot: dict[str, Any] | None, copy: bool, title: str, report: Path) -> str:
    if not plot:
        return ""
    from benchmarks.common import PlotFiles

    files = PlotFiles(plot.get("html"), plot.get("png"), plot.get("note", ""))
    placed = copy_plot(files) if copy else {k: v for k, v in (("html", files.html), ("png", files.png)) if v}
    rel = {k: os.path.relpath(BENCH_DIR / v, report.parent) for k, v in placed.items()}
    parts = []
    if "png" in rel:
        parts.append(f"![{title}]({rel['png']})")
    if "html" in rel:
        parts.append(f"[interactive plot]({rel['html']})")
    if files.note:
        parts.append(f"({files.note})")
    return "\n\n" + " ".join(parts) if parts else ""


def _plots_of(part: str, res: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if part == "step_overhead":
        return [("step overhead", res.get("plot") or {})]
    if part == "quality":
        plots = res.get("plots") or {}
        if not plots:  # partial result: plot what is there
            from benchmarks.quality import _plot

            rdir = size_dir(res.get("size", DEFAULT_SIZE), OUT_DIR)
            plots = {t: _plot(tr, rdir) for t, tr in res.get("tasks", {}).items() if tr.get("rows")}
        return [(f"quality {t}", p) for t, p in plots.items()]
    if part == "search_cost":
        out = []
        for task, tr in res.get("tasks", {}).items():
            for axis, p in (tr.get("plots") or {}).items():
                out.append((f"search cost {task} ({axis})", p))
        return out
    return []


def write_report(size: str, out: Path = OUT_DIR, path: Path | None = None) -> Path:
    """Rewrite the report of ``size`` from the saved results; returns its path."""
    from curriculum_search.utils.io import atomic_write_text

    rdir = size_dir(size, out)
    copy = size != "ci"
    path = path or (BENCH_DIR / "PARTS.md" if copy else rdir / "PARTS.md")
    results = {p: read_result(p, rdir) for p in PARTS}
    errors = {p: read_result(f"{p}.error", rdir) for p in PARTS}
    lines = [
        "# Component benchmarks",
        "",
        "_The headline evidence (the whole pipeline against every baseline, proxy fidelity) is in "
        "[RESULTS.md](RESULTS.md); this file covers the components: step overhead, search cost, "
        "scaling, dashboard render time._",
        "",
        f"_Written by `python -m benchmarks --size {size}` from `benchmarks/out/{size}/*.json`; rerun it to "
        "update (do not edit by hand). Every figure below was measured, on the machine named with it; "
        "nothing is extrapolated._",
        "",
    ]
    if size == "ci":
        lines += [
            "**Size `ci`: a plumbing check with tiny models and budgets; the numbers mean nothing.**",
            "",
        ]
    machines = {p: r["machine"] for p, r in results.items() if r and r.get("machine")}
    if machines:
        first = next(iter(machines.values()))
        lines += [f"Machine: {machine_line(first)}.", ""]
        lines.append(
            "The CPU is shared with other work: timings are quoted as medians and as ratios measured side "
            "by side in one run; each part names its own start time and load average below."
        )
        lines.append("")
    notes = rdir / "NOTES.md"  # conditions of the run worth knowing (written by whoever ran it)
    if notes.is_file():
        lines += ["## Conditions of this run", "", notes.read_text().strip(), ""]
    lines += ["## Headline", ""]
    heads = []
    for p in PARTS:
        r = results[p]
        if r is None:
            continue
        try:
            h = _module(p).headline(r)
        except Exception as exc:  # a malformed/partial result must not break the report
            h = [f"{p}: could not summarise ({type(exc).__name__})"]
        tag = "" if r.get("complete", True) else " (partial)"
        heads += [f"- {x}{tag}" for x in h]
    lines += heads or ["- No results yet."]
    missing = [p for p in PARTS if results[p] is None]
    partial = [p for p, r in results.items() if r is not None and not r.get("complete", True)]
    if missing or partial or any(errors.values()):
        lines += ["", "Not run or not finished at this size:"]
        for p in PARTS:
            e = errors[p]
            if e:
                lines.append(f"- `{p}` failed after {e.get('after_s')} s: {e.get('error')}")
            elif p in missing:
                lines.append(f"- `{p}` has no saved result (not run, or still before its first save).")
            elif p in partial:
                lines.append(f"- `{p}` is partial (interrupted or still running); see its section.")
    for i, p in enumerate(PARTS, 1):
        lines += ["", f"## {i}. {TITLES[p]}", ""]
        lines.append(f"Reproduce: `{COMMANDS[p]} --size {size}` (details: the module docstring).")
        r = results[p]
        if r is None:
            lines += ["", "_Not run at this size._"]
            continue
        lines += ["", f"Measured on: {machine_line(r['machine'])}; wall time {r.get('wall_s', '?')} s.", ""]
        try:
            lines.append(_module(p).markdown(r))
        except Exception as exc:
            lines.append(f"_Could not render ({type(exc).__name__}: {exc})._")
        for title, plot in _plots_of(p, r):
            lines.append(_plot_links(plot, copy, title, path))
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    log.info("wrote %s", path)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--size",
        choices=(*SIZES, "gpu-smoke"),
        default=DEFAULT_SIZE,
        help="benchmark size (default: %(default)s); gpu-smoke runs the GPU readiness check "
        "(python -m benchmarks.gpu_smoke) instead of the suite",
    )
    p.add_argument(
        "--only",
        default=None,
        help=f"comma list among {','.join(PARTS)},report (default: all parts, then the report)",
    )
    p.add_argument("--out", type=Path, default=OUT_DIR, help="results folder (default: benchmarks/out)")
    p.add_argument("--results", type=Path, default=None, help="report path (default: see above)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per training process, passed to every part (default: 1 for sizes ci and "
        "cpu, where independent runs go side by side on the cores instead; the library's choice for gpu)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size == "gpu-smoke":  # not a size of the parts: a separate check (benchmarks/gpu_smoke.py)
        from benchmarks import gpu_smoke

        return gpu_smoke.main(["--out", str(args.out / "gpu-smoke")])
    setup_logging()
    only = [x.strip() for x in args.only.split(",")] if args.only else [*PARTS]
    unknown = [x for x in only if x not in (*PARTS, "report")]
    if unknown:
        print(f"--only: unknown part {unknown[0]!r} (known: {', '.join(PARTS)}, report)", file=sys.stderr)
        return 2
    for part in PARTS:
        if part in only:
            log.info("=== %s (size %s) ===", part, args.size)
            run_part(part, args.size, args.out, args.threads)
            write_report(args.size, args.out, args.results)
    if "report" in only or not any(p in only for p in PARTS):
        write_report(args.size, args.out, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
