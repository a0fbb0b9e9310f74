"""What one stage of distillation does: its teachers, length and KD terms (feature, response,
pseudo labels) with their decay. The recipes of :mod:`curriculum_search.curriculum.recipe` are
sequences of these stages; the distiller (:mod:`curriculum_search.distill.distiller`) runs one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from curriculum_search.utils.config import check


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


__all__ = ["Decay", "FeatureKD", "PseudoLabelKD", "ResponseKD", "Stage"]
