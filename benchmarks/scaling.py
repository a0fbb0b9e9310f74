"""Parallel trials and device use: trials/hour with 1 vs 2 workers; proxy-trial images/s (+ GPU use).

    python -m benchmarks.scaling [--size ci|cpu|gpu] [--task default_small] [--workers 2] [--trials K]

1. **Workers.** The same ``K`` random-sampler trials (same sampler seed, hence the same curricula;
   no pruning; the teacher-output cache on, each study starting with an empty cache folder) run
   with ``--workers 1`` and ``--workers N`` on the same machine, through the library's
   ``run_search`` (one process per trial; CPU threads split between workers unless ``--threads``).
   Trials/hour = trials / the time during which some trial was running (see ``search_cost``). The 1-worker study is the one ``search_cost``
   uses for its cache-on figure (shared, run once).
2. **Device use of one proxy trial.** The direct-KD baseline's proxy recipe (strongest teacher)
   trained with ``run_recipe`` on the default device, twice: cache cold (fills it) and warm.
   Reported: images/s (proxy iterations × batch / wall time, evaluations included) and, when
   ``torch.cuda.is_available()``, GPU utilisation sampled every 0.2 s (``torch.cuda.utilization``,
   else ``nvidia-smi``) and peak GPU memory.

Writes ``benchmarks/out/<size>/scaling.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SPACES_DIR,
    GpuSampler,
    add_common_args,
    ensure_zoo,
    fmt_range,
    machine_info,
    machine_line,
    md_table,
    resolve_threads,
    setup_logging,
    size_dir,
    studies_root,
    summarize,
    task_space,
    teacher_cache,
    write_result,
)
from benchmarks.search_cost import THROUGHPUT_TRIALS, throughput_study


def proxy_trial_device_use(task: str, size: str, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Images/s (and GPU use) of the direct-KD proxy trial, cache cold then warm."""
    import torch

    from curriculum_search.curriculum.trainer import RunOptions, run_recipe
    from curriculum_search.search.encoding import build_recipe, choice_from_settings
    from curriculum_search.utils.runtime import pick_device

    space = task_space(task, size)
    root = studies_root(size, out)
    infos, _ = ensure_zoo(space, root, SPACES_DIR / f"{task}.yaml", threads)
    teachers = [i for i in infos if i.kind != "reference" and i.name in space.search_teachers]
    strongest = max(teachers, key=lambda i: i.ap if i.ap is not None else -1.0).name
    choice = choice_from_settings(space, {"teachers": [strongest]})
    recipe = build_recipe(
        space, choice, iterations=space.proxy.iterations, proxy=True, seed=space.seed, studies_root=root
    )
    device = pick_device(space.train.device)
    cache = teacher_cache(root, sub="teachers-device-use")
    shutil.rmtree(root / "_cache" / "teachers-device-use", ignore_errors=True)
    res: dict[str, Any] = {
        "device": str(device),
        "curriculum": choice.describe(),
        "iterations": recipe.total_iterations,
        "batch_size": recipe.train.batch_size,
        "runs": {},
    }
    for phase in ("cold", "warm"):
        run_dir = root / "device_use" / f"{task}-{phase}"
        shutil.rmtree(run_dir, ignore_errors=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with GpuSampler() as sampler:
            t0 = time.perf_counter()
            r = run_recipe(
                recipe,
                RunOptions(
                    out_dir=run_dir,
                    cache_root=root / "_cache",
                    base_dir=root,
                    cache=cache,
                    progress=False,
                    threads=threads,
                ),
            )
            wall = time.perf_counter() - t0
        entry: dict[str, Any] = {
            "wall_s": round(wall, 1),
            "images_per_s": round(recipe.total_iterations * recipe.train.batch_size / wall, 1),
            "teacher_forwards": r.teacher_forwards,
            "ap": r.metrics.ap,
        }
        if device.type == "cuda":
            entry["gpu_util_pct"] = summarize(sampler.util)
            entry["gpu_peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        res["runs"][phase] = entry
    return res


def run(args: argparse.Namespace) -> dict[str, Any]:
    resolve_threads(args)
    out = Path(args.out)
    k = args.trials or THROUGHPUT_TRIALS[args.size]
    rdir = size_dir(args.size, out)
    result: dict[str, Any] = {
        "part": "scaling",
        "size": args.size,
        "machine": machine_info(),
        "task": args.task,
        "threads": args.threads,
    }
    print(f"machine: {machine_line(result['machine'])}", flush=True)
    t0 = time.perf_counter()
    result["workers"] = {
        "1": throughput_study(args.task, args.size, out, "cache", k, cache_on=True, threads=args.threads)
    }
    write_result("scaling", result, rdir)
    result["workers"][str(args.workers)] = throughput_study(
        args.task,
        args.size,
        out,
        f"cache-w{args.workers}",
        k,
        cache_on=True,
        workers=args.workers,
        threads=args.threads,
    )
    write_result("scaling", result, rdir)
    result["device_use"] = proxy_trial_device_use(args.task, args.size, out, args.threads)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["complete"] = True
    write_result("scaling", result, rdir)
    print(markdown(result), flush=True)
    return result


def headline(result: dict[str, Any]) -> list[str]:
    w = result.get("workers", {})
    keys = sorted(w, key=int)
    out = []
    if len(keys) >= 2 and w[keys[0]].get("trials_per_hour") and w[keys[-1]].get("trials_per_hour"):
        a, b = w[keys[0]], w[keys[-1]]
        out.append(
            f"{result.get('task')}: {b['trials_per_hour']:.1f} trials/hour with {keys[-1]} workers vs "
            f"{a['trials_per_hour']:.1f} with 1 on the same {result['machine'].get('cores')} cores "
            f"({b['trials_per_hour'] / a['trials_per_hour']:.2f}×, one run each)."
        )
    du = result.get("device_use", {})
    if du.get("runs", {}).get("warm"):
        r = du["runs"]["warm"]
        gpu = ""
        if r.get("gpu_util_pct"):
            gpu = f", GPU utilisation median {r['gpu_util_pct']['median']:.0f}%"
        out.append(
            f"one proxy trial on {du['device']}: {r['images_per_s']:.0f} images/s with a warm cache{gpu}."
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = []
    if not result.get("complete"):
        lines.append("**Partial results: this part did not finish.**\n")
    w = result.get("workers", {})
    if w:
        lines.append(
            md_table(
                ["workers", "trials", "busy s", "trials/hour", "trial wall s (median, min–max)"],
                [
                    [
                        n,
                        v.get("trials", 0),
                        v.get("span_s", "—"),
                        v.get("trials_per_hour", "—"),
                        fmt_range(v["trial_wall_s"], 0) if v.get("trial_wall_s") else "—",
                    ]
                    for n, v in sorted(w.items(), key=lambda kv: int(kv[0]))
                ],
            )
        )
    du = result.get("device_use")
    if du:
        lines.append(
            f"\nOne proxy trial ({du['curriculum']}; {du['iterations']} iterations, batch {du['batch_size']}) "
            f"on `{du['device']}`:\n"
        )
        rows = []
        for phase, r in du["runs"].items():
            gpu = fmt_range(r["gpu_util_pct"], 0, "%") if r.get("gpu_util_pct") else "— (no GPU)"
            mem = f"{r['gpu_peak_mem_mb']:.0f}" if r.get("gpu_peak_mem_mb") is not None else "—"
            rows.append([f"cache {phase}", r["wall_s"], r["images_per_s"], r["teacher_forwards"], gpu, mem])
        lines.append(
            md_table(
                [
                    "run",
                    "wall s",
                    "images/s (evals included)",
                    "teacher forwards",
                    "GPU util (median, min–max)",
                    "peak GPU MB",
                ],
                rows,
            )
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--task", default="default_small", help="benchmark task (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="workers to compare with 1 (default: %(default)s)")
    p.add_argument("--trials", type=int, default=None, help="trials per study (default: per size)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["headline", "markdown", "proxy_trial_device_use", "run"]
