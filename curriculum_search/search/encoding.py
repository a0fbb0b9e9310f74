"""Fixed-dimension encoding of curricula as Optuna parameters, and decoding back to recipes.

Optuna refuses a categorical whose choices change between trials ("dynamic value space"), and
multivariate TPE / GP model only the parameters every trial shares. So every trial of a study
suggests exactly the same parameters with the same distributions (:func:`param_distributions`):

* ``n_stages`` — int in ``search.n_stages``.
* ``order_key.<teacher>`` — one float in [0, 1] per searchable teacher (random keys): the order is
  the teachers sorted by key (ties by name), the curriculum uses the first ``n_stages``.
  Only when there are >= 2 searchable teachers.
* ``frac.<i>`` for ``i < max stages`` — float in [0, 1]; the first ``n_stages`` are normalised to
  sum 1 and floored at ``search.min_stage_fraction``; then split into integer iterations of the
  budget that sum exactly to it. Only when up to >= 2 stages are searched.
* ``feature_loss`` (categorical, ``none`` = off), ``response`` and ``pseudo`` (categorical bools).
* ``feature_weight``, ``cls_weight``, ``box_weight``, ``temperature``, ``lr`` — log-scale floats;
  weights are per *method*, shared by all stages (a weight of 1 is the loss' paper setting).
  ``feature_weight`` exists only if some feature loss can be on, the response ones only if
  response KD can be on.
* ``decay`` (categorical) and ``decay_floor`` (linear float; only if a non-constant decay exists).
* ``pseudo_form`` (categorical; only if ``search.pseudo_form`` has both forms) and
  ``pseudo_gt_fraction`` (linear float): only if the two-step pseudo-label form can be on.

Decoding (:func:`decode_params`) ignores parameters the curriculum does not use (weights of a
method that is off, keys of unused teachers, fractions past ``n_stages``, the floor of a constant
decay) and rounds floats to 4 significant digits, so :attr:`CurriculumChoice.key` identifies what
actually trains: two trials with the same key run the same proxy and the result can be reused.
With pseudo labels on in the ``two_step`` form the curriculum is the paper's: one stage on the
fused pseudo labels of the decoded teachers (a set: their order, fractions, the other KD terms and
the decay drop out), then a ground-truth fine-tune (:class:`PseudoSteps`).
A curriculum with no KD term at all (feature ``none``, no response, no pseudo labels) is the
student alone: it decodes to :meth:`CurriculumChoice.student_only` at its ``lr`` (teachers, order
and fractions drop out), so it is described, costed and de-duplicated as the student-only run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from curriculum_search.curriculum.recipe import (
    Decay,
    FeatureKD,
    PseudoLabelKD,
    Recipe,
    ResponseKD,
    Stage,
    TeacherRef,
)
from curriculum_search.search.params import grid_search_space, in_distribution, param_distributions
from curriculum_search.search.space import NO_FEATURE, SearchSpace, pool_hash, zoo_key
from curriculum_search.utils.io import stable_hash

if TYPE_CHECKING:
    import optuna

#: Significant digits kept for decoded float settings (weights, temperature, floor, lr).
SIG_DIGITS = 4
_EPS = 1e-9
#: Keys of a plain curriculum description (:func:`choice_from_settings`).
_CHOICE_KEYS = {
    "teachers",
    "fractions",
    "feature_loss",
    "feature_weight",
    "response",
    "cls_weight",
    "box_weight",
    "temperature",
    "pseudo",
    "pseudo_form",
    "pseudo_gt_fraction",
    "decay",
    "decay_floor",
    "lr",
}

# -- parameter set: see :mod:`curriculum_search.search.params` ----------------------------------------


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
        return cls(stages=(), total_iterations=total_iterations, lr=_sig(lr))

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


def _sig(x: float, digits: int = SIG_DIGITS) -> float:
    return float(f"{float(x):.{digits}g}")


def _sig_in(x: float, lo: float, hi: float) -> float:
    return min(max(_sig(x), lo), hi)


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


def _fmt_lr(lr: float) -> str:
    mant, exp = f"{lr:.1e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


# -- suggest / decode / encode --------------------------------------------------------------------


def suggest_curriculum(
    trial: optuna.trial.BaseTrial, space: SearchSpace, total_iterations: int | None = None
) -> CurriculumChoice:
    """Suggest the fixed parameter set on ``trial`` and decode it.

    Args:
        trial: an Optuna trial (enqueued parameters are taken as given).
        space: the search space.
        total_iterations: budget split between stages (default ``space.proxy.iterations``).
    """
    params: dict[str, Any] = {}
    for name, dist in param_distributions(space).items():
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high)
        else:
            assert isinstance(dist, CategoricalDistribution)
            params[name] = trial.suggest_categorical(name, dist.choices)  # type: ignore[arg-type]
    return decode_params(params, space, total_iterations)


def decode_params(
    params: Mapping[str, Any], space: SearchSpace, total_iterations: int | None = None
) -> CurriculumChoice:
    """Decode trial parameters (e.g. ``FrozenTrial.params``) into a :class:`CurriculumChoice`.

    Raises:
        ValueError: a parameter of :func:`param_distributions` is missing or out of its range.
    """
    dists = param_distributions(space)
    for name, dist in dists.items():
        if name not in params:
            raise ValueError(f"missing curriculum parameter {name!r}")
        if not in_distribution(dist, params[name]):
            raise ValueError(f"curriculum parameter {name}={params[name]!r} is outside {dist}")
    n = int(params["n_stages"])
    teachers = space.search_teachers
    if len(teachers) >= 2:
        keys = {t: float(params[f"order_key.{t}"]) for t in teachers}
        order = sorted(teachers, key=lambda t: (keys[t], t))
    else:
        order = list(teachers)
    settings: dict[str, Any] = {k: v for k, v in params.items() if k in _CHOICE_KEYS}
    settings["teachers"] = order[:n]
    settings["fractions"] = [float(params[f"frac.{i}"]) for i in range(n)] if n >= 2 else [1.0]
    return choice_from_settings(space, settings, total_iterations)


def default_settings(space: SearchSpace) -> dict[str, Any]:
    """Baseline method settings, each moved to the nearest value the space allows.

    Feature KD ``mgd`` × 1 (else the first listed loss that is not ``none``; off if only ``none``),
    response KD on (gated) with class/box weights 1 and temperature 2, pseudo labels off, linear
    decay with floor 0.1, and the geometric mean of the ``lr`` range.
    """
    dims = space.search
    losses = [f for f in dims.feature_losses if f != NO_FEATURE]
    feature = "mgd" if "mgd" in losses else (losses[0] if losses else None)

    def clamp(v: float, rng: tuple[float, float]) -> float:
        return min(max(v, rng[0]), rng[1])

    return {
        "feature_loss": feature,
        "feature_weight": clamp(1.0, dims.feature_weight),
        "response": True in dims.response,
        "cls_weight": clamp(1.0, dims.cls_weight),
        "box_weight": clamp(1.0, dims.box_weight),
        "temperature": clamp(2.0, dims.temperature),
        "pseudo": False not in dims.pseudo,
        "pseudo_form": "add" if "add" in dims.pseudo_form else dims.pseudo_form[0],
        "pseudo_gt_fraction": clamp(1.0, dims.pseudo_gt_fraction),
        "decay": "linear" if "linear" in dims.decay else dims.decay[0],
        "decay_floor": clamp(0.1, dims.decay_floor),
        "lr": _sig(math.sqrt(dims.lr[0] * dims.lr[1])),
    }


def choice_from_settings(
    space: SearchSpace,
    settings: Mapping[str, Any],
    total_iterations: int | None = None,
    *,
    canonical: bool = True,
) -> CurriculumChoice:
    """Build a choice from a plain description, with :func:`default_settings` for missing keys.

    ``settings`` holds ``teachers`` (ordered names, required), optional ``fractions`` (default
    equal; normalised and floored like decoded ones) and any of the method settings of
    :func:`default_settings` (``feature_loss: none`` or null = off).

    **No KD is the student alone.** A curriculum with no feature, no response and no pseudo-label
    term trains the student on ground truth only: its "teacher stages" differ only in where the
    optimiser and LR schedule restart. With ``canonical`` (the default) such settings decode to
    the one canonical student-only curriculum, :meth:`CurriculumChoice.student_only` — its key,
    description and cost (student FLOPs only) — so every such trial reuses one result. The
    canonical run keeps the settings' ``lr`` (a trial that tuned the LR trains at that LR, and
    two no-KD trials share a result only at the same LR); everything else (teachers, order,
    fractions, KD weights, decay) drops out of the key. At the space's default LR
    (:func:`default_settings`) it is exactly the student-only baseline
    (:func:`~curriculum_search.search.baselines.student_only_choice`), so such a trial reuses the
    baseline's result. Whether a tuned LR beats the baseline LR is the selection stage's
    business, not the curriculum's. ``canonical=False`` keeps the stages (used to encode them).

    Raises:
        ValueError: unknown key, unknown/duplicate teacher, stage count or value outside the space.
    """
    unknown = sorted(set(settings) - _CHOICE_KEYS)
    if unknown:
        raise ValueError(
            f"unknown curriculum setting {unknown[0]!r} (allowed: {', '.join(sorted(_CHOICE_KEYS))})"
        )
    s = {**default_settings(space), **settings}
    dims = space.search
    teachers = list(s.get("teachers") or [])
    for t in teachers:
        if t not in space.search_teachers:
            raise ValueError(
                f"teacher {t!r} is not searchable (search teachers: {', '.join(space.search_teachers)})"
            )
    if len(set(teachers)) != len(teachers):
        raise ValueError(f"a teacher appears twice in {teachers}")
    n = len(teachers)
    if not dims.n_stages[0] <= n <= dims.n_stages[1]:
        raise ValueError(f"{n} stage(s) is outside search.n_stages {list(dims.n_stages)}")
    total = space.proxy.iterations if total_iterations is None else int(total_iterations)
    fractions = s.get("fractions") or [1.0] * n
    if len(fractions) != n:
        raise ValueError(f"{len(fractions)} fractions for {n} teachers")
    fr = floor_fractions([float(f) for f in fractions], dims.min_stage_fraction)
    its = split_iterations(fr, total, min_stage_iterations(total, dims.min_stage_fraction, n))
    feature = s["feature_loss"] if s["feature_loss"] not in (None, NO_FEATURE) else NO_FEATURE
    _check_choice("feature_loss", feature, dims.feature_losses)
    _check_choice("response", bool(s["response"]), dims.response)
    _check_choice("pseudo", bool(s["pseudo"]), dims.pseudo)
    _check_choice("decay", s["decay"], dims.decay)
    for name in ("feature_weight", "cls_weight", "box_weight", "temperature", "decay_floor", "lr"):
        lo, hi = getattr(dims, name)
        if not lo * (1 - 1e-9) <= float(s[name]) <= hi * (1 + 1e-9):
            raise ValueError(f"{name} {s[name]} is outside search.{name} [{lo}, {hi}]")
    use_feature = feature != NO_FEATURE
    use_response = bool(s["response"])
    decay = str(s["decay"])
    _check_choice("pseudo_form", s["pseudo_form"], dims.pseudo_form)
    lo, hi = dims.pseudo_gt_fraction
    if not lo * (1 - 1e-9) <= float(s["pseudo_gt_fraction"]) <= hi * (1 + 1e-9):
        raise ValueError(
            f"pseudo_gt_fraction {s['pseudo_gt_fraction']} is outside search.pseudo_gt_fraction [{lo}, {hi}]"
        )
    if canonical and not (use_feature or use_response or bool(s["pseudo"])):
        return CurriculumChoice.student_only(total, _sig_in(s["lr"], *dims.lr))
    if canonical and bool(s["pseudo"]) and s["pseudo_form"] == "two_step":
        a, b = split_iterations([1.0 - dims.pseudo_finetune_share, dims.pseudo_finetune_share], total)
        return CurriculumChoice(
            stages=(),
            total_iterations=total,
            min_stage_fraction=dims.min_stage_fraction,
            pseudo=True,
            lr=_sig_in(s["lr"], *dims.lr),
            pseudo_steps=PseudoSteps(
                teachers=tuple(sorted(teachers)),
                pseudo_iterations=a,
                finetune_iterations=b,
                gt_fraction=_sig_in(s["pseudo_gt_fraction"], *dims.pseudo_gt_fraction),
            ),
        )
    return CurriculumChoice(
        stages=tuple(StageChoice(t, it) for t, it in zip(teachers, its)),
        total_iterations=total,
        min_stage_fraction=dims.min_stage_fraction,
        feature_loss=str(feature) if use_feature else None,
        feature_weight=_sig_in(s["feature_weight"], *dims.feature_weight) if use_feature else None,
        response=use_response,
        cls_weight=_sig_in(s["cls_weight"], *dims.cls_weight) if use_response else None,
        box_weight=_sig_in(s["box_weight"], *dims.box_weight) if use_response else None,
        temperature=_sig_in(s["temperature"], *dims.temperature) if use_response else None,
        pseudo=bool(s["pseudo"]),
        decay=decay,
        decay_floor=_sig_in(s["decay_floor"], *dims.decay_floor) if decay != "constant" else 0.0,
        lr=_sig_in(s["lr"], *dims.lr),
    )


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(
            f"{name} {value!r} is not among search.{name if name != 'feature_loss' else 'feature_losses'} {list(allowed)}"
        )


def encode_curriculum(
    choice_like: CurriculumChoice | Mapping[str, Any], space: SearchSpace
) -> dict[str, Any]:
    """Trial parameters that :func:`decode_params` turns back into the same curriculum.

    For ``study.enqueue_trial(params)``: warm starts, baselines, a previous study's best. Every
    parameter of :func:`param_distributions` is set (unused ones to neutral values), so the trial
    keeps the study's full parameter set. Fractions are encoded as ``iterations / budget`` of the
    decoded split, so the integer split reproduces exactly; decoding uses the proxy budget.

    Args:
        choice_like: a :class:`CurriculumChoice`, or a mapping for :func:`choice_from_settings`.
        space: the search space the parameters are for.

    The student-only choice is encoded as a no-KD curriculum on the fewest stages (it decodes to
    the student alone, see :func:`choice_from_settings`) when the space allows no KD.

    Raises:
        ValueError: the student-only choice in a space where every curriculum distils, or
            settings outside the space.
    """
    if isinstance(choice_like, CurriculumChoice):
        settings = _settings_of(choice_like, space)
    else:
        settings = dict(choice_like)
    choice = choice_from_settings(space, settings)
    raw = choice_from_settings(space, settings, canonical=False)  # the stages to encode
    defaults = default_settings(space)
    dists = param_distributions(space)
    n = len(raw.stages)
    params: dict[str, Any] = {"n_stages": n}
    teachers = space.search_teachers
    if len(teachers) >= 2:
        order = list(raw.teachers) + sorted(t for t in teachers if t not in raw.teachers)
        for pos, t in enumerate(order):
            params[f"order_key.{t}"] = pos / (len(teachers) - 1)
    if space.search.n_stages[1] >= 2:
        for i in range(space.search.n_stages[1]):
            params[f"frac.{i}"] = raw.fractions[i] if (n >= 2 and i < n) else 0.5
    params["feature_loss"] = raw.feature_loss or NO_FEATURE
    params["response"] = raw.response
    params["pseudo"] = raw.pseudo
    ps = choice.pseudo_steps
    params["pseudo_form"] = "two_step" if ps is not None else defaults["pseudo_form"]
    params["pseudo_gt_fraction"] = ps.gt_fraction if ps is not None else defaults["pseudo_gt_fraction"]
    params["decay"] = raw.decay
    params["lr"] = raw.lr
    for k in ("feature_weight", "cls_weight", "box_weight", "temperature"):
        if k in dists:
            v = getattr(raw, k)
            params[k] = v if v is not None else defaults[k]
    if "decay_floor" in dists:
        params["decay_floor"] = raw.decay_floor if raw.decay != "constant" else defaults["decay_floor"]
    params = {k: params[k] for k in dists}  # the exact parameter set, in its order
    decoded = decode_params(params, space)
    if decoded.key != choice.key:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"encoding does not round-trip: {choice.describe()} -> {decoded.describe()}")
    return params


def _settings_of(choice: CurriculumChoice, space: SearchSpace) -> dict[str, Any]:
    """Plain settings that :func:`choice_from_settings` turns back into ``choice``.

    The student-only choice becomes a no-KD curriculum on the fewest stages (which decodes to it);
    that needs the space to allow no KD at all.

    Raises:
        ValueError: the student-only choice in a space where every curriculum distils.
    """
    if choice.is_student_only:
        dims = space.search
        if NO_FEATURE not in dims.feature_losses or False not in dims.response or False not in dims.pseudo:
            raise ValueError(
                "the student-only curriculum is not in this space (it needs 'none' in "
                "search.feature_losses and false in search.response and search.pseudo); "
                "see baselines.py for running it anyway"
            )
        return {
            "teachers": list(space.search_teachers[: dims.n_stages[0]]),
            "feature_loss": NO_FEATURE,
            "response": False,
            "pseudo": False,
            "lr": choice.lr,
        }
    if choice.pseudo_steps is not None:
        return {
            "teachers": list(choice.pseudo_steps.teachers),
            "pseudo": True,
            "pseudo_form": "two_step",
            "pseudo_gt_fraction": choice.pseudo_steps.gt_fraction,
            "lr": choice.lr,
        }
    settings: dict[str, Any] = {
        "teachers": list(choice.teachers),
        "fractions": list(choice.fractions),
        "feature_loss": choice.feature_loss,
        "response": choice.response,
        "pseudo": choice.pseudo,
        "decay": choice.decay,
        "lr": choice.lr,
    }
    for k in ("feature_weight", "cls_weight", "box_weight", "temperature"):
        if getattr(choice, k) is not None:
            settings[k] = getattr(choice, k)
    if choice.decay != "constant":
        settings["decay_floor"] = choice.decay_floor
    return settings


# -- recipes ----------------------------------------------------------------------------------------


def zoo_checkpoint_path(space: SearchSpace, name: str, studies_root: str | Path = "studies") -> Path:
    """Where ``zoo build`` writes (and trials read) zoo teacher ``name``:
    ``<studies_root>/_zoo/<name>-<zoo_key>/model.pt``."""
    return Path(studies_root) / "_zoo" / f"{name}-{zoo_key(space, name)}" / "model.pt"


def teacher_refs(space: SearchSpace, studies_root: str | Path = "studies") -> dict[str, TeacherRef]:
    """The pool as recipe teachers: checkpoints and specs as given, zoo entries as their checkpoint.

    A zoo checkpoint is written relative to the studies folder (``_zoo/<name>-<key>/model.pt``),
    which recipes resolve relative teacher paths against, so recipes stay portable;
    ``studies_root`` is accepted for symmetry with :func:`zoo_checkpoint_path` but not used.
    """
    out: dict[str, TeacherRef] = {}
    for name, entry in space.teachers.items():
        if entry.checkpoint is not None:
            out[name] = TeacherRef(checkpoint=entry.checkpoint)
        elif entry.spec is not None:
            out[name] = TeacherRef(spec=entry.spec)
        else:
            # relative to the studies folder, which recipes resolve relative paths against
            out[name] = TeacherRef(checkpoint=str(zoo_checkpoint_path(space, name, ".")))
    return out


def build_recipe(
    space: SearchSpace,
    choice: CurriculumChoice,
    *,
    iterations: int,
    proxy: bool,
    seed: int,
    studies_root: str | Path = "studies",
    split: Literal["selection", "report"] = "selection",
) -> Recipe:
    """A complete recipe for ``choice`` trained for ``iterations`` in total.

    The data never trains on the selection split and evaluates on ``split`` (see
    :meth:`SearchSpace.split_data`).

    ``proxy=True`` takes data subsets, image size and ``eval_every`` from ``space.proxy``;
    ``proxy=False`` from ``space.full`` (null subsets/size keep the data's own). A changed image
    size is applied to the data, the student spec and spec teachers (checkpoint/zoo teachers keep
    theirs). ``train.lr`` is the choice's lr; teachers are the whole pool. ``provenance`` records
    the space, pool hash, curriculum key, description and phase.
    """
    phase = space.proxy if proxy else space.full
    image_size = phase.image_size or space.data.image_size
    base = space.split_data(split)
    data = replace(
        base,
        image_size=image_size,
        train_subset=phase.train_subset if phase.train_subset is not None else base.train_subset,
        val_subset=phase.val_subset if phase.val_subset is not None else base.val_subset,
    )
    eval_every = phase.eval_every if phase.eval_every is not None else space.train.eval_every
    train = replace(space.train, lr=choice.lr, eval_every=eval_every)
    teachers = teacher_refs(space, studies_root)
    if image_size != space.data.image_size:
        teachers = {
            k: TeacherRef(spec=v.spec.with_updates(image_size=image_size)) if v.spec is not None else v
            for k, v in teachers.items()
        }
    return Recipe(
        name=f"{space.name}-{choice.key}",
        student=space.student.with_updates(image_size=image_size),
        stages=choice.to_stages(iterations),
        data=data,
        teachers=teachers,
        train=train,
        seed=seed,
        provenance={
            "space": space.name,
            "pool_hash": pool_hash(space),
            "curriculum_key": choice.key,
            "curriculum": choice.describe(),
            "phase": "proxy" if proxy else "full",
        },
    )


def proxy_cost(
    choice: CurriculumChoice,
    teacher_gflops: Mapping[str, float],
    student_gflops: float,
    total_iterations: int | None = None,
) -> float:
    """Cost of a curriculum: Σ over stages of ``iterations × (teacher GFLOPs + student GFLOPs)``.

    GFLOPs are per image and forward (:func:`curriculum_search.models.cost.measure_cost`); the
    student-only choice costs ``iterations × student GFLOPs``. Compare with
    ``constraints.max_proxy_cost``.
    """
    total = choice.total_iterations if total_iterations is None else total_iterations
    if choice.is_student_only:
        return float(total * student_gflops)
    if choice.pseudo_steps is not None:  # step A runs every teacher at every iteration
        a, b = choice.iterations_for(total)
        fused = sum(teacher_gflops[t] for t in choice.pseudo_steps.teachers)
        return float(a * (fused + student_gflops) + b * student_gflops)
    its = choice.iterations_for(total)
    return float(sum(it * (teacher_gflops[s.teacher] + student_gflops) for s, it in zip(choice.stages, its)))


__all__ = [
    "SIG_DIGITS",
    "CurriculumChoice",
    "PseudoSteps",
    "StageChoice",
    "build_recipe",
    "choice_from_dict",
    "choice_from_settings",
    "decode_params",
    "default_settings",
    "encode_curriculum",
    "floor_fractions",
    "grid_search_space",
    "min_stage_iterations",
    "param_distributions",
    "proxy_cost",
    "split_iterations",
    "suggest_curriculum",
    "teacher_refs",
    "zoo_checkpoint_path",
]
