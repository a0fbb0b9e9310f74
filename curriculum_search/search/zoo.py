"""The teacher zoo of a space: train missing zoo teachers, describe every teacher of the pool.

``zoo build`` trains each ``zoo:`` entry of the pool that has no checkpoint yet (a plain supervised
run through the same trainer) into ``<studies>/_zoo/<name>-<key>/``, then measures its cost. Every
teacher gets an ``info.json`` next to its weights (AP on the selection split, parameters,
GFLOPs, latency) which the search uses (weak->strong baseline, proxy cost) and ``zoo list`` prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from curriculum_search.curriculum.recipe import Recipe, Stage, TrainConfig
from curriculum_search.curriculum.trainer import RunOptions, load_teacher, run_recipe
from curriculum_search.distill.cache import CacheConfig
from curriculum_search.errors import CheckpointError, ConfigError
from curriculum_search.models import Detector, load_checkpoint
from curriculum_search.models.cost import measure_cost
from curriculum_search.search.encoding import teacher_refs, zoo_checkpoint_path
from curriculum_search.search.processes import die_with_parent
from curriculum_search.search.space import SearchSpace, ZooTrain, pool_hash
from curriculum_search.search.storage import file_lock
from curriculum_search.utils.io import atomic_write_text, stable_hash
from curriculum_search.utils.runtime import pick_device

log = logging.getLogger(__name__)


@dataclass
class TeacherInfo:
    """What the search knows about a teacher of the pool."""

    name: str
    kind: str
    label: str
    ready: bool
    checkpoint: str | None = None
    ap: float | None = None
    ap50: float | None = None
    params: int | None = None
    gflops: float | None = None
    latency_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _info_path(space: SearchSpace, name: str, studies_root: Path) -> Path:
    entry = space.teachers[name]
    if entry.zoo is not None:
        return zoo_checkpoint_path(space, name, studies_root).with_name("info.json")
    key = stable_hash({"pool": pool_hash(space), "name": name, "data": str(space.split_data("selection"))})
    return studies_root / "_zoo" / "_info" / f"{name}-{key}.json"


def _spec_label(space: SearchSpace, name: str) -> str:
    entry = space.teachers[name]
    spec = entry.spec or (entry.zoo.spec if entry.zoo else None)
    return spec.label if spec else Path(entry.checkpoint or "?").name


def zoo_recipe(space: SearchSpace, name: str) -> Recipe:
    """The supervised recipe that trains zoo teacher ``name`` on the space's full data."""
    entry = space.teachers[name]
    assert entry.zoo is not None
    return supervised_recipe(space, f"zoo-{name}", entry.zoo)


def supervised_recipe(space: SearchSpace, name: str, z: ZooTrain) -> Recipe:
    """One supervised stage of ``z.iterations`` on the space's full data with ``z``'s settings."""
    train = TrainConfig(
        batch_size=z.batch_size,
        lr=z.lr,
        optimizer=space.train.optimizer,
        weight_decay=space.train.weight_decay,
        warmup_iterations=min(100, z.iterations // 10),
        eval_every=0,
        checkpoint_every=max(50, z.iterations // 5),
        amp=space.train.amp,
        device=space.train.device,
        threads=space.train.threads,
        num_workers=space.train.num_workers,
    )
    spec = z.spec.with_updates(image_size=space.data.image_size)
    return Recipe(
        name=name,
        student=spec,
        stages=(Stage(iterations=z.iterations),),
        data=space.split_data("selection"),
        train=train,
        seed=z.seed,
    )


def build_zoo(
    space: SearchSpace,
    studies_root: Path,
    *,
    cache: CacheConfig | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    source: str | Path | None = None,
    reference: bool = True,
    processes: int | None = None,
) -> list[TeacherInfo]:
    """Train every missing zoo teacher, then describe the whole pool (AP, cost).

    ``processes``: teachers trained at once (default: on a CPU, as many as the cores allow with
    ``threads`` each, see :func:`_zoo_parallelism`; on a GPU one).

    ``reference``: also train (once) and list the student alone for as long as the longest-trained
    teacher. ``run`` skips it: its selection race trains the student alone with the shipped
    student's own protocol and seeds.
    """
    names = [n for n, e in space.teachers.items() if e.zoo is not None]
    for name in names:  # verify present checkpoints (a damaged one is trained again here)
        if zoo_checkpoint_path(space, name, studies_root).is_file():
            _train_teacher(space, name, studies_root, cache, device, threads, progress, source)
    missing = [n for n in names if not zoo_checkpoint_path(space, n, studies_root).is_file()]
    at_once, per_process = _zoo_parallelism(space, missing, device, threads)
    if processes is not None:
        at_once = min(at_once, max(1, processes)) if at_once > 1 else 1
    if at_once <= 1:
        for name in missing:
            _train_teacher(space, name, studies_root, cache, device, threads, progress, source)
    else:
        _train_in_parallel(space, missing, studies_root, cache, device, per_process, source, at_once)
    infos = describe_pool(space, studies_root, device=device, evaluate_missing=True, source=source)
    ref = student_reference(
        space,
        studies_root,
        cache=cache,
        device=device,
        threads=threads,
        progress=progress,
        source=source,
        train=reference,
    )
    return [*infos, ref] if ref is not None else infos


def _zoo_parallelism(
    space: SearchSpace, missing: Sequence[str], device: str | None, threads: int | None
) -> tuple[int, int]:
    """(teachers trained at once, threads each). On a CPU, teachers train side by side, one
    process per ``threads`` cores (all cores: one thread each), because small models use several
    cores poorly (2 processes x 1 thread train 1.8x faster than 1 x 2 on 2 cores); on a GPU one
    at a time."""
    if len(missing) <= 1 or pick_device(device or space.train.device).type != "cpu":
        return 1, threads or 0
    cores = os.cpu_count() or 1
    per = max(1, threads or 1)
    at_once = min(len(missing), max(1, cores // per))
    return at_once, (threads or max(1, cores // at_once))


def _train_teacher(
    space: SearchSpace,
    name: str,
    studies_root: Path,
    cache: CacheConfig | None,
    device: str | None,
    threads: int | None,
    progress: bool,
    source: str | Path | None,
) -> float | None:
    """Train zoo teacher ``name`` unless a verified checkpoint exists; its AP (``None``: present)."""
    entry = space.teachers[name]
    assert entry.zoo is not None
    ckpt = zoo_checkpoint_path(space, name, studies_root)
    # one trainer per teacher: two studies (or two runs) that need it wait for each other
    # instead of interleaving checkpoint/hash pairs in one folder
    with file_lock(
        ckpt.parent / ".train.lock",
        wait=True,
        what=f"zoo teacher {name}",
        hint="another process is training it",
    ):
        if ckpt.is_file():
            try:
                load_checkpoint(ckpt)  # verified against its sha256: a damaged teacher is never used
                return None
            except CheckpointError as exc:
                log.warning("%s; training zoo teacher %s again", exc, name)
                ckpt.unlink()
                _info_path(space, name, studies_root).unlink(missing_ok=True)
        log.info(
            "zoo: training teacher %s (%s, %d iterations)", name, entry.zoo.spec.label, entry.zoo.iterations
        )
        result = run_recipe(
            zoo_recipe(space, name),
            _options(ckpt.parent, studies_root, cache, device, threads, progress, source),
        )
        os.replace(result.student_path, ckpt)
        sidecar = result.student_path.with_name(result.student_path.name + ".sha256")
        if sidecar.exists():
            os.replace(sidecar, ckpt.with_name(ckpt.name + ".sha256"))
        log.info("zoo: %s reached AP %.3f", name, result.metrics.ap)
        return float(result.metrics.ap)


def _train_in_parallel(
    space: SearchSpace,
    names: Sequence[str],
    studies_root: Path,
    cache: CacheConfig | None,
    device: str | None,
    threads: int,
    source: str | Path | None,
    at_once: int,
) -> None:
    """Train ``names`` in ``at_once`` processes of ``threads`` threads, the longest first; each
    process dies with this one (kill -9 leaves no orphan training), and its checkpoint is written
    atomically, so a rerun trains only what did not finish."""
    order = sorted(names, key=lambda n: -space.teachers[n].zoo.iterations)  # type: ignore[union-attr]
    log.info(
        "zoo: training %d teachers, %d at once with %d thread(s) each: %s",
        len(order),
        at_once,
        threads,
        ", ".join(order),
    )
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(at_once, mp_context=ctx, initializer=die_with_parent) as pool:
        futures = {
            pool.submit(_train_teacher, space, n, studies_root, cache, device, threads, False, source): n
            for n in order
        }
        try:
            for done in as_completed(futures):
                ap = done.result()
                if ap is not None:
                    log.info("zoo: %s reached AP %.3f (%.0f s)", futures[done], ap, time.time() - t0)
        except BaseException:
            for proc in list(getattr(pool, "_processes", {}).values()):  # no teacher trains on after an error
                proc.kill()
            raise


def student_reference(
    space: SearchSpace,
    studies_root: Path,
    *,
    cache: CacheConfig | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    source: str | Path | None = None,
    train: bool = True,
) -> TeacherInfo | None:
    """The student trained alone as long as the longest-trained zoo teacher: the gap a teacher
    must show to be worth distilling from. Trained once per (student, data, iterations)."""
    iters = max((e.zoo.iterations for e in space.teachers.values() if e.zoo is not None), default=0)
    if iters == 0:
        return None
    z = next(e.zoo for e in space.teachers.values() if e.zoo is not None and e.zoo.iterations == iters)
    key = stable_hash(
        {
            "student": str(space.student),
            "data": str(space.split_data("selection")),
            "iterations": iters,
            "lr": z.lr,
            "bs": z.batch_size,
        }
    )
    out = studies_root / "_zoo" / f"_student-alone-{key}"
    info_file = out / "info.json"
    if info_file.is_file():
        return TeacherInfo(**json.loads(info_file.read_text()))
    if not train:
        return None
    log.info("zoo: training the student alone for %d iterations (reference)", iters)
    result = run_recipe(
        supervised_recipe(space, "student-alone", dataclasses.replace(z, spec=space.student)),
        _options(out, studies_root, cache, device, threads, progress, source),
    )
    from curriculum_search.models import load_detector

    cost = measure_cost(
        load_detector(result.student_path)[0], space.data.image_size, device=str(pick_device(device or "cpu"))
    )
    info = TeacherInfo(
        "(student alone)",
        "reference",
        space.student.label,
        True,
        None,
        result.metrics.ap,
        result.metrics.ap50,
        cost.params,
        cost.gflops,
        cost.latency_ms,
    )
    atomic_write_text(info_file, json.dumps(info.as_dict(), indent=2))
    return info


def _options(
    out: Path,
    studies_root: Path,
    cache: CacheConfig | None,
    device: str | None,
    threads: int | None,
    progress: bool,
    source: str | Path | None,
) -> RunOptions:
    return RunOptions(
        out_dir=out,
        cache_root=studies_root / "_cache",
        base_dir=studies_root,
        source=source,
        cache=cache or CacheConfig(enabled=False),
        progress=progress,
        device=device,
        threads=threads,
        keep_stage_checkpoints=False,
    )


def describe_pool(
    space: SearchSpace,
    studies_root: Path,
    *,
    device: str | None = None,
    evaluate_missing: bool = False,
    source: str | Path | None = None,
) -> list[TeacherInfo]:
    """Info of every pool teacher (computed once, then read from its ``info.json``)."""
    refs = teacher_refs(space, studies_root)
    infos = []
    for name in space.teachers:
        path = _info_path(space, name, studies_root)
        if path.is_file():
            infos.append(TeacherInfo(**json.loads(path.read_text())))
            continue
        ref = refs[name]
        ready = (
            ref.checkpoint is None
            or (studies_root / ref.checkpoint).is_file()
            or Path(ref.checkpoint).is_file()
        )
        info = TeacherInfo(name, space.teachers[name].kind, _spec_label(space, name), ready, ref.checkpoint)
        if ready and evaluate_missing:
            info = _measure(space, name, info, studies_root, device, source)
            atomic_write_text(path, json.dumps(info.as_dict(), indent=2))
        infos.append(info)
    return infos


def teacher_label_map(
    teacher_class_names: Sequence[str], dataset_class_names: Sequence[str]
) -> dict[int, int]:
    """The teacher's label → the dataset's label, matched by class name.

    A teacher is scored in its own label space: a superset (e.g. torchvision's 91-slot COCO
    space with ``N/A`` placeholders), a subset or another order of the dataset's classes is
    mapped by name (case- and whitespace-insensitive, as pseudo labels are); its other classes
    are dropped, dataset classes it lacks score 0. A teacher with the placeholder names
    ``class_1 … class_N`` of an unnamed spec and as many classes as the dataset is taken to
    share its order (identity).

    Raises:
        ValueError: the teacher shares no class name with the dataset.
    """
    from curriculum_search.distill.pseudo.labels import class_mapping

    names = tuple(teacher_class_names)
    if names == tuple(f"class_{i + 1}" for i in range(len(names))) and len(names) == len(dataset_class_names):
        return {i + 1: i + 1 for i in range(len(names))}
    mapping = class_mapping(names, dataset_class_names)
    if not mapping:
        raise ValueError(
            f"no class name in common with the dataset's ({', '.join(dataset_class_names[:6])}"
            f"{', ...' if len(dataset_class_names) > 6 else ''}); set its spec's class_names"
        )
    return mapping


def _measure(
    space: SearchSpace,
    name: str,
    info: TeacherInfo,
    studies_root: Path,
    device: str | None,
    source: str | Path | None,
) -> TeacherInfo:
    from curriculum_search.curriculum.datasets import build_datasets
    from curriculum_search.engine.evaluate import evaluate

    dev = pick_device(device or space.train.device)
    model: Detector = load_teacher(teacher_refs(space, studies_root)[name], name, studies_root, source).to(
        dev
    )
    data = build_datasets(
        space.split_data("selection"),
        class_names=space.student.class_names if space.data.kind == "coco" else None,
        cache_root=studies_root / "_cache",
        base_dir=studies_root,
        source=source,
    )
    try:  # scored in its own label space, mapped to the dataset's classes by name
        label_map = teacher_label_map(model.class_names, data.class_names)
    except ValueError as exc:
        raise ConfigError(source, f"teachers.{name}", str(exc)) from None
    res = evaluate(
        model,
        data.val,
        batch_size=8,
        device=str(dev),
        max_images=space.train.eval_images,
        label_map=label_map,
    )
    cost = measure_cost(model, space.data.image_size, device=str(dev))
    info.ap, info.ap50 = res.ap, res.ap50
    info.params, info.gflops, info.latency_ms = cost.params, cost.gflops, cost.latency_ms
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return info


def format_pool(infos: list[TeacherInfo]) -> str:
    """A plain-text table of the pool, weakest first."""
    rows = sorted(infos, key=lambda i: (i.ap is None, i.ap or 0.0))
    head = f"{'teacher':<17}{'model':<44}{'AP':>7}{'AP50':>7}{'params':>10}{'GFLOPs':>8}{'ms/img':>8}  status"
    lines = [head, "-" * len(head)]
    for i in rows:
        ap = f"{i.ap:.3f}" if i.ap is not None else "-"
        ap50 = f"{i.ap50:.3f}" if i.ap50 is not None else "-"
        params = f"{i.params / 1e6:.2f}M" if i.params else "-"
        gf = f"{i.gflops:.2f}" if i.gflops is not None else "-"
        lat = f"{i.latency_ms:.1f}" if i.latency_ms is not None else "-"
        status = (
            "reference" if i.kind == "reference" else ("ready" if i.ready else "missing (run `zoo build`)")
        )
        lines.append(f"{i.name:<17}{i.label:<44}{ap:>7}{ap50:>7}{params:>10}{gf:>8}{lat:>8}  {status}")
    return "\n".join(lines)


__all__ = [
    "TeacherInfo",
    "build_zoo",
    "describe_pool",
    "format_pool",
    "student_reference",
    "supervised_recipe",
    "teacher_label_map",
    "zoo_recipe",
]
