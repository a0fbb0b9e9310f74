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
from curriculum_search.distill.config import Decay, FeatureKD, PseudoLabelKD, ResponseKD, Stage
from curriculum_search.engine.config import TrainConfig
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


#: Stage and KD configs live with the distiller, the optimiser settings with the engine (the layers
#: that use them); recipes re-export them so a recipe is described from one module.
__all__ = [
    "RECIPE_FORMAT",
    "DataConfig",
    "Decay",
    "FeatureKD",
    "PseudoLabelKD",
    "Recipe",
    "ResponseKD",
    "Stage",
    "TeacherRef",
    "TrainConfig",
    "load_recipe",
    "recipe_to_dict",
    "resolve_path",
    "save_recipe",
]
