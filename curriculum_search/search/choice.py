"""A decoded curriculum (:class:`CurriculumChoice`: ordered teacher stages plus the settings of each
distillation method) and the exact split of an iteration budget into its stages.

Trial parameters become a choice in :mod:`curriculum_search.search.encoding`; a choice becomes a
recipe in :mod:`curriculum_search.search.recipes`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from curriculum_search.curriculum.recipe import Decay, FeatureKD, PseudoLabelKD, ResponseKD, Stage
from curriculum_search.utils.io import stable_hash

#: Significant digits kept for decoded float settings (weights, temperature, floor, lr).
SIG_DIGITS = 4
_EPS = 1e-9

# -- splitting a budget into stages ---------------------------------------------------------------


def floor_fractions(fractions: Sequence[float], minimum: float) -> list[float]:
    """Normalise ``fractions`` to sum 1 and raise each to at least ``minimum`` (water-filling).

    Entries below ``minimum`` are set to it; the others share the rest in proportion to their
    values, repeated until none is below. All-zero input gives equal shares.

    Raises:
        ValueError: ``len(fractions) × minimum > 1`` or a negative fraction.
    """
    n = len(fractions)
    if n == 0:
        return []
    if any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be >= 0, got {list(fractions)}")
    if n * minimum > 1 + _EPS:
        raise ValueError(f"{n} stages cannot each get a fraction >= {minimum}")
    total = sum(fractions)
    base = [f / total for f in fractions] if total > 0 else [1.0 / n] * n
    fixed: set[int] = set()
    while True:
        free = [i for i in range(n) if i not in fixed]
        rest = 1.0 - minimum * len(fixed)
        mass = sum(base[i] for i in free)
        out = [minimum] * n
        for i in free:
            out[i] = rest * base[i] / mass if mass > 0 else rest / len(free)
        low = [i for i in free if out[i] < minimum - _EPS]
        if not low:
            return out
        fixed.update(low)


def split_iterations(fractions: Sequence[float], total: int, min_iterations: int = 1) -> tuple[int, ...]:
    """Integer split of ``total`` iterations by ``fractions`` that sums exactly to ``total``.

    Each part is ``floor(f × total)`` but at least ``min_iterations`` (itself capped at
    ``total // n`` and at least 1); the difference to ``total`` is settled one iteration at a time
    by the largest remainders (adding) or the smallest ones (removing, never below the minimum);
    ties go to the earlier stage.

    Raises:
        ValueError: fewer iterations than stages.
    """
    n = len(fractions)
    if n == 0:
        return ()
    if total < n:
        raise ValueError(f"cannot split {total} iterations into {n} stages of >= 1 iteration")
    s = sum(fractions)
    fr = [f / s for f in fractions] if s > 0 else [1.0 / n] * n
    lo = min(max(1, min_iterations), total // n)
    raw = [f * total for f in fr]
    parts = [max(lo, math.floor(r + 1e-6)) for r in raw]
    while sum(parts) < total:
        i = max(range(n), key=lambda j: (raw[j] - parts[j], -j))
        parts[i] += 1
    while sum(parts) > total:
        i = min((j for j in range(n) if parts[j] > lo), key=lambda j: (raw[j] - parts[j], j))
        parts[i] -= 1
    return tuple(parts)


def min_stage_iterations(total: int, min_fraction: float, n_stages: int) -> int:
    """Fewest iterations of a stage: ``ceil(min_fraction × total)``, at least 1, at most ``total // n``."""
    return min(max(1, math.ceil(min_fraction * total - _EPS)), max(1, total // max(1, n_stages)))


# -- the decoded curriculum -----------------------------------------------------------------------


@dataclass(frozen=True)
class StageChoice:
    """One decoded stage: its teacher and its iterations out of the choice's budget."""

    teacher: str
    iterations: int


@dataclass(frozen=True)
class PseudoSteps:
    """Pseudo-label KD as the paper does it, in two stages.

    Step A: ``pseudo_iterations`` on the fused (weighted box fusion) pseudo labels of all
    ``teachers`` only — the labeled images' ground truth is replaced, unlabeled images of the
    space join; step B: ``finetune_iterations`` of supervised fine-tuning on ``gt_fraction`` of the
    labeled images. ``teachers`` is a set, kept sorted.
    """

    teachers: tuple[str, ...]
    pseudo_iterations: int
    finetune_iterations: int
    gt_fraction: float

    def __post_init__(self) -> None:
        if not self.teachers or len(set(self.teachers)) != len(self.teachers):
            raise ValueError(f"pseudo-label teachers must be distinct and >= 1, got {list(self.teachers)}")
        if self.pseudo_iterations < 1 or self.finetune_iterations < 1:
            raise ValueError(
                f"both steps need >= 1 iteration, got {self.pseudo_iterations} and {self.finetune_iterations}"
            )
        if not 0 < self.gt_fraction <= 1:
            raise ValueError(f"gt_fraction must be in (0, 1], got {self.gt_fraction}")

    def as_list(self) -> list[Any]:
        return [list(self.teachers), self.pseudo_iterations, self.finetune_iterations, self.gt_fraction]


@dataclass(frozen=True)
class CurriculumChoice:
    """A decoded curriculum: ordered stages plus per-method settings shared by all stages.

    ``stages`` empty means the student-only baseline (supervised training, no teacher).
    Settings of a method that is off are ``None``; ``decay_floor`` is 0 for a constant decay.

    Attributes:
        stages: teacher and iterations of each stage, in order.
        total_iterations: the budget the iterations split (sum of the stages' iterations).
        min_stage_fraction: floor used when re-splitting for another budget (:meth:`to_stages`).
        feature_loss / feature_weight: feature KD loss name and weight (None = off).
        response / cls_weight / box_weight / temperature: TADF response KD (gated).
        pseudo: pseudo-label KD on.
        decay / decay_floor: distillation decay schedule over each stage.
        lr: learning rate of every stage.
        pseudo_steps: the paper's two-step pseudo-label KD (then ``stages`` is empty, ``pseudo``
            True, no feature/response KD, constant decay).
    """

    stages: tuple[StageChoice, ...]
    total_iterations: int
    min_stage_fraction: float = 0.0
    feature_loss: str | None = None
    feature_weight: float | None = None
    response: bool = False
    cls_weight: float | None = None
    box_weight: float | None = None
    temperature: float | None = None
    pseudo: bool = False
    decay: str = "constant"
    decay_floor: float = 0.0
    lr: float = 2e-3
    pseudo_steps: PseudoSteps | None = None

    def __post_init__(self) -> None:
        ps = self.pseudo_steps
        if ps is not None:
            if self.stages or not self.pseudo:
                raise ValueError("a two-step pseudo-label curriculum has no teacher stages and pseudo on")
            if ps.pseudo_iterations + ps.finetune_iterations != self.total_iterations:
                raise ValueError(
                    f"pseudo-label steps sum to {ps.pseudo_iterations + ps.finetune_iterations}, "
                    f"not {self.total_iterations}"
                )
        if self.stages and sum(s.iterations for s in self.stages) != self.total_iterations:
            raise ValueError(
                f"stage iterations sum to {sum(s.iterations for s in self.stages)}, not {self.total_iterations}"
            )
        if len({s.teacher for s in self.stages}) != len(self.stages):
            raise ValueError(f"a teacher appears twice in {[s.teacher for s in self.stages]}")

    @classmethod
    def student_only(cls, total_iterations: int, lr: float) -> CurriculumChoice:
        """The student-only baseline: one supervised stage, no teacher, no distillation."""
        return cls(stages=(), total_iterations=total_iterations, lr=round_sig(lr))

    @property
    def is_student_only(self) -> bool:
        return not self.stages and self.pseudo_steps is None

    @property
    def teachers(self) -> tuple[str, ...]:
        if self.pseudo_steps is not None:
            return self.pseudo_steps.teachers
        return tuple(s.teacher for s in self.stages)

    @property
    def fractions(self) -> tuple[float, ...]:
        """Share of the budget of each stage (``iterations / total_iterations``; two-step
        pseudo-label KD: its two steps)."""
        return tuple(it / self.total_iterations for it in self._stage_iterations())

    def _stage_iterations(self) -> tuple[int, ...]:
        ps = self.pseudo_steps
        if ps is not None:
            return (ps.pseudo_iterations, ps.finetune_iterations)
        return tuple(s.iterations for s in self.stages)

    def boundaries(self) -> list[int]:
        """Start of each trained stage plus the total, in global iterations (student only:
        ``[0, total]``)."""
        out = [0]
        for it in self._stage_iterations() or (self.total_iterations,):
            out.append(out[-1] + it)
        return out

    @property
    def distills(self) -> bool:
        if self.pseudo_steps is not None:
            return True
        return bool(self.stages) and (self.feature_loss is not None or self.response or self.pseudo)

    def content(self) -> dict[str, Any]:
        """What trains, as plain data (the input of :attr:`key`)."""
        return {
            "stages": [[s.teacher, s.iterations] for s in self.stages],
            "total_iterations": self.total_iterations,
            "feature": None if self.feature_loss is None else [self.feature_loss, self.feature_weight],
            "response": [self.cls_weight, self.box_weight, self.temperature] if self.response else None,
            "pseudo": self.pseudo,
            "decay": [self.decay, self.decay_floor],
            "lr": self.lr,
            # only when set: the keys of every other curriculum stay what they were
            **({"pseudo_steps": self.pseudo_steps.as_list()} if self.pseudo_steps is not None else {}),
        }

    @property
    def key(self) -> str:
        """Stable hash of :meth:`content`: equal keys train the same curriculum."""
        return stable_hash(self.content())

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (e.g. a trial user attribute); :func:`choice_from_dict` inverts it."""
        return {
            "stages": [{"teacher": s.teacher, "iterations": s.iterations} for s in self.stages],
            "total_iterations": self.total_iterations,
            "min_stage_fraction": self.min_stage_fraction,
            "feature_loss": self.feature_loss,
            "feature_weight": self.feature_weight,
            "response": self.response,
            "cls_weight": self.cls_weight,
            "box_weight": self.box_weight,
            "temperature": self.temperature,
            "pseudo": self.pseudo,
            "decay": self.decay,
            "decay_floor": self.decay_floor,
            "lr": self.lr,
            **({"pseudo_steps": asdict(self.pseudo_steps)} if self.pseudo_steps is not None else {}),
            "key": self.key,
        }

    def iterations_for(self, total_iterations: int) -> tuple[int, ...]:
        """Stage iterations for another budget: the same fractions, re-split exactly."""
        if total_iterations == self.total_iterations:
            return self._stage_iterations()
        n = len(self._stage_iterations())
        lo = min_stage_iterations(total_iterations, self.min_stage_fraction, n)
        return split_iterations(self.fractions, total_iterations, lo)

    def to_stages(self, total_iterations: int | None = None) -> tuple[Stage, ...]:
        """Recipe stages for a budget (default: the choice's own ``total_iterations``).

        Every stage gets the same methods: ``FeatureKD(loss, weight)``, ``ResponseKD(cls, box,
        temperature, gate=True)``, ``PseudoLabelKD()`` (defaults), ``Decay(kind, floor)`` and
        ``lr``. The student-only choice gives one stage without teachers.
        """
        total = self.total_iterations if total_iterations is None else total_iterations
        if self.is_student_only:
            return (Stage(teachers=(), iterations=total, lr=self.lr, name="student"),)
        if self.pseudo_steps is not None:
            a, b = self.iterations_for(total)
            return (
                Stage(
                    teachers=self.pseudo_steps.teachers,
                    iterations=a,
                    pseudo=PseudoLabelKD(mode="pseudo", fuse="wbf", use_unlabeled=True),
                    decay=Decay(kind="constant", floor=0.0),
                    lr=self.lr,
                    name="pseudo labels",
                ),
                Stage(iterations=b, gt_fraction=self.pseudo_steps.gt_fraction, lr=self.lr, name="fine-tune"),
            )
        feature = (
            None
            if self.feature_loss is None
            else FeatureKD(loss=self.feature_loss, weight=float(self.feature_weight or 0.0))
        )
        response = (
            ResponseKD(
                cls_weight=float(self.cls_weight or 0.0),
                box_weight=float(self.box_weight or 0.0),
                temperature=float(self.temperature or 1.0),
                gate=True,
            )
            if self.response
            else None
        )
        pseudo = PseudoLabelKD() if self.pseudo else None
        decay = Decay(kind=self.decay, floor=self.decay_floor)
        return tuple(
            Stage(
                teachers=(s.teacher,),
                iterations=it,
                feature=feature,
                response=response,
                pseudo=pseudo,
                decay=decay,
                lr=self.lr,
                name=s.teacher,
            )
            for s, it in zip(self.stages, self.iterations_for(total))
        )

    def describe(self) -> str:
        """One line, e.g. ``mid(40%) → big(60%) | mgd×1.2 resp(cls×1 box×1 T2) gate | cosine→0.1 | lr 2e-3``."""
        if self.is_student_only:
            return f"student only | lr {_fmt_lr(self.lr)}"
        if self.pseudo_steps is not None:
            ps, (fa, fb) = self.pseudo_steps, self.fractions
            return (
                f"pseudo labels of {'+'.join(ps.teachers)}({round(100 * fa)}%) → "
                f"fine-tune on {_fmt(100 * ps.gt_fraction)}% of labels({round(100 * fb)}%) | lr {_fmt_lr(self.lr)}"
            )
        order = " → ".join(f"{s.teacher}({round(100 * f)}%)" for s, f in zip(self.stages, self.fractions))
        methods = []
        if self.feature_loss is not None:
            methods.append(f"{self.feature_loss}×{_fmt(self.feature_weight)}")
        if self.response:
            methods.append(
                f"resp(cls×{_fmt(self.cls_weight)} box×{_fmt(self.box_weight)} T{_fmt(self.temperature)}) gate"
            )
        if self.pseudo:
            methods.append("pseudo")
        decay = "constant" if self.decay == "constant" else f"{self.decay}→{_fmt(self.decay_floor)}"
        return f"{order} | {' '.join(methods) or 'no KD'} | {decay} | lr {_fmt_lr(self.lr)}"


def choice_from_dict(data: Mapping[str, Any]) -> CurriculumChoice:
    """Inverse of :meth:`CurriculumChoice.as_dict` (the ``key`` entry, if any, is checked)."""
    fields = dict(data)
    key = fields.pop("key", None)
    stages = tuple(StageChoice(str(s["teacher"]), int(s["iterations"])) for s in fields.pop("stages"))
    ps = fields.pop("pseudo_steps", None)
    if ps is not None:
        ps = PseudoSteps(
            teachers=tuple(str(t) for t in ps["teachers"]),
            pseudo_iterations=int(ps["pseudo_iterations"]),
            finetune_iterations=int(ps["finetune_iterations"]),
            gt_fraction=float(ps["gt_fraction"]),
        )
    choice = CurriculumChoice(stages=stages, pseudo_steps=ps, **fields)
    if key is not None and key != choice.key:
        raise ValueError(f"curriculum key mismatch: stored {key}, recomputed {choice.key}")
    return choice


def round_sig(x: float, digits: int = SIG_DIGITS) -> float:
    return float(f"{float(x):.{digits}g}")


def round_sig_in(x: float, lo: float, hi: float) -> float:
    return min(max(round_sig(x), lo), hi)


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


def _fmt_lr(lr: float) -> str:
    mant, exp = f"{lr:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"
