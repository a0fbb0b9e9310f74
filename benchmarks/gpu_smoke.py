"""GPU readiness check (issue 16): the whole pipeline on one GPU in at most 8 minutes.

    python -m benchmarks.gpu_smoke [--space space/default.yaml] [--out DIR] [--device cuda] [--timeout-s 480]
    python -m benchmarks --size gpu-smoke          # the same, results in benchmarks/out/gpu-smoke/

It runs the library's own entry points (``curriculum_search.api``: ``run_search`` and ``select``,
the zoo as ``run`` builds it) on a fresh studies folder ``<out>/studies``, with a copy of the space
file written to ``<out>/gpu_smoke_space.yaml`` (study ``gpu-smoke``; ``train.amp: true`` and
``train.device: cuda``; the race cut to one rung at full length, 2 seeds, a shortlist of 1, no
LR-matched arm; ``--full-iterations`` shortens the full length), in four timed phases:

1. **zoo** — the space's zoo teachers (trained in this process, on the GPU).
2. **proxy** — the study's first two trials one at a time (``--workers 1``): the student-alone and
   the direct-KD baselines, so one proxy trial runs alone with a teacher (the headline images/s).
3. **search** — ``--trials`` more trials with ``--workers 2``: two trial processes share the GPU.
4. **race** — the selection race (searched curriculum vs best baseline vs student alone, 2 seeds
   at full length, 2 at a time) and the shipped student.

Figures per phase: wall time; images/s (a run: iterations × batch / the run's own wall time
from its ``metrics.json``, evaluations included; a phase: all its training images, the zoo
teachers' included, / the phase's wall time, process start-ups included); trials/hour (search);
GPU utilisation sampled every 0.2 s in a background thread (``torch.cuda.utilization``, NVML, else
``nvidia-smi``; search and race also over the samples taken while two runs trained at once); peak
GPU memory as the largest *device memory in use* sampled alongside
(``torch.cuda.device_memory_used``, else ``nvidia-smi``'s ``memory.used``: every process, CUDA
contexts and the caching allocators' reserve included, since ``torch.cuda.max_memory_allocated``
cannot see the trial processes; the zoo, trained in this process, also gets that figure), next to
the reading at the phase's start (this process' own CUDA context after the zoo). Everything goes to
``<out>/gpu_smoke.json`` (machine, device name, torch / CUDA / cuDNN versions, AMP dtype, each
phase and its runs, whether the check fit ``--timeout-s``) and a markdown summary is printed.

``--timeout-s`` (default 480 s, the issue's 8 minutes) is the budget: the search phases stop
starting trials when it is spent (``timeout_s`` of ``run_search``) and the race is skipped if
nothing is left; ``within_budget`` says whether the whole check fit.

Without CUDA it exits with status 2 and one line, unless ``--device cpu``: the same plumbing on
the CPU (default space ``space/tiny.yaml``, AMP off, one thread per trial), which is what the test
suite runs. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    OUT_DIR,
    ROOT,
    GpuSampler,
    gpu_memory_used_mb,
    gpu_utilization,
    machine_info,
    machine_line,
    md_table,
    setup_logging,
    summarize,
    write_result,
)

log = logging.getLogger("benchmarks.gpu_smoke")

STUDY = "gpu-smoke"
BUDGET_S = 480.0
SAMPLE_S = 0.2
MARKER = ".gpu_smoke"  # marks <out>/studies as ours (it is wiped at every start)
DEFAULT_SPACE = {"cuda": ROOT / "space" / "default.yaml", "cpu": ROOT / "space" / "tiny.yaml"}
NO_CUDA = (
    "gpu_smoke needs a CUDA GPU; torch.cuda.is_available() is False here "
    "(pass --device cpu to run the same plumbing on the CPU)"
)


# -- set-up ----------------------------------------------------------------------------------------
def _pin_one_gpu() -> None:
    """Show this process and its trials one GPU (``CUDA_VISIBLE_DEVICES=0`` unless set), so the two
    workers share it: the library spreads workers over every visible GPU. Must run before the first
    CUDA call."""
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")


def smoke_space(
    src: Path, device: str, trials: int, race_seeds: int, full_iterations: int | None, shortlist: int = 1
) -> Any:
    """The space of ``src`` for this check (validated; relative paths made absolute against ``src``)."""
    from curriculum_search.search.space import space_from_dict
    from curriculum_search.utils.io import load_yaml

    raw = load_yaml(src)
    raw["name"] = STUDY if device == "cuda" else f"{STUDY}-cpu"
    raw["trials"] = trials
    raw["timeout_s"] = None
    train = raw.setdefault("train", {})
    train.update(amp=device == "cuda", device=device)
    if device == "cpu":
        train["threads"] = 1
    sel = raw.setdefault("selection", {})
    sel.update(shortlist=shortlist, rungs=[1.0], seeds=[race_seeds], promote=1, lr_matched=False)
    if full_iterations is not None:
        raw.setdefault("full", {})["iterations"] = full_iterations
    return space_from_dict(raw, source=src, base_dir=src.resolve().parent)


def _fresh_studies(out: Path) -> Path:
    root = out / "studies"
    if root.exists():
        if not (root / MARKER).is_file() and any(root.iterdir()):
            raise SystemExit(f"gpu_smoke: {root} exists and was not made by gpu_smoke; choose another --out")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by python -m benchmarks.gpu_smoke; wiped at its next start\n")
    return root


def _sampling_method(cuda: bool) -> dict[str, str | None]:
    """Which tool answers the utilisation and memory queries (``None``: nothing; figures missing)."""
    if not cuda:
        return {"util": None, "memory": None}
    import torch

    def which(nvml: Any, smi: Any) -> str | None:
        try:
            nvml(0)
            return "NVML (torch.cuda)"
        except Exception:
            return "nvidia-smi" if smi(0) is not None else None

    return {
        "util": which(torch.cuda.utilization, gpu_utilization),
        "memory": which(torch.cuda.device_memory_used, gpu_memory_used_mb),
    }


# -- reading what ran ------------------------------------------------------------------------------
def _run_metrics(study_dir: Path, record: Any) -> list[dict[str, Any]]:
    """The ``metrics.json`` of a trial's (or race run's) runs: one per seed it trained."""
    if not record.run_dir:
        return []
    d = Path(record.run_dir)
    d = d if d.is_absolute() else study_dir / d
    files = [d / "metrics.json"] if (d / "metrics.json").is_file() else sorted(d.glob("seed*/metrics.json"))
    out = []
    for f in files:
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(f.read_text()))
    return out


def _in_window(times: list[float], values: list[float], start: float, end: float) -> list[float]:
    return [v for t, v in zip(times, values) if start <= t <= end]


def _run_row(study_dir: Path, record: Any, batch: int, sampler: GpuSampler) -> dict[str, Any]:
    """One trial or race run: what it trained, how fast, and the GPU while it ran."""
    runs = _run_metrics(study_dir, record)
    its = sum(int(m.get("iterations") or 0) for m in runs)
    run_wall = sum(float(m.get("wall_time_s") or 0.0) for m in runs)
    if not runs:  # pruned or failed: what it reported, over its process' wall time
        its = int(record.pruned_at or record.iterations or 0) if record.state == "PRUNED" else 0
        run_wall = float(record.wall_time_s or 0.0)
    start = record.start.timestamp() if record.start else None
    end = record.complete.timestamp() if record.complete else None
    row: dict[str, Any] = {
        "number": record.number,
        "state": record.state.lower(),
        "what": record.arm or record.baseline or record.description,
        "description": record.description,
        "seed": record.seed,
        "reused": record.reused_from is not None,
        "iterations": its,
        "images": its * batch,
        "run_wall_s": round(run_wall, 2),
        "trial_wall_s": record.wall_time_s,
        "images_per_s": round(its * batch / run_wall, 1) if its and run_wall > 0 else None,
        "value": record.value,
        "failure": record.failure_reason,
        "start": start,
        "end": end,
    }
    if start is not None and end is not None and sampler.util:
        row["gpu_util_pct"] = summarize(_in_window(sampler.times, sampler.util, start, end))
    return row


def _overlap_util(sampler: GpuSampler, rows: list[dict[str, Any]], k: int) -> dict[str, float] | None:
    """GPU utilisation over the samples taken while at least ``k`` of ``rows`` ran at once."""
    spans = [(r["start"], r["end"]) for r in rows if r["start"] and r["end"] and not r["reused"]]
    vals = [u for t, u in zip(sampler.times, sampler.util) if sum(a <= t <= b for a, b in spans) >= k]
    return summarize(vals) if vals else None


def _records(root: Path, name: str, race: bool = False) -> tuple[Any, ...]:
    from curriculum_search.search.reader import StudyReader
    from curriculum_search.search.storage import open_readonly, storage_spec

    spec = storage_spec(root, name, None)
    reader = StudyReader(open_readonly(spec), spec.display)
    try:
        return (reader.race(name) or ()) if race else reader.trials(name)
    finally:
        reader.close()


# -- phases ----------------------------------------------------------------------------------------
class _Phase:
    """Times a phase and samples the GPU (on CUDA) while it runs; ``fill`` adds the figures."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.sampler = GpuSampler(SAMPLE_S, memory=True)
        self.t0 = self.wall = 0.0
        self.mem_start: float | None = None

    def __enter__(self) -> _Phase:
        if self.cuda:
            self.mem_start = gpu_memory_used_mb(0)
            self.sampler.__enter__()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        if self.cuda:
            self.sampler.__exit__(*exc)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"wall_s": round(self.wall, 1)}
        if self.cuda:
            s = self.sampler
            out["gpu_util_pct"] = summarize(s.util) if s.util else None
            out["gpu_util_samples"] = len(s.util)
            out["gpu_mem_start_mb"] = round(self.mem_start, 0) if self.mem_start is not None else None
            out["gpu_mem_peak_mb"] = round(max(s.mem_mb), 0) if s.mem_mb else None
        return out


def _aggregate(rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    images = sum(r["images"] for r in rows)
    return {
        "images": images,
        "images_per_s": round(images / wall, 1) if wall > 0 and images else None,
        "failed": [f"#{r['number']}: {r['failure']}" for r in rows if r["state"] == "fail"],
    }


def _new_rows(
    root: Path, name: str, seen: set[int], batch: int, sampler: GpuSampler, race: bool = False
) -> list[dict[str, Any]]:
    from curriculum_search.search.storage import storage_spec

    study_dir = storage_spec(root, name, None).study_dir
    recs = [r for r in _records(root, name, race) if r.number not in seen and r.state != "WAITING"]
    seen.update(r.number for r in recs)
    return [_run_row(study_dir, r, batch, sampler) for r in recs]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the check; returns (and writes to ``<out>/gpu_smoke.json``) the result.

    Raises:
        SystemExit: 2 without CUDA unless ``--device cpu``.
    """
    import torch

    device = args.device
    cuda = device == "cuda"
    if cuda:
        _pin_one_gpu()
        if not torch.cuda.is_available():
            print(NO_CUDA, file=sys.stderr)
            raise SystemExit(2)
    import curriculum_search.api as cs
    from curriculum_search.search.space import save_space
    from curriculum_search.search.zoo import build_zoo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(args.space) if args.space else DEFAULT_SPACE[device]
    threads = args.threads if args.threads is not None else (1 if not cuda else None)
    n_first = 2  # student alone, then direct KD from the strongest teacher (the enqueued baselines)
    space = smoke_space(
        src, device, n_first + args.trials, args.race_seeds, args.full_iterations, args.shortlist
    )
    space_file = save_space(space, out / "gpu_smoke_space.yaml")
    root = _fresh_studies(out)
    name = space.name
    batch = space.train.batch_size
    result: dict[str, Any] = {
        "part": "gpu_smoke",
        "machine": machine_info(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "gpus_visible": torch.cuda.device_count() if cuda else 0,
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "amp": space.train.amp,
        "amp_dtype": ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if cuda else None,
        "space": str(src),
        "space_file": str(space_file),
        "study": name,
        "batch_size": batch,
        "proxy_iterations": space.proxy.iterations,
        "full_iterations": space.full.iterations,
        "workers": args.workers,
        "budget_s": args.timeout_s,
        "sampling": {"interval_s": SAMPLE_S, **_sampling_method(cuda)},
        "phases": {},
        "complete": False,
    }
    if cuda and result["gpus_visible"] > 1:
        log.warning("%d GPUs visible: the workers may not share one", result["gpus_visible"])
    print(f"machine: {machine_line(result['machine'])}", flush=True)
    phases = result["phases"]
    t_start = time.perf_counter()

    def left() -> float:
        return args.timeout_s - (time.perf_counter() - t_start)

    def echo(msg: str) -> None:
        log.info("%s: %s", name, msg)

    kw: dict[str, Any] = {"device": device, "threads": threads, "progress": False, "echo": echo}
    seen: set[int] = set()
    try:
        # 1. zoo (as `run` builds it: no student-alone reference, the race trains that)
        with _Phase(cuda) as ph:
            if cuda:
                torch.cuda.reset_peak_memory_stats(0)
            o = cs.options(root, space_file=space_file, **kw)
            infos = build_zoo(
                space,
                root,
                cache=o.cache,
                device=device,
                threads=threads,
                progress=False,
                source=space_file,
                reference=False,
            )
        zoo_images = sum(e.zoo.iterations * e.zoo.batch_size for e in space.teachers.values() if e.zoo)
        phases["zoo"] = ph.figures() | {
            "teachers": [{"name": i.name, "ap": i.ap} for i in infos],
            "images": zoo_images,  # every zoo teacher is trained: the studies folder is fresh
            "images_per_s": round(zoo_images / ph.wall, 1) if ph.wall > 0 and zoo_images else None,
        }
        if cuda:
            phases["zoo"]["torch_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(0) / 2**20, 0)
        write_result("gpu_smoke", result, out)

        # 2. the first trials one at a time: one proxy trial alone on the device
        with _Phase(cuda) as ph:
            cs.run_search(space_file, root, trials=n_first, workers=1, timeout_s=max(1.0, left()), **kw)
        rows = _new_rows(root, name, seen, batch, ph.sampler)
        kd = next((r for r in rows if r["what"] not in (None, "student_only") and r["images_per_s"]), None)
        phases["proxy"] = ph.figures() | _aggregate(rows, ph.wall) | {"trials": rows}
        phases["proxy"]["images_per_s_one_trial"] = kd["images_per_s"] if kd else None
        phases["proxy"]["one_trial"] = kd["what"] if kd else None
        write_result("gpu_smoke", result, out)

        # 3. a short search, two trial processes sharing the device
        if left() > 0:
            with _Phase(cuda) as ph:
                summary = cs.run_search(
                    space_file,
                    root,
                    trials=n_first + args.trials,
                    workers=args.workers,
                    timeout_s=max(1.0, left()),
                    **kw,
                )
            rows = _new_rows(root, name, seen, batch, ph.sampler)
            done = [r for r in rows if r["state"] in ("complete", "pruned")]
            phases["search"] = ph.figures() | _aggregate(rows, ph.wall)
            phases["search"] |= {
                "workers": args.workers,
                "finished": len(done),
                "reused": sum(r["reused"] for r in done),
                "trials_per_hour": round(len(done) / ph.wall * 3600, 1) if ph.wall > 0 else None,
                "best_value": summary.best_value,
                "trials": rows,
            }
            if cuda:
                phases["search"]["gpu_util_both_pct"] = _overlap_util(ph.sampler, rows, 2)
            write_result("gpu_smoke", result, out)
        else:
            phases["search"] = {"skipped": "budget spent"}

        # 4. the selection race and the shipped student
        if left() > 0:
            from curriculum_search.search.selection import decision_lines

            with _Phase(cuda) as ph:
                full = cs.select(space_file, root, workers=args.workers, **kw)
            rows = _new_rows(root, name, set(), batch, ph.sampler, race=True)
            phases["race"] = ph.figures() | _aggregate(rows, ph.wall)
            phases["race"] |= {
                "runs": len(rows),
                "shipped_ap": full.ap,
                "decision": decision_lines(full.outcome.summary),
                "race_runs": rows,
            }
            if cuda:
                phases["race"]["gpu_util_both_pct"] = _overlap_util(ph.sampler, rows, 2)
        else:
            phases["race"] = {"skipped": "budget spent"}
        result["complete"] = True
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        raise
    finally:
        result["wall_s"] = round(time.perf_counter() - t_start, 1)
        result["within_budget"] = result["complete"] and result["wall_s"] <= args.timeout_s
        write_result("gpu_smoke", result, out)
    print(markdown(result), flush=True)
    return result


# -- report ----------------------------------------------------------------------------------------
def _pct(s: dict[str, float] | None) -> str:
    return f"{s['mean']:.0f} / {s['median']:.0f}" if s and s.get("n") else "—"


def _mb(v: float | None) -> str:
    return f"{v:.0f}" if v is not None else "—"


def headline(result: dict[str, Any]) -> list[str]:
    ph = result.get("phases", {})
    p, s = ph.get("proxy", {}), ph.get("search", {})
    gpu = ""
    if p.get("gpu_util_pct"):
        gpu = f", GPU utilisation {p['gpu_util_pct']['median']:.0f}% (median)"
    fit = "within" if result.get("within_budget") else "NOT within"
    return [
        f"GPU smoke on {result.get('device_name')}: whole check {result.get('wall_s')} s ({fit} "
        f"the {result.get('budget_s'):.0f} s budget); one proxy trial {p.get('images_per_s_one_trial') or '—'} "
        f"images/s{gpu}; {s.get('trials_per_hour') or '—'} trials/hour with {s.get('workers', '?')} workers."
    ]


def markdown(result: dict[str, Any]) -> str:
    ph = result.get("phases", {})
    lines = [
        f"**GPU smoke** on `{result.get('device_name')}` (torch {result.get('torch')}, CUDA "
        f"{result.get('cuda')}, AMP {result.get('amp_dtype') if result.get('amp') else 'off'}; batch "
        f"{result.get('batch_size')}, proxy {result.get('proxy_iterations')} / full "
        f"{result.get('full_iterations')} iterations): {result.get('wall_s')} s, "
        f"{'within' if result.get('within_budget') else 'NOT within'} the {result.get('budget_s'):.0f} s budget"
        + ("" if result.get("complete") else f" — stopped: {result.get('error', 'unfinished')}")
        + ".",
        "",
    ]
    rows = []
    for key, label in (
        ("zoo", "zoo teachers"),
        ("proxy", "first trials, 1 worker"),
        ("search", f"search, {result.get('workers')} workers"),
        ("race", f"race, {result.get('workers')} workers"),
    ):
        r = ph.get(key)
        if r is None:
            continue
        if r.get("skipped"):
            rows.append([label, "—", "—", "—", "—", "—", "—", f"skipped: {r['skipped']}"])
            continue
        ips = r.get("images_per_s")
        if key == "proxy" and r.get("images_per_s_one_trial"):
            ips = f"{r['images_per_s_one_trial']} (one {r['one_trial']} trial); {ips} phase"
        note = ""
        if key == "zoo":
            note = ", ".join(
                f"{t['name']} AP {t['ap']:.3f}" for t in r.get("teachers", []) if t["ap"] is not None
            )
        elif key == "search":
            note = f"{r.get('finished')} finished ({r.get('reused')} reused), {r.get('trials_per_hour')} trials/hour"
        elif key == "race":
            note = (
                f"{r.get('runs')} runs, shipped AP {r['shipped_ap']:.3f}"
                if r.get("shipped_ap") is not None
                else ""
            )
        if r.get("failed"):
            note += f"; failed: {'; '.join(r['failed'])}"
        rows.append(
            [
                label,
                r.get("wall_s"),
                ips if ips is not None else "—",
                _pct(r.get("gpu_util_pct")),
                _pct(r.get("gpu_util_both_pct")),
                _mb(r.get("gpu_mem_start_mb")),
                _mb(r.get("gpu_mem_peak_mb")),
                note,
            ]
        )
    lines.append(
        md_table(
            [
                "phase",
                "wall s",
                "images/s",
                "GPU util % mean / median",
                "… while 2 ran",
                "GPU MB at start",
                "peak GPU MB",
                "notes",
            ],
            rows,
        )
    )
    smp = result.get("sampling", {})
    lines.append(
        f"\nGPU sampled every {smp.get('interval_s')} s (utilisation: {smp.get('util') or 'not available'}; "
        f"memory in use on the device, all processes: {smp.get('memory') or 'not available'})."
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--space",
        type=Path,
        default=None,
        help="search-space YAML (default: space/default.yaml on cuda, space/tiny.yaml on cpu)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=OUT_DIR / "gpu-smoke",
        help="results folder; its studies/ subfolder is wiped at every start (default: benchmarks/out/gpu-smoke)",
    )
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cuda (default; one GPU: CUDA_VISIBLE_DEVICES=0 unless set) or cpu (plumbing check, AMP off)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=BUDGET_S,
        help="time budget of the whole check (default: %(default)s)",
    )
    p.add_argument("--trials", type=int, default=4, help="trials of the search phase (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="trial processes at once in search and race (default: %(default)s)",
    )
    p.add_argument(
        "--race-seeds", type=int, default=2, help="seeds per arm in the race (>= 2; default: %(default)s)"
    )
    p.add_argument(
        "--shortlist",
        type=int,
        default=1,
        help="searched curricula raced against the best baseline (default: %(default)s)",
    )
    p.add_argument(
        "--full-iterations",
        type=int,
        default=None,
        help="full length of the race runs (default: the space's full.iterations)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per trial process (default: 1 on cpu, the library's split on cuda)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        result = run(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else 1
    return 0 if result.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["build_parser", "headline", "main", "markdown", "run", "smoke_space"]
