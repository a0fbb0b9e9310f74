"""Typed curricula and YAML recipes.

A *recipe* is everything needed to reproduce a training run: data, student, teacher pool, the
ordered stages of the curriculum, optimisation settings, seed and provenance. ``train --recipe``
runs one; the search exports the best one. Example::

    name: weak-to-strong
    seed: 0
    data: {kind: synthetic, image_size: 128}
    student: {arch: fcos, backbone: mobilenetv3_small_050, num_classes: 6, fpn_channels: 32}
    teachers:
      mid: {checkpoint: ../_zoo/fcos-resnet10t/model.pt}
      big: {checkpoint: ../_zoo/fcos-resnet18/model.pt}
    stages:
      - {teachers: [mid], iterations: 300, feature: {loss: mgd, weight: 1.0}, response: {cls_weight: 1.0}}
      - {teachers: [big], iterations: 300, feature: {loss: mgd, weight: 1.0}, decay: {kind: cosine, floor: 0.2}}
    train: {batch_size: 8, lr: 0.002}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curriculum_search.data.synthetic import SyntheticConfig
from curriculum_search.errors import ConfigError
from curriculum_search.models.spec import DetectorSpec
from curriculum_search.utils.config import check, from_dict, to_dict
from curriculum_search.utils.io import dump_yaml, load_yaml

RECIPE_FORMAT = 1


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared.

    ``kind: synthetic`` generates the built-in shapes dataset (``synthetic`` settings) into the
    cache; ``kind: coco`` reads ``train_images``/``train_ann`` and ``val_images``/``val_ann``.
    ``unlabeled_dir`` adds images without annotations (used by pseudo-label stages).
    ``train_subset``/``val_subset``: int = that many images, float in (0,1] = fraction, null = all.

    Splits: ``holdout`` carves a seeded set of labeled training images (int = count, float =
    fraction; seeded by ``subset_seed``) out of training — no stage ever trains on them;
    ``test_images``/``test_ann`` name an optional test set (COCO only). ``eval_split`` says which
    images the run evaluates on: ``val`` (default), ``holdout`` (the carve-out) or ``test``;
    ``val_subset`` applies to that split.
    """

    kind: Literal["synthetic", "coco"] = "synthetic"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    train_images: str | None = None
    train_ann: str | None = None
    val_images: str | None = None
    val_ann: str | None = None
    unlabeled_dir: str | None = None
    image_size: int = 128
    hflip: bool = True
    train_subset: int | float | None = None
    val_subset: int | float | None = None
    subset_seed: int = 0
    test_images: str | None = None
    test_ann: str | None = None
    holdout: int | float | None = None
    eval_split: Literal["val", "holdout", "test"] = "val"

    def __post_init__(self) -> None:
        if self.kind == "coco":
            for key in ("train_images", "train_ann", "val_images", "val_ann"):
                check(getattr(self, key) is not None, key, "required when kind is coco")
        check(
            (self.test_images is None) == (self.test_ann is None),
            "test_ann" if self.test_ann is None else "test_images",
            "give both test_images and test_ann (or neither)",
        )
        check(
            self.test_images is None or self.kind == "coco",
            "test_images",
            "a test set needs kind: coco (the synthetic data has train and val only)",
        )
        check(
            self.eval_split != "holdout" or self.holdout is not None,
            "eval_split",
            "holdout needs data.holdout (how many training images to carve out)",
        )
        check(
            self.eval_split != "test" or self.test_images is not None,
            "eval_split",
            "test needs data.test_images and data.test_ann",
        )
        _check_size("holdout", self.holdout)
        check(
            self.image_size >= 32 and self.image_size % 32 == 0,
            "image_size",
            "must be a multiple of 32, >= 32",
        )
        for key in ("train_subset", "val_subset"):
            _check_size(key, getattr(self, key))

    @property
    def has_test(self) -> bool:
        return self.test_images is not None


def _check_size(key: str, v: int | float | None) -> None:
    if isinstance(v, float):
        check(0 < v <= 1, key, f"a fraction must be in (0, 1], got {v}")
    elif isinstance(v, int):
        check(v >= 1, key, f"must be >= 1, got {v}")


@dataclass(frozen=True)
class TeacherRef:
    """A teacher: a checkpoint written by this package, or a spec (torchvision/timm weights)."""

    checkpoint: str | None = None
    spec: DetectorSpec | None = None

    def __post_init__(self) -> None:
        check(
            (self.checkpoint is None) != (self.spec is None),
            "checkpoint",
            "give exactly one of checkpoint or spec",
        )


@dataclass(frozen=True)
class FeatureKD:
    """Feature imitation on FPN levels with a registered loss (mse, tadf_feature, mgd, fgd, cwd, pkd)."""

    loss: str = "mgd"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.weight >= 0, "weight", "must be >= 0")


@dataclass(frozen=True)
class ResponseKD:
    """Head-level KD: class logits (temperature) and boxes; ``gate`` = TADF teacher-better gating."""

    cls_weight: float = 1.0
    box_weight: float = 1.0
    temperature: float = 2.0
    gate: bool = True

    def __post_init__(self) -> None:
        check(self.cls_weight >= 0, "cls_weight", "must be >= 0")
        check(self.box_weight >= 0, "box_weight", "must be >= 0")
        check(self.temperature > 0, "temperature", "must be > 0")


@dataclass(frozen=True)
class PseudoLabelKD:
    """Train on the stage teachers' fused detections (step A of pseudo-label KD).

    ``mode`` for labeled images: ``pseudo`` trains on the pseudo labels only (the paper's step A),
    ``union`` on the ground truth plus non-duplicate pseudo boxes, ``unlabeled_only`` keeps the
    ground truth and uses pseudo labels only where no annotations exist. Unlabeled images (from
    the dataset or ``data.unlabeled_dir``) join the stage when ``use_unlabeled``.
    Step B (fine-tuning on ground truth) is a following stage without teachers.
    """

    score_threshold: float = 0.5
    nms_iou: float = 0.5
    fuse: str = "wbf"
    fuse_iou: float = 0.55
    mode: Literal["pseudo", "union", "unlabeled_only"] = "union"
    use_unlabeled: bool = True

    def __post_init__(self) -> None:
        check(0 <= self.score_threshold < 1, "score_threshold", "must be in [0, 1)")
        check(0 < self.nms_iou <= 1, "nms_iou", "must be in (0, 1]")
        check(0 < self.fuse_iou <= 1, "fuse_iou", "must be in (0, 1]")


@dataclass(frozen=True)
class Decay:
    """Distillation decay gamma(t) over a stage: constant, linear, cosine or step, with a floor."""

    kind: str = "linear"
    floor: float = 0.1
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(0 <= self.floor <= 1, "floor", "must be in [0, 1]")


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: the student (from the previous stage) learns from ``teachers``.

    No teachers = plain supervised training (e.g. pseudo-label step B fine-tuning on
    ``gt_fraction`` of the labeled images). Each stage gets a fresh optimizer and LR schedule.
    """

    teachers: tuple[str, ...] = ()
    iterations: int = 100
    feature: FeatureKD | None = None
    response: ResponseKD | None = None
    pseudo: PseudoLabelKD | None = None
    decay: Decay = field(default_factory=Decay)
    lr: float | None = None
    warmup_iterations: int | None = None
    init_from_teacher: bool = False
    gt_fraction: float = 1.0
    name: str | None = None

    def __post_init__(self) -> None:
        check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        check(0 < self.gt_fraction <= 1, "gt_fraction", "must be in (0, 1]")
        check(self.lr is None or self.lr > 0, "lr", "must be > 0")
        if not self.teachers:
            for key in ("feature", "response", "pseudo"):
                check(getattr(self, key) is None, key, "needs at least one teacher in this stage")
            check(not self.init_from_teacher, "init_from_teacher", "needs a teacher in this stage")
        dup = sorted({t for t in self.teachers if self.teachers.count(t) > 1})
        check(not dup, "teachers", f"teacher(s) listed twice: {', '.join(dup)}")

    @property
    def distills(self) -> bool:
        return bool(self.teachers) and any(x is not None for x in (self.feature, self.response, self.pseudo))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all stages (a stage may override lr / warm-up).

    ``num_workers``: data-loading worker processes per training process; null (default) = one less
    than the available CPUs (at most 8) for ``data.kind: coco``, 0 for the synthetic data.
    """

    batch_size: int = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_iterations: int = 50
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 10.0
    amp: bool = True
    eval_every: int = 0
    eval_images: int | None = None
    checkpoint_every: int = 200
    num_workers: int | None = None
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")
        check(self.eval_every >= 0, "eval_every", "must be >= 0 (0 = only at the end)")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        check(
            self.num_workers is None or self.num_workers >= 0,
            "num_workers",
            "must be >= 0 (0 = load in the training process, null = automatic)",
        )


@dataclass(frozen=True)
class Recipe:
    """A complete, reproducible training run of a curriculum."""

    name: str
    student: DetectorSpec
    stages: tuple[Stage, ...]
    data: DataConfig = field(default_factory=DataConfig)
    teachers: dict[str, TeacherRef] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    format: int = RECIPE_FORMAT
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(
            self.name.strip(". ") != "" and not any(c in self.name for c in "/\\\0"),
            "name",
            f"must be a plain name, not a path (it names the run folder), got {self.name!r}",
        )
        check(len(self.stages) >= 1, "stages", "needs at least one stage")
        for i, st in enumerate(self.stages):
            for t in st.teachers:
                check(
                    t in self.teachers,
                    f"stages[{i}].teachers",
                    f"unknown teacher {t!r} (known: {sorted(self.teachers)})",
                )
        check(self.format == RECIPE_FORMAT, "format", f"unsupported recipe format {self.format}")

    @property
    def total_iterations(self) -> int:
        return sum(s.iterations for s in self.stages)

    def stage_boundaries(self) -> list[int]:
        """Global iteration at which each stage starts, plus the total at the end."""
        out, acc = [0], 0
        for s in self.stages:
            acc += s.iterations
            out.append(acc)
        return out

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe YAML; errors name the file and the dotted key."""
    return from_dict(Recipe, load_yaml(path), path=path)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return to_dict(recipe)  # type: ignore[no-any-return]


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write a recipe atomically as YAML."""
    path = Path(path)
    dump_yaml(recipe_to_dict(recipe), path)
    return path


def resolve_path(
    value: str, base: Path, *, source: str | Path | None, field_name: str, allow_outside: bool = False
) -> Path:
    """Resolve a path from a recipe/space file.

    Absolute paths are used as given (an explicit choice). Relative paths resolve against ``base``
    and may not climb out of it (``..``) unless ``allow_outside``: a recipe cannot quietly make the
    tool read or overwrite files outside its study.
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    resolved = (base / p).resolve()
    if not allow_outside and not resolved.is_relative_to(base.resolve()):
        raise ConfigError(
            source, field_name, f"relative path {value!r} escapes {base} (use an absolute path)"
        )
    return resolved
