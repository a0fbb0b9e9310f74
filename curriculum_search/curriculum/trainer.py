"""The progressive curriculum trainer (also the supervised trainer: a stage without teachers).

Stages run in order; stage ``k`` starts from stage ``k-1``'s student weights with a fresh
optimizer and LR schedule (MTPD); teachers are frozen and run in eval mode without gradients,
their outputs served by the teacher-output cache when the input is cacheable. A training checkpoint
(student, distillation adapters, optimizer, scheduler, AMP scaler, RNG, data position) is written
atomically every ``checkpoint_every`` iterations and at each stage end, so an interrupted run
resumes where it stopped and continues identically. Callbacks fire at fixed *global* iterations
(``eval_every``) for evaluation and pruning, whatever the stage boundaries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from curriculum_search.curriculum.datasets import Datasets, build_datasets, stage_dataset
from curriculum_search.curriculum.recipe import Recipe, TeacherRef, recipe_to_dict, resolve_path
from curriculum_search.data import infinite_batches, make_loader
from curriculum_search.data.loader import default_num_workers
from curriculum_search.distill.cache import (
    CacheConfig,
    TeacherCache,
    TeacherOutput,
    TeacherRunner,
    cache_namespace,
    teacher_key,
)
from curriculum_search.distill.distiller import NECK_HEAD_PREFIXES, StageDistiller, copy_matching_tensors
from curriculum_search.engine.evaluate import EvalResult, evaluate
from curriculum_search.engine.optim import build_optimizer, build_scheduler
from curriculum_search.errors import CheckpointError, StudyError, TrialFailure
from curriculum_search.models import (
    Detector,
    DetectorSpec,
    build_detector,
    load_checkpoint,
    load_detector,
    save_checkpoint,
    save_detector,
)
from curriculum_search.utils.io import atomic_write_text, stable_hash, sweep_temp_files
from curriculum_search.utils.runtime import (
    pick_device,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
)

log = logging.getLogger(__name__)

#: Without a progress bar, a progress line is logged at most this often (seconds).
LOG_EVERY_S = 60.0

TRAIN_FORMAT = "curriculum_search/train-v1"

EvalCallback = Callable[[int, EvalResult], None]
"""Called as ``callback(global_iteration, result)`` after each periodic evaluation; may raise
(e.g. ``optuna.TrialPruned``) to stop the run."""


@dataclass
class RunResult:
    """What a finished run produced."""

    metrics: EvalResult
    history: list[dict[str, Any]]
    student_path: Path
    metrics_path: Path
    wall_time_s: float
    teacher_forwards: int
    resumed_from: int


@dataclass
class RunOptions:
    """Where and how to run a recipe (everything that is not part of the recipe itself)."""

    out_dir: Path
    cache_root: Path
    base_dir: Path
    source: str | Path | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    resume: bool = True
    progress: bool = True
    callbacks: list[EvalCallback] = field(default_factory=list)
    device: str | None = None
    threads: int | None = None
    keep_stage_checkpoints: bool = True
    progress_file: Path | None = None


def recipe_hash(recipe: Recipe) -> str:
    d = recipe_to_dict(recipe)
    d.pop("provenance", None)
    d.pop("name", None)
    d["train"].pop("device", None)
    d["train"].pop("threads", None)
    d["train"].pop("num_workers", None)
    return stable_hash(d)


def load_teacher(ref: TeacherRef, name: str, base_dir: Path, source: str | Path | None) -> Detector:
    """Load a teacher from its checkpoint (or build it from a spec with pretrained weights)."""
    if ref.checkpoint is not None:
        path = resolve_path(ref.checkpoint, base_dir, source=source, field_name=f"teachers.{name}.checkpoint")
        model, _ = load_detector(path)
    else:
        assert ref.spec is not None
        model = build_detector(
            _local_weights(ref.spec, base_dir, f"teachers.{name}.spec", source), source=source
        )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _local_weights(spec: DetectorSpec, base_dir: Path, field: str, source: str | Path | None) -> DetectorSpec:
    """A checkpoint path in ``weights`` resolves like every recipe path (see ``resolve_path``)."""
    w = spec.weights
    if not w or w == "timm" or w.startswith("torchvision:"):
        return spec
    path = resolve_path(w, base_dir, source=source, field_name=f"{field}.weights")
    return spec.with_updates(weights=str(path))


class _Dist:
    """torch.distributed context (``torchrun``): gloo on CPU, nccl on GPU; a no-op when single-process."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self._owns = False

    def init(self, device: torch.device) -> None:
        import torch.distributed as dist

        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            self._owns = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._owns:
            import torch.distributed as dist

            dist.destroy_process_group()


class TrainStep(nn.Module):
    """Student + stage distiller in one module, so DDP syncs the adapters' gradients too."""

    def __init__(self, student: Detector, distiller: StageDistiller) -> None:
        super().__init__()
        self.student = student
        self.distiller = distiller

    def forward(  # type: ignore[override]
        self,
        images: Tensor,
        targets: list[dict[str, Tensor]],
        teachers: dict[str, Detector],
        t_outs: dict[str, TeacherOutput],
        step: int,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        s_out = self.student(images, targets)
        terms = dict(s_out.losses)
        if t_outs:
            terms.update(
                self.distiller(self.student, s_out, teachers, t_outs, targets, images.shape[-1], step)
            )
        total = sum(terms.values(), torch.zeros((), device=images.device))
        return total, terms


def run_recipe(recipe: Recipe, options: RunOptions) -> RunResult:
    """Train ``recipe`` to the end (resuming from ``options.out_dir`` when a checkpoint exists).

    Writes into ``out_dir``: ``checkpoints/last.pt`` (training state), ``stage<k>.pt`` (student after
    each stage), ``student.pt`` (final weights only), ``metrics.json``, ``history.jsonl`` and
    ``recipe.yaml`` (the resolved recipe). Each ``history.jsonl`` row is an evaluation
    (``iteration``, ``stage``, the metrics) with ``losses``: the mean detection loss (``det``) and
    each weighted, decayed KD term (``kd_feature``, ``kd_cls``, ``kd_box``) over the ``loss_steps``
    steps since the previous row, so the KD/detection ratio is visible; a stage that ends between
    evaluations adds a row with ``stage_end: true`` and only the losses.

    Raises:
        TrialFailure: non-finite loss or out-of-memory (the reason is in the message).
    """
    t0 = time.time()
    dist = _Dist()
    cfg = recipe.train
    device = pick_device(
        options.device
        or (
            f"cuda:{dist.local_rank}"
            if cfg.device == "auto" and torch.cuda.is_available() and dist.enabled
            else cfg.device
        )
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    set_threads(options.threads or cfg.threads)
    dist.init(device)
    out = Path(options.out_dir)
    ckpt_dir = out / "checkpoints"
    if dist.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for folder in (out, ckpt_dir):  # partial writes of a killed earlier run of this folder
            if swept := sweep_temp_files(folder):
                log.info("removed %d unfinished file(s) of an interrupted write in %s", swept, folder)
        from curriculum_search.curriculum.recipe import save_recipe

        save_recipe(recipe, out / "recipe.yaml")
    seed_everything(recipe.seed + dist.rank)
    rhash = recipe_hash(recipe)

    if dist.enabled and not dist.main:
        dist.barrier()  # rank 0 generates/validates the data first
    data = build_datasets(
        recipe.data,
        class_names=recipe.student.class_names if recipe.data.kind == "coco" else None,
        cache_root=options.cache_root,
        base_dir=options.base_dir,
        source=options.source,
        seed=recipe.seed,
    )
    if dist.enabled and dist.main:
        dist.barrier()
    # one pass per evaluation: workers pay off on real images, not on the small synthetic ones
    eval_workers = loader_workers(recipe)
    spec = recipe.student
    if tuple(spec.class_names) != data.class_names:
        if len(data.class_names) != spec.num_classes:
            raise StudyError(
                f"{options.source or recipe.name}: student.num_classes is {spec.num_classes} but the dataset has "
                f"{len(data.class_names)} classes ({', '.join(data.class_names[:8])}...)"
            )
        spec = spec.with_updates(class_names=data.class_names)
    spec = _local_weights(spec, options.base_dir, "student", options.source)
    student = build_detector(spec, source=options.source).to(device)

    state = _load_state(ckpt_dir / "last.pt", rhash) if options.resume else None
    stage_idx, step_in_stage, history = 0, 0, []
    if state is not None:
        stage_idx, step_in_stage, history = state["stage"], state["step"], list(state.get("history", []))
        student.load_state_dict(state["student"])
        log.info("resuming %s at stage %d, iteration %d", out, stage_idx + 1, step_in_stage)
    if dist.main:  # exactly the rows up to the checkpoint: evaluations redone after it are not doubled
        atomic_write_text(out / "history.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    resumed_from = sum(s.iterations for s in recipe.stages[:stage_idx]) + step_in_stage
    bounds = recipe.stage_boundaries()
    total = recipe.total_iterations
    teacher_cache: dict[str, Detector] = {}
    forwards = 0
    autocast, scaler = _amp(device, cfg.amp)
    last_log = time.monotonic()
    bar = tqdm(
        total=total,
        initial=resumed_from,
        desc=recipe.name,
        unit="it",
        disable=not (options.progress and dist.main),
        leave=False,
        dynamic_ncols=True,
    )
    loss_sums: dict[str, Tensor] = {}
    try:
        for k in range(stage_idx, len(recipe.stages)):
            stage = recipe.stages[k]
            if state is not None and k == stage_idx and step_in_stage == 0:
                set_rng_state(state["rng"])  # resumed at a stage start: the stage draws what it would have
            teachers = {n: _get_teacher(teacher_cache, recipe, n, options, device) for n in stage.teachers}
            for n in list(teacher_cache):  # free teachers no later stage needs
                if all(n not in s.teachers for s in recipe.stages[k:]):
                    del teacher_cache[n]
            distiller = StageDistiller(stage, student, teachers, source=options.source, stage_index=k).to(
                device
            )
            if stage.init_from_teacher and k == 0 and state is None:  # MTPD option, fresh runs only
                copied = copy_matching_tensors(student, teachers[stage.teachers[0]], NECK_HEAD_PREFIXES)
                log.info(
                    "stage 1: copied %d neck/head tensors from teacher %s", len(copied), stage.teachers[0]
                )
            module: nn.Module = TrainStep(student, distiller)
            if dist.enabled:
                module = nn.parallel.DistributedDataParallel(module, find_unused_parameters=True)
            optimizer = build_optimizer([student, distiller], cfg, lr=stage.lr)
            scheduler = build_scheduler(optimizer, cfg, stage.iterations, stage.warmup_iterations)
            start = 0
            if state is not None and k == stage_idx and step_in_stage > 0:
                distiller.load_state_dict(state["distiller"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if scaler is not None and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                set_rng_state(state["rng"])
                start = step_in_stage
            runners = _runners(teachers, distiller, data, options, device)
            ds = stage_dataset(
                data.train,
                gt_fraction=stage.gt_fraction,
                use_unlabeled=stage.pseudo is not None and stage.pseudo.use_unlabeled,
                seed=recipe.seed + k,
            )
            loader = make_loader(
                ds,
                cfg.batch_size,
                shuffle=True,
                seed=recipe.seed * 1009 + k * 7919 + dist.rank,
                num_workers=loader_workers(recipe),
                drop_last=len(ds) > cfg.batch_size,  # type: ignore[arg-type]
                pin_memory=device.type == "cuda",
            )
            batches: Iterator[Any] = infinite_batches(loader, start_step=start)
            student.train()
            loss_sums = {}  # per-term sums since the last history row, within this stage
            for step in range(start, stage.iterations):
                images, targets = next(batches)
                images = images.to(device, non_blocking=True)
                targets = [_to_device(t, device) for t in targets]
                t_outs = {n: runners[n](images, targets) for n in stage.teachers} if stage.distills else {}
                if stage.pseudo is not None:
                    targets = distiller.targets(targets, t_outs, images.shape[-1])
                optimizer.zero_grad(set_to_none=True)
                try:
                    with autocast():
                        loss, terms = module(images, targets, teachers, t_outs, step)
                except torch.OutOfMemoryError as exc:
                    raise TrialFailure(
                        f"out of memory at iteration {bounds[k] + step + 1} (stage {k + 1}): {str(exc)[:120]}"
                    ) from None
                if not torch.isfinite(loss):
                    bad = ", ".join(f"{n}={v.item():.3g}" for n, v in terms.items() if not torch.isfinite(v))
                    raise TrialFailure(
                        f"non-finite loss at iteration {bounds[k] + step + 1} (stage {k + 1}): {bad or loss.item()}"
                    )
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip
                    )
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                _accumulate_terms(loss_sums, terms)
                g = bounds[k] + step + 1
                bar.update(1)
                # no bar (a log file, -q, a trial process): a progress line now and then instead
                if bar.disable and dist.main and time.monotonic() - last_log >= LOG_EVERY_S:
                    last_log = time.monotonic()
                    log.info(
                        "%s: iteration %d/%d (stage %d/%d), loss %.3f",
                        recipe.name,
                        g,
                        total,
                        k + 1,
                        len(recipe.stages),
                        float(loss.detach()),
                    )
                if options.progress_file is not None and (g % 5 == 0 or g == total):
                    _write_progress(options.progress_file, g, total, k, float(loss.detach()), dist)
                if g % 10 == 0 or step == start:
                    bar.set_postfix(
                        stage=f"{k + 1}/{len(recipe.stages)}", loss=f"{loss.item():.3f}", refresh=False
                    )
                last_of_stage = step + 1 == stage.iterations
                if cfg.eval_every and g % cfg.eval_every == 0 and g < total:
                    res = _evaluate(student, data, cfg, device, dist, workers=eval_workers)
                    history.append({"iteration": g, "stage": k, **res.as_dict(), **_loss_means(loss_sums)})
                    _append_history(out, history[-1], dist)
                    if dist.main:
                        for cb in options.callbacks:
                            cb(g, res)
                    student.train()
                if last_of_stage and k < len(recipe.stages) - 1 and loss_sums:  # the stage's loss tail
                    history.append({"iteration": g, "stage": k, "stage_end": True, **_loss_means(loss_sums)})
                    _append_history(out, history[-1], dist)
                if last_of_stage or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0):
                    nxt = (k + 1, 0) if last_of_stage else (k, step + 1)
                    if dist.main:
                        _save_state(
                            ckpt_dir / "last.pt",
                            rhash,
                            nxt,
                            student,
                            distiller,
                            optimizer,
                            scheduler,
                            scaler,
                            history,
                        )
                        if last_of_stage and options.keep_stage_checkpoints:
                            save_detector(
                                out / f"stage{k + 1}.pt", student, meta={"stage": k + 1, "iteration": g}
                            )
                    dist.barrier()
            forwards += sum(r.forward_calls for r in runners.values())
            state = None
        res = _evaluate(student, data, cfg, device, dist, workers=eval_workers)
        history.append(
            {
                "iteration": total,
                "stage": len(recipe.stages) - 1,
                "final": True,
                **res.as_dict(),
                **_loss_means(loss_sums),
            }
        )
        _append_history(out, history[-1], dist)
        if dist.main:
            for cb in options.callbacks:
                cb(total, res)
    finally:
        bar.close()
        dist.close()
    student_path = out / "student.pt"
    metrics_path = out / "metrics.json"
    wall = time.time() - t0
    if dist.main:
        metrics = {
            "recipe": recipe.name,
            "recipe_hash": rhash,
            **res.as_dict(),
            "iterations": total,
            "wall_time_s": round(wall, 2),
            "teacher_forwards": forwards,
            "history": history,
        }
        save_detector(
            student_path,
            student,
            metrics=res.as_dict(),
            meta={"recipe": recipe.name, "recipe_hash": rhash, **inference_meta(data)},
        )
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2))
    return RunResult(res, history, student_path, metrics_path, wall, forwards, resumed_from)


# -- helpers -------------------------------------------------------------------------------------
def inference_meta(data: Datasets) -> dict[str, Any]:
    """What ``predict`` needs besides the spec: the dataset's category ids and the input transform."""
    base = data.train_base
    tf = base.transform
    return {
        "class_names": list(base.class_names),
        "category_ids": [int(base.label_to_cat_id[k + 1]) for k in range(base.num_classes)],
        "image_size": int(tf.image_size),
        "mean": [float(v) for v in tf.mean],
        "std": [float(v) for v in tf.std],
    }


def loader_workers(recipe: Recipe) -> int:
    """``train.num_workers``, or when null: :func:`default_num_workers` for COCO data, 0 for synthetic."""
    if recipe.train.num_workers is not None:
        return recipe.train.num_workers
    return default_num_workers() if recipe.data.kind == "coco" else 0


def _amp(device: torch.device, enabled: bool) -> tuple[Callable[[], Any], torch.amp.GradScaler | None]:
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def _to_device(t: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}


def _get_teacher(
    cache: dict[str, Detector], recipe: Recipe, name: str, options: RunOptions, device: torch.device
) -> Detector:
    if name not in cache:
        cache[name] = load_teacher(recipe.teachers[name], name, options.base_dir, options.source).to(device)
    return cache[name]


def _runners(
    teachers: dict[str, Detector],
    distiller: StageDistiller,
    data: Datasets,
    options: RunOptions,
    device: torch.device,
) -> dict[str, TeacherRunner]:
    base = data.train_base
    runners = {}
    for name, model in teachers.items():
        cache = None
        if options.cache.enabled:
            ns = cache_namespace(
                teacher_key(model),
                data.fingerprint,
                distiller.needs_dense,
                distiller.needs_detections,
                options.cache.feature_dtype,
            )
            cache = TeacherCache(options.cache, ns)
        runners[name] = TeacherRunner(
            model,
            cache,
            need_dense=distiller.needs_dense,
            need_detections=distiller.needs_detections,
            cacheable=base.cacheable,
            device=device,
        )
    return runners


def _evaluate(
    student: Detector,
    data: Datasets,
    cfg: Any,
    device: torch.device,
    dist: _Dist,
    workers: int = 0,
) -> EvalResult:
    res = evaluate(
        student,
        data.val,
        batch_size=max(cfg.batch_size, 8),
        device=str(device),
        max_images=cfg.eval_images,
        num_workers=workers,
    )
    if not all(math.isfinite(v) for v in (res.ap, res.ap50)):
        raise TrialFailure("evaluation produced a non-finite AP")
    return res


def _write_progress(path: Path, iteration: int, total: int, stage: int, loss: float, dist: _Dist) -> None:
    if dist.main:
        atomic_write_text(
            path, json.dumps({"iteration": iteration, "total": total, "stage": stage, "loss": loss})
        )


def _accumulate_terms(sums: dict[str, Tensor], terms: dict[str, Tensor]) -> None:
    """Add this step's loss terms (detached, on their device: no sync) and count the step."""
    for name, value in terms.items():
        v = value.detach().float()
        sums[name] = sums[name] + v if name in sums else v
    one = next(iter(terms.values())).new_ones((), dtype=torch.float32) if terms else torch.ones(())
    sums[_STEPS] = sums[_STEPS] + one if _STEPS in sums else one


_STEPS = "_steps"


def _loss_means(sums: dict[str, Tensor]) -> dict[str, Any]:
    """``{"losses": {"det": …, "kd_feature": …, …}}``: mean of each term over the steps since the
    last history row (within the stage), the detection terms summed into ``det``; then resets
    ``sums``. The KD terms are already weighted and decayed, so ``kd_x / det`` is their share."""
    if _STEPS not in sums:
        return {}
    n = float(sums.pop(_STEPS))
    means = {name: float(v) / n for name, v in sums.items()}
    sums.clear()
    out: dict[str, float] = {"det": sum(v for name, v in means.items() if not name.startswith("kd_"))}
    out.update({name: v for name, v in sorted(means.items()) if name.startswith("kd_")})
    return {"losses": {k: float(f"{v:.6g}") for k, v in out.items()}, "loss_steps": int(n)}


def _append_history(out: Path, row: dict[str, Any], dist: _Dist) -> None:
    if dist.main:
        with open(out / "history.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def _save_state(
    path: Path,
    rhash: str,
    position: tuple[int, int],
    student: Detector,
    distiller: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    history: list[dict[str, Any]],
) -> None:
    payload = {
        "format": TRAIN_FORMAT,
        "recipe_hash": rhash,
        "stage": position[0],
        "step": position[1],
        "student": {k: v.detach().cpu() for k, v in student.state_dict().items()},
        "distiller": {k: v.detach().cpu() for k, v in distiller.state_dict().items()} if position[1] else {},
        "optimizer": optimizer.state_dict() if position[1] else {},
        "scheduler": scheduler.state_dict() if position[1] else {},
        "scaler": scaler.state_dict() if (scaler is not None and position[1]) else {},
        "rng": rng_state(),
        "history": history,
    }
    save_checkpoint(path, payload)


def _load_state(path: Path, rhash: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        log.warning("%s; starting this run from the beginning", exc)
        return None
    if state.get("format") != TRAIN_FORMAT:
        log.warning("%s: not a training checkpoint; starting from the beginning", path)
        return None
    if state.get("recipe_hash") != rhash:
        raise StudyError(
            f"{path}: this training checkpoint belongs to another recipe; use another output folder or --restart"
        )
    return state
