"""Distillation step time / plain student step time, per method, with and without the cache (issue 3).

    python -m benchmarks.step_overhead [--size ci|cpu|gpu] [--rounds N] [--steps K] [--methods a,b]

What one *step* is: exactly the body of the trainer's loop
(:func:`curriculum_search.curriculum.trainer.run_recipe`): teacher outputs through a
:class:`~curriculum_search.distill.cache.TeacherRunner` (no cache, or a warm cache in RAM, or a
warm cache on disk read at every step), pseudo-label targets for pseudo-label stages, the trainer's
own ``TrainStep`` module (student forward with its detection losses + the
:class:`~curriculum_search.distill.distiller.StageDistiller` loss), backward, gradient clipping,
AdamW step and LR-scheduler step. Batches are loaded once before timing (data loading, identical in
both arms, is left out, which makes the ratio stricter). Teacher outputs are warmed for every batch
of the pool before timing, as in a search where earlier trials filled the cache.

Arms: the plain student step (a stage without teachers) and, per method, one stage with one
teacher: each feature loss (``mse``, ``tadf_feature``, ``mgd``, ``fgd``, ``cwd``, ``pkd``; weight 1),
response KD with TADF gates (``response``), pseudo labels (``pseudo``); each with cache ``none`` /
``ram`` (warm, in-memory LRU) / ``disk`` (warm, ``max_memory_mb=0``: every hit reads and verifies
its file, like the first epoch of a trial process on a shared disk cache).

Timing: every round runs each arm for ``--steps`` steps (one sample = their mean), the arms in a
rotated order with a plain-student sample before and after each arm (``--plain-every 1``: P A P B
P C ...); an arm's ratio in a round is its sample over the mean of the two plain samples around
it, so a load change of the shared machine hits both sides of the ratio. Reported: median ratio
over rounds with min–max. Student: the default space's (FCOS MobileNetV3-small-0.5, FPN 32);
teacher: FCOS ResNet18, FPN 64, random init (timing only). Writes ``step_overhead.json``.
"""

from __future__ import annotations

import argparse
import gc
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import (
    OUT_DIR,
    ROOT,
    Series,
    add_common_args,
    fmt_range,
    machine_info,
    machine_line,
    md_table,
    resolve_threads,
    save_plot,
    setup_logging,
    size_dir,
    summarize,
    write_result,
)

FEATURE_METHODS = ("mse", "tadf_feature", "mgd", "fgd", "cwd", "pkd")
METHODS = (*FEATURE_METHODS, "response", "pseudo")
CACHE_MODES = ("none", "ram", "disk")
GOAL = 1.10

#: Per size: image side, batch, rounds, steps per sample, batches in the pool, methods.
SIZES: dict[str, dict[str, Any]] = {
    "ci": {
        "image_size": 64,
        "batch_size": 4,
        "rounds": 3,
        "steps": 1,
        "batches": 2,
        "methods": ("mse", "response", "pseudo"),
    },
    "cpu": {"image_size": 128, "batch_size": 8, "rounds": 12, "steps": 2, "batches": 6, "methods": METHODS},
    "gpu": {"image_size": 128, "batch_size": 8, "rounds": 30, "steps": 5, "batches": 6, "methods": METHODS},
}


@dataclass
class Arm:
    """One timed configuration: its own student, distiller, optimizer and teacher runner."""

    name: str
    method: str | None
    cache: str
    step: Callable[[tuple[Tensor, list[dict[str, Any]]]], float]
    runner: Any = None
    samples: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cursor: int = 0
    nonfinite: int = 0


def _stage(method: str | None, iterations: int) -> Any:
    from curriculum_search.curriculum.recipe import Decay, FeatureKD, PseudoLabelKD, ResponseKD, Stage

    if method is None:
        return Stage(teachers=(), iterations=iterations, name="plain")
    kw: dict[str, Any] = {}
    if method in FEATURE_METHODS:
        kw["feature"] = FeatureKD(loss=method, weight=1.0)
    elif method == "response":
        kw["response"] = ResponseKD(gate=True)
    elif method == "pseudo":
        kw["pseudo"] = PseudoLabelKD()
    else:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    return Stage(teachers=("teacher",), iterations=iterations, decay=Decay(kind="linear"), name=method, **kw)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_arm(
    method: str | None,
    cache_mode: str,
    *,
    student_spec: Any,
    teacher: Any,
    train_cfg: Any,
    fingerprint: str,
    cacheable: bool,
    disk_root: Path,
    device: torch.device,
) -> Arm:
    """A student + distiller + optimizer + runner wired as ``run_recipe`` wires a stage."""
    from curriculum_search.curriculum.trainer import TrainStep
    from curriculum_search.distill.cache import (
        CacheConfig,
        TeacherCache,
        TeacherRunner,
        cache_namespace,
        teacher_key,
    )
    from curriculum_search.distill.distiller import StageDistiller
    from curriculum_search.engine.optim import build_optimizer, build_scheduler
    from curriculum_search.models import build_detector

    iterations = 100_000  # LR schedule far from its end: every step is a mid-stage step
    stage = _stage(method, iterations)
    torch.manual_seed(0)
    student = build_detector(student_spec).to(device)
    teachers = {"teacher": teacher} if method is not None else {}
    distiller = StageDistiller(stage, student, teachers, stage_index=0).to(device)
    module = TrainStep(student, distiller)
    optimizer = build_optimizer([student, distiller], train_cfg, lr=train_cfg.lr)
    scheduler = build_scheduler(optimizer, train_cfg, iterations, train_cfg.warmup_iterations)
    runner = None
    if method is not None:
        cache = None
        if cache_mode != "none":
            cfg = (
                CacheConfig(root=None)
                if cache_mode == "ram"
                else CacheConfig(root=disk_root, max_memory_mb=0)
            )
            ns = cache_namespace(
                teacher_key(teacher),
                fingerprint,
                distiller.needs_dense,
                distiller.needs_detections,
                cfg.feature_dtype,
            )
            cache = TeacherCache(cfg, ns)
        runner = TeacherRunner(
            teacher,
            cache,
            need_dense=distiller.needs_dense,
            need_detections=distiller.needs_detections,
            cacheable=cacheable,
            device=device,
        )
    student.train()
    counter = {"step": 0}
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step(batch: tuple[Tensor, list[dict[str, Any]]]) -> float:
        images, targets = batch
        t_outs = {"teacher": runner(images, targets)} if runner is not None and stage.distills else {}
        if stage.pseudo is not None:
            targets = distiller.targets(targets, t_outs, images.shape[-1])
        optimizer.zero_grad(set_to_none=True)
        loss, _ = module(images, targets, teachers, t_outs, counter["step"])
        loss.backward()
        if train_cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        counter["step"] += 1
        return float(loss.detach())

    name = "plain" if method is None else f"{method}/{cache_mode}"
    return Arm(name, method, cache_mode, step, runner)


def _sample(arm: Arm, batches: Sequence[Any], steps: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = arm.step(batches[arm.cursor % len(batches)])
        arm.cursor += 1
        if not math.isfinite(loss):
            arm.nonfinite += 1
    _sync(device)
    return (time.perf_counter() - t0) / steps


def load_batches(
    image_size: int, batch_size: int, n_batches: int, out_dir: Path, device: torch.device
) -> Any:
    """``n_batches`` training batches of the synthetic shapes (generated into ``out_dir/cache``)."""
    from curriculum_search.curriculum.datasets import build_datasets
    from curriculum_search.curriculum.recipe import DataConfig
    from curriculum_search.data import SyntheticConfig, infinite_batches, make_loader

    n_img = batch_size * n_batches
    cfg = DataConfig(
        kind="synthetic",
        synthetic=SyntheticConfig(num_train=n_img, num_val=4, image_size=image_size, seed=0),
        image_size=image_size,
        hflip=True,
    )
    data = build_datasets(cfg, class_names=None, cache_root=out_dir / "cache", base_dir=out_dir, seed=0)
    loader = make_loader(data.train, batch_size, shuffle=True, seed=0, drop_last=True)
    it = infinite_batches(loader)
    batches = []
    for _ in range(n_batches):
        images, targets = next(it)
        targets = [{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets]
        batches.append((images.to(device), targets))
    return batches, data


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) the result dict."""
    resolve_threads(args)
    from curriculum_search.curriculum.recipe import TeacherRef
    from curriculum_search.curriculum.trainer import load_teacher
    from curriculum_search.search.space import load_space
    from curriculum_search.utils.runtime import pick_device, set_threads

    size = SIZES[args.size]
    rounds = args.rounds or size["rounds"]
    steps = args.steps or size["steps"]
    image_size = args.image_size or size["image_size"]
    batch_size = args.batch_size or size["batch_size"]
    n_batches = size["batches"]
    every = max(1, args.plain_every)
    methods = tuple(args.methods.split(",")) if args.methods else size["methods"]
    modes = tuple(args.cache_modes.split(",")) if args.cache_modes else CACHE_MODES
    device = pick_device(args.device)
    set_threads(args.threads)
    out_dir: Path = size_dir(args.size, args.out)
    default = load_space(ROOT / "space" / "default.yaml")
    student_spec = default.student.with_updates(image_size=image_size)
    teacher_spec = default.teachers["medium"].zoo.spec.with_updates(image_size=image_size)  # type: ignore[union-attr]
    info = machine_info()
    print(f"machine: {machine_line(info)}", flush=True)
    print(
        f"student {student_spec.label} fpn {student_spec.fpn_channels}; teacher {teacher_spec.label} "
        f"fpn {teacher_spec.fpn_channels} (random init); {image_size} px, batch {batch_size}, device {device}",
        flush=True,
    )
    batches, data = load_batches(image_size, batch_size, n_batches, out_dir, device)
    torch.manual_seed(1)
    teacher = load_teacher(TeacherRef(spec=teacher_spec), "teacher", out_dir, None).to(device)
    disk_root = out_dir / "step_overhead_cache"
    shutil.rmtree(disk_root, ignore_errors=True)
    common = {
        "student_spec": student_spec,
        "teacher": teacher,
        "train_cfg": default.train,
        "fingerprint": data.fingerprint,
        "cacheable": data.train_base.cacheable,
        "disk_root": disk_root,
        "device": device,
    }
    plain = build_arm(None, "none", **common)
    arms = [build_arm(m, c, **common) for m in methods for c in modes]
    # warm-up: one pass over the pool (fills every cache, settles the allocator)
    for arm in [plain, *arms]:
        _sample(arm, batches, len(batches), device)
    forwards_before = {a.name: a.runner.forward_calls for a in arms}
    plain_samples: list[float] = []
    t_start = time.perf_counter()
    for r in range(rounds):
        k = r % len(arms)
        order = arms[k:] + arms[:k]
        p_prev = _sample(plain, batches, steps, device)
        plain_samples.append(p_prev)
        for i in range(0, len(order), every):
            chunk = order[i : i + every]
            got = [(a, _sample(a, batches, steps, device)) for a in chunk]
            p_next = _sample(plain, batches, steps, device)
            plain_samples.append(p_next)
            ref = (p_prev + p_next) / 2
            for a, t in got:
                a.samples.append(t)
                a.ratios.append(t / ref)
            p_prev = p_next
        gc.collect()
        print(f"round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f}s)", flush=True)
    rows = []
    for a in arms:
        rows.append(
            {
                "arm": a.name,
                "method": a.method,
                "cache": a.cache,
                "ratio": summarize(a.ratios),
                "step_ms": summarize(1000 * s for s in a.samples),
                "teacher_forwards_while_timed": a.runner.forward_calls - forwards_before[a.name],
                "timed_steps": len(a.samples) * steps,
                "nonfinite_losses": a.nonfinite,
                "ratios": a.ratios,
            }
        )
    result = {
        "part": "step_overhead",
        "size": args.size,
        "machine": info,
        "config": {
            "image_size": image_size,
            "batch_size": batch_size,
            "rounds": rounds,
            "steps_per_sample": steps,
            "plain_every": every,
            "batches_in_pool": n_batches,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "student": f"{student_spec.label} fpn{student_spec.fpn_channels}",
            "teacher": f"{teacher_spec.label} fpn{teacher_spec.fpn_channels} (random init)",
            "methods": list(methods),
            "cache_modes": list(modes),
            "goal": GOAL,
        },
        "plain_step_ms": summarize(1000 * s for s in plain_samples),
        "arms": rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    result["plot"] = _plot(result, out_dir)
    write_result("step_overhead", result, out_dir)
    print(markdown(result), flush=True)
    return result


def _plot(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    methods = result["config"]["methods"]
    series = []
    for mode in result["config"]["cache_modes"]:
        by = {r["method"]: r for r in result["arms"] if r["cache"] == mode}
        ys = [by[m]["ratio"]["median"] for m in methods]
        series.append(Series(f"cache: {_MODE_LABEL[mode]}", list(methods), ys))
    files = save_plot(
        "step_overhead",
        "bar",
        f"Distillation step / plain student step ({result['config']['image_size']} px, batch "
        f"{result['config']['batch_size']}); goal ≤ {GOAL}×",
        "method",
        "step time ratio (median over rounds)",
        series,
        out_dir,
        hline=GOAL,
    )
    return {"html": files.html, "png": files.png, "note": files.note}


_MODE_LABEL = {"none": "none", "ram": "warm, RAM", "disk": "warm, disk"}


def headline(result: dict[str, Any]) -> list[str]:
    """Plain statements read off the numbers."""
    cfg = result["config"]
    out = []
    for mode in cfg["cache_modes"]:
        arms = [r for r in result["arms"] if r["cache"] == mode]
        if not arms:
            continue
        med = sorted(arms, key=lambda r: r["ratio"]["median"])
        lo, hi = med[0], med[-1]
        text = (
            f"Distillation step / plain student step, cache {_MODE_LABEL[mode]}: median "
            f"{lo['ratio']['median']:.2f}× ({lo['method']}) to {hi['ratio']['median']:.2f}× ({hi['method']})"
        )
        if mode != "none":
            ok = [r["method"] for r in arms if r["ratio"]["median"] <= cfg["goal"] + 0.005]
            bad = [r["method"] for r in arms if r["ratio"]["median"] > cfg["goal"] + 0.005]
            text += f"; goal ≤ {cfg['goal']:.2f}× met by {', '.join(ok) or 'none'}"
            if bad:
                text += f", missed by {', '.join(bad)}"
        out.append(text + f" ({cfg['image_size']} px, batch {cfg['batch_size']}, {cfg['device']}).")
    p = result["plain_step_ms"]
    if p.get("n") and p["max"] > 1.5 * p["min"]:
        out.append(
            f"The machine was noisy while this ran (plain-step samples {p['min']:.0f}–{p['max']:.0f} ms): "
            "a median ratio below 1× is noise, and differences of a few hundredths between methods or "
            "from the 1.10× goal are not resolved."
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    """The result as a markdown section body (table + notes)."""
    cfg = result["config"]
    modes = cfg["cache_modes"]
    by = {(r["method"], r["cache"]): r for r in result["arms"]}
    headers = ["method", *[f"ratio, cache {_MODE_LABEL[m]}" for m in modes]]
    best_mode = "ram" if "ram" in modes else modes[0]
    headers.append(f"step ms (cache {_MODE_LABEL[best_mode]})")
    rows = []
    for m in cfg["methods"]:
        row: list[Any] = [f"`{m}`"]
        for mode in modes:
            r = by[(m, mode)]
            cell = fmt_range(r["ratio"], 2, "×")
            if mode != "none":
                cell += " ✓" if r["ratio"]["median"] <= cfg["goal"] + 0.005 else " ✗"
            row.append(cell)
        row.append(fmt_range(by[(m, best_mode)]["step_ms"], 0))
        rows.append(row)
    lines = [
        f"Plain student step: {fmt_range(result['plain_step_ms'], 0, ' ms')} (median, min–max over "
        f"{result['plain_step_ms']['n']} samples). {cfg['student']} student, {cfg['teacher']} teacher, "
        f"{cfg['image_size']} px, batch {cfg['batch_size']}, device {cfg['device']}, "
        f"{cfg.get('torch_threads', '?')} torch thread(s); {cfg['rounds']} interleaved "
        f"rounds × {cfg['steps_per_sample']} steps per sample, a plain sample around every "
        f"{cfg.get('plain_every', 4)} arm sample(s); ratio = arm / mean of the plain samples around it, "
        "median over rounds (min–max). "
        f"✓ = meets the goal ≤ {cfg['goal']:.2f}× with the cache.",
        "",
        md_table(headers, rows),
    ]
    leaked = [r["arm"] for r in result["arms"] if r["cache"] != "none" and r["teacher_forwards_while_timed"]]
    if leaked:
        lines.append(f"\nArms whose teacher ran while timed despite a warm cache: {', '.join(leaked)}.")
    bad = [r["arm"] for r in result["arms"] if r["nonfinite_losses"]]
    if bad:
        lines.append(f"\nNon-finite losses (timing still valid) in: {', '.join(bad)}.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.step_overhead", description=__doc__.split("\n\n")[0]
    )
    add_common_args(p)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default: per size)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed sample (default: per size)")
    p.add_argument("--image-size", type=int, default=None, help="input side in px (default: per size)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: per size)")
    p.add_argument(
        "--plain-every",
        type=int,
        default=1,
        help="a plain-student sample after every this many arm samples (default 1: A B A C A ...)",
    )
    p.add_argument("--methods", default=None, help=f"comma list among {','.join(METHODS)}")
    p.add_argument("--cache-modes", default=None, help=f"comma list among {','.join(CACHE_MODES)}")
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda:N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    args.out = Path(args.out)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["CACHE_MODES", "METHODS", "OUT_DIR", "build_arm", "headline", "markdown", "run"]
