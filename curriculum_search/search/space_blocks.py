"""The blocks of a search-space file as frozen dataclasses, each validated when it is built.

:class:`SearchSpace` is a whole file; the file format, loading and hashing are in
:mod:`curriculum_search.search.space`, the Optuna sampler and pruner in
:mod:`curriculum_search.search.samplers`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from curriculum_search.curriculum.recipe import DataConfig, TrainConfig
from curriculum_search.models.spec import DetectorSpec
from curriculum_search.search.samplers import pruner_param_names, sampler_param_names
from curriculum_search.utils.config import check

#: Feature losses assumed when :mod:`curriculum_search.distill.feature` cannot be imported.
FALLBACK_FEATURE_LOSSES = ("cwd", "fgd", "mgd", "mse", "pkd", "tadf_feature")
#: Decay schedules assumed when :mod:`curriculum_search.distill.decay` cannot be imported.
FALLBACK_DECAYS = ("constant", "cosine", "linear", "step")
#: Name of the "no feature distillation" choice in ``search.feature_losses``.
NO_FEATURE = "none"
#: Forms of pseudo-label KD in ``search.pseudo_form``.
PSEUDO_FORMS = ("add", "two_step")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TEACHER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def known_feature_losses() -> list[str]:
    """Registered feature-loss names (lazy import; a fixed fallback list if the module is missing)."""
    try:
        from curriculum_search.distill.feature import list_feature_losses
    except ImportError:
        return list(FALLBACK_FEATURE_LOSSES)
    return list_feature_losses()


def known_decays() -> list[str]:
    """Registered decay schedule names (lazy import; a fixed fallback list if the module is missing)."""
    try:
        from curriculum_search.distill.decay import list_decays
    except ImportError:
        return list(FALLBACK_DECAYS)
    return list_decays()


def _check_range(
    name: str, rng: tuple[float, float], *, positive: bool = True, upper: float | None = None
) -> None:
    lo, hi = rng
    for v in (lo, hi):
        check(math.isfinite(v), name, f"range must be finite numbers, got [{lo}, {hi}]")
    if positive:
        check(lo > 0, name, f"range must have 0 < lo, got [{lo}, {hi}] (searched on a log scale)")
    else:
        check(lo >= 0, name, f"range must have 0 <= lo, got [{lo}, {hi}]")
    check(lo <= hi, name, f"range must have lo <= hi, got [{lo}, {hi}]")
    if upper is not None:
        check(hi <= upper, name, f"range must have hi <= {upper:g}, got [{lo}, {hi}]")


def _check_choices(name: str, values: tuple[Any, ...]) -> None:
    check(len(values) >= 1, name, "needs at least one choice")
    check(len(set(values)) == len(values), name, f"has duplicate choices {list(values)}")


def _check_subset(name: str, value: int | float | None) -> None:
    if isinstance(value, float):
        check(0 < value <= 1, name, f"a fraction must be in (0, 1], got {value}")
    elif isinstance(value, int):
        check(value >= 1, name, f"must be >= 1, got {value}")


@dataclass(frozen=True)
class ZooTrain:
    """A teacher the tool trains itself (``zoo build``) on the space's data when missing.

    The result lands in ``studies/_zoo/<name>-<zoo_key>/model.pt``; the key hashes this block and
    the space's ``data`` block, so changing either trains a new teacher.

    Attributes:
        spec: the teacher detector (random init or ``weights: timm``).
        iterations: supervised training iterations (default 1500).
        lr: AdamW learning rate (default 0.003).
        batch_size: images per step (default 8).
        seed: training seed (default 0).
    """

    spec: DetectorSpec
    iterations: int = 1500
    lr: float = 0.003
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class PoolEntry:
    """One teacher of the pool: exactly one of ``checkpoint``, ``spec`` or ``zoo``.

    ``checkpoint``: a model file written by this package; ``spec``: a detector built from its spec
    (e.g. torchvision COCO weights); ``zoo``: trained by the tool itself (see :class:`ZooTrain`).
    """

    checkpoint: str | None = None
    spec: DetectorSpec | None = None
    zoo: ZooTrain | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("checkpoint", "spec", "zoo") if getattr(self, k) is not None]
        check(
            len(given) == 1,
            "checkpoint",
            f"give exactly one of checkpoint, spec or zoo (got {given or 'none'})",
        )

    @property
    def kind(self) -> Literal["checkpoint", "spec", "zoo"]:
        if self.checkpoint is not None:
            return "checkpoint"
        return "spec" if self.spec is not None else "zoo"


@dataclass(frozen=True)
class ProxyConfig:
    """The short run each trial trains (the search objective).

    Attributes:
        iterations: total iterations of a proxy curriculum, split between its stages (default 300).
        train_subset / val_subset: images used (int = count, float = fraction, null = the data's own).
        image_size: smaller square input for the proxy (null = the data's image size).
        eval_every: evaluate (and report to the pruner) every this many global iterations; 0 = only
            at the end (no pruning).
        seeds: seeds per curriculum (the objective is their mean AP).
    """

    iterations: int = 300
    train_subset: int | float | None = 256
    val_subset: int | float | None = 96
    image_size: int | None = None
    eval_every: int = 100
    seeds: int = 1

    def __post_init__(self) -> None:
        check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        _check_subset("train_subset", self.train_subset)
        _check_subset("val_subset", self.val_subset)
        if self.image_size is not None:
            check(
                self.image_size >= 32 and self.image_size % 32 == 0,
                "image_size",
                "must be a multiple of 32, >= 32",
            )
        check(
            0 <= self.eval_every <= self.iterations,
            "eval_every",
            f"must be in 0..iterations, got {self.eval_every}",
        )
        check(self.seeds >= 1, "seeds", f"must be >= 1, got {self.seeds}")


@dataclass(frozen=True)
class FullConfig:
    """The full-length training of the best curriculum (same fields as :class:`ProxyConfig`).

    ``eval_every`` null keeps ``train.eval_every``; ``image_size`` null keeps the data's size.
    """

    iterations: int = 1200
    train_subset: int | float | None = None
    val_subset: int | float | None = None
    image_size: int | None = None
    eval_every: int | None = None
    seeds: int = 1

    def __post_init__(self) -> None:
        check(self.iterations >= 1, "iterations", f"must be >= 1, got {self.iterations}")
        _check_subset("train_subset", self.train_subset)
        _check_subset("val_subset", self.val_subset)
        if self.image_size is not None:
            check(
                self.image_size >= 32 and self.image_size % 32 == 0,
                "image_size",
                "must be a multiple of 32, >= 32",
            )
        check(self.eval_every is None or self.eval_every >= 0, "eval_every", "must be >= 0")
        check(self.seeds >= 1, "seeds", f"must be >= 1, got {self.seeds}")


@dataclass(frozen=True)
class SelectionConfig:
    """The selection stage: race the search's best curricula against the best baseline.

    Attributes:
        shortlist: distinct searched curricula raced as challengers (0 = ship the best baseline),
            chosen by their noise-aware proxy score (mean over proxy seeds of the mean of the last
            two evaluations), never by the single best observed value.
        rungs: budgets of the race's rungs as fractions of ``full.iterations``, increasing; the
            last must be 1.0 (the full length: its runs are the full run).
        seeds: seeds per rung (the same for every arm: common random numbers); >= 2 at the last.
        promote: challengers that go on from one rung to the next.
        margin: AP a challenger must beat the incumbent by, at the lower confidence bound.
        confidence: two-sided confidence of the paired-difference intervals (Bonferroni-corrected
            at the last rung when several challengers reach it).
        lr_matched: also race the incumbent at the best challenger's learning rate, so a
            curriculum cannot win through its learning rate alone.
        holdout: training images carved out (seeded; int = count, float = fraction) as the
            selection split when the data has no test set; the report split is then ``data``'s
            validation set. With ``data.test_images`` the selection split is the validation set
            and the report split the test set. ``null``: no carve-out — selection and report both
            use the validation set (then nothing is held out, and reports say so).
    """

    shortlist: int = 3
    rungs: tuple[float, ...] = (0.5, 1.0)
    seeds: tuple[int, ...] = (2, 3)
    promote: int = 1
    margin: float = 0.0
    confidence: float = 0.9
    lr_matched: bool = True
    holdout: int | float | None = 0.2

    def __post_init__(self) -> None:
        check(self.shortlist >= 0, "shortlist", f"must be >= 0, got {self.shortlist}")
        check(len(self.rungs) >= 1, "rungs", "needs at least one rung")
        check(
            all(0 < r <= 1 for r in self.rungs) and list(self.rungs) == sorted(set(self.rungs)),
            "rungs",
            f"must be increasing fractions in (0, 1], got {list(self.rungs)}",
        )
        check(
            self.rungs[-1] == 1.0,
            "rungs",
            f"the last rung must be 1.0 (the full length), got {self.rungs[-1]}",
        )
        check(
            len(self.seeds) == len(self.rungs),
            "seeds",
            f"needs one seed count per rung ({len(self.rungs)}), got {list(self.seeds)}",
        )
        check(all(n >= 1 for n in self.seeds), "seeds", f"every rung needs >= 1 seed, got {list(self.seeds)}")
        check(self.seeds[-1] >= 2, "seeds", f"the last rung needs >= 2 seeds, got {self.seeds[-1]}")
        check(self.promote >= 1, "promote", f"must be >= 1, got {self.promote}")
        check(math.isfinite(self.margin) and self.margin >= 0, "margin", f"must be >= 0, got {self.margin}")
        check(0.5 <= self.confidence < 1, "confidence", f"must be in [0.5, 1), got {self.confidence}")
        _check_subset("holdout", self.holdout)


@dataclass(frozen=True)
class SearchDims:
    """The dimensions searched. Ranges are ``[lo, hi]``; ``lo == hi`` fixes a value.

    Attributes:
        n_stages: fewest and most stages (one teacher per stage, no teacher twice).
        teachers: teachers the curricula may use (null = the whole pool).
        min_stage_fraction: each stage gets at least this fraction of the budget.
        feature_losses: feature KD losses to choose from (registered names, ``none`` = off).
        response: whether TADF response KD (class KL + box, gated) is on; ``[true, false]`` searches it.
        pseudo: whether pseudo-label KD is on (``[false]`` = never).
        pseudo_form: how pseudo-label KD runs when on: ``add`` (each teacher stage trains on the
            ground truth plus that teacher's pseudo boxes) and/or ``two_step`` (the paper's form:
            one stage on the fused pseudo labels only of the curriculum's teachers — WBF when
            several, the space's unlabeled images included — then a ground-truth fine-tune).
        pseudo_gt_fraction: linear range of the fraction of labeled images the two-step form's
            fine-tune uses (the paper: 20% of the labels can match full supervision).
        pseudo_finetune_share: share of the budget the two-step form's fine-tune gets.
        feature_weight / cls_weight / box_weight: log-scale multipliers of each loss' paper default.
        temperature: log-scale range of the class-KD temperature.
        decay: distillation decay schedules to choose from.
        decay_floor: linear-scale range of the decay floor (in [0, 1]).
        lr: log-scale range of the learning rate.
    """

    n_stages: tuple[int, int] = (1, 3)
    teachers: tuple[str, ...] | None = None
    min_stage_fraction: float = 0.15
    feature_losses: tuple[str, ...] = ("mgd", "cwd", "mse", NO_FEATURE)
    response: tuple[bool, ...] = (True, False)
    pseudo: tuple[bool, ...] = (False,)
    pseudo_form: tuple[str, ...] = ("add",)
    pseudo_gt_fraction: tuple[float, float] = (0.2, 1.0)
    pseudo_finetune_share: float = 0.3
    feature_weight: tuple[float, float] = (0.25, 4.0)
    cls_weight: tuple[float, float] = (0.1, 4.0)
    box_weight: tuple[float, float] = (0.1, 4.0)
    temperature: tuple[float, float] = (1.0, 4.0)
    decay: tuple[str, ...] = ("linear", "cosine", "step", "constant")
    decay_floor: tuple[float, float] = (0.0, 0.5)
    lr: tuple[float, float] = (5e-4, 5e-3)

    def __post_init__(self) -> None:
        lo, hi = self.n_stages
        check(1 <= lo <= hi, "n_stages", f"must satisfy 1 <= lo <= hi, got [{lo}, {hi}]")
        check(
            0 < self.min_stage_fraction <= 1 / hi,
            "min_stage_fraction",
            f"must be in (0, 1/{hi}] for up to {hi} stages, got {self.min_stage_fraction}",
        )
        if self.teachers is not None:
            _check_choices("teachers", self.teachers)
        _check_choices("feature_losses", self.feature_losses)
        known = [*known_feature_losses(), NO_FEATURE]
        for i, name in enumerate(self.feature_losses):
            check(
                name in known,
                f"feature_losses[{i}]",
                f"unknown feature loss {name!r} (known: {', '.join(known)})",
            )
        _check_choices("response", self.response)
        _check_choices("pseudo", self.pseudo)
        _check_choices("pseudo_form", self.pseudo_form)
        for i, form in enumerate(self.pseudo_form):
            check(
                form in PSEUDO_FORMS,
                f"pseudo_form[{i}]",
                f"unknown form {form!r} (known: {', '.join(PSEUDO_FORMS)})",
            )
        check(
            "two_step" not in self.pseudo_form or True in self.pseudo,
            "pseudo_form",
            "two_step needs pseudo-label KD on (true in search.pseudo)",
        )
        _check_range("pseudo_gt_fraction", self.pseudo_gt_fraction, upper=1.0)
        check(
            0 < self.pseudo_finetune_share < 1,
            "pseudo_finetune_share",
            f"must be in (0, 1), got {self.pseudo_finetune_share}",
        )
        _check_choices("decay", self.decay)
        decays = known_decays()
        for i, name in enumerate(self.decay):
            check(name in decays, f"decay[{i}]", f"unknown decay {name!r} (known: {', '.join(decays)})")
        for name in ("feature_weight", "cls_weight", "box_weight", "temperature", "lr"):
            _check_range(name, getattr(self, name))
        _check_range("decay_floor", self.decay_floor, positive=False, upper=1.0)
        check(
            any(f != NO_FEATURE for f in self.feature_losses) or True in self.response or True in self.pseudo,
            "feature_losses",
            "no distillation method can be switched on (feature_losses, response and pseudo are all off)",
        )

    @property
    def has_feature(self) -> bool:
        """Some curricula use feature KD (so ``feature_weight`` is searched)."""
        return any(f != NO_FEATURE for f in self.feature_losses)

    @property
    def has_response(self) -> bool:
        """Some curricula use response KD (so its weights and temperature are searched)."""
        return True in self.response

    @property
    def has_two_step(self) -> bool:
        """Some curricula use the paper's two-step pseudo-label KD (so its fraction is searched)."""
        return True in self.pseudo and "two_step" in self.pseudo_form

    @property
    def has_floor(self) -> bool:
        """Some decay with a floor is searched (``constant`` ignores the floor)."""
        return any(d != "constant" for d in self.decay)


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna sampler: ``tpe`` (default, multivariate), ``gp``, ``random``, ``grid`` or ``cmaes``.

    ``params`` are the sampler's constructor arguments (``seed`` defaults to the space's seed).
    ``grid`` takes ``points`` (values per continuous dimension, default 2: the range ends; log
    ranges log-spaced), ``values`` (``{parameter: [values]}`` overrides) and ``seed``.
    """

    name: Literal["tpe", "gp", "random", "grid", "cmaes"] = "tpe"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = sampler_param_names(self.name)
        for key in self.params:
            check(
                key in allowed,
                f"params.{key}",
                f"unknown {self.name} sampler parameter (allowed: {', '.join(allowed)})",
            )
        if self.name == "grid":
            points = self.params.get("points", 2)
            check(
                isinstance(points, int) and not isinstance(points, bool) and points >= 1,
                "params.points",
                f"must be an integer >= 1, got {points!r}",
            )
            values = self.params.get("values", {})
            check(isinstance(values, Mapping), "params.values", "must be a mapping {parameter: [values]}")
            for k, v in values.items():
                check(isinstance(v, list) and len(v) >= 1, f"params.values.{k}", "must be a non-empty list")


@dataclass(frozen=True)
class PrunerConfig:
    """Optuna pruner: ``median`` (default), ``hyperband``, ``patient`` (median + patience) or ``none``.

    ``warmup_steps`` (global iterations before pruning may act) defaults to the end of the shortest
    possible first stage (:func:`default_warmup_steps`), so curricula that start with a weak teacher
    are not killed at the first stage boundary. ``params`` go to the pruner (median:
    ``n_startup_trials``, ``interval_steps``, ``n_min_trials``; hyperband: ``min_resource``
    (default: the warm-up), ``max_resource`` (default: the proxy iterations), ``reduction_factor``,
    ``bootstrap_count``; patient: ``patience`` (default 1), ``min_delta`` and the median ones).
    """

    name: Literal["median", "hyperband", "patient", "none"] = "median"
    warmup_steps: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check(self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        allowed = pruner_param_names(self.name)
        for key in self.params:
            check(
                key in allowed,
                f"params.{key}",
                f"unknown {self.name} pruner parameter (allowed: {', '.join(allowed) or 'none'})",
            )


@dataclass(frozen=True)
class Constraints:
    """Optional constraints (``trial.set_constraint``), not extra objectives.

    ``max_proxy_cost``: upper bound of the proxy cost of a curriculum, in GFLOPs·iterations: the sum
    over stages of ``iterations × (teacher forward GFLOPs + student GFLOPs)`` per image (see
    :func:`curriculum_search.search.encoding.proxy_cost`).
    """

    max_proxy_cost: float | None = None

    def __post_init__(self) -> None:
        check(self.max_proxy_cost is None or self.max_proxy_cost > 0, "max_proxy_cost", "must be > 0")


@dataclass(frozen=True)
class SearchSpace:
    """A whole search-space file (see the module docstring)."""

    student: DetectorSpec
    teachers: dict[str, PoolEntry]
    name: str = "default"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    full: FullConfig = field(default_factory=FullConfig)
    search: SearchDims = field(default_factory=SearchDims)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    trials: int = 20
    timeout_s: float | None = None
    trial_timeout_s: float | None = None
    constraints: Constraints = field(default_factory=Constraints)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)

    def __post_init__(self) -> None:
        check(
            bool(_NAME_RE.match(self.name)),
            "name",
            f"must be a folder name of letters, digits, '_', '-', '.' not starting with '_' or '.', got {self.name!r}",
        )
        check(len(self.teachers) >= 1, "teachers", "the pool needs at least one teacher")
        for t in self.teachers:
            check(
                bool(_TEACHER_RE.match(t)),
                f"teachers.{t}",
                "teacher names use letters, digits, '_' and '-' only",
            )
        if self.search.teachers is not None:
            for i, t in enumerate(self.search.teachers):
                check(
                    t in self.teachers,
                    f"search.teachers[{i}]",
                    f"unknown teacher {t!r} (pool: {', '.join(self.teachers)})",
                )
        n_hi = self.search.n_stages[1]
        k = len(self.search_teachers)
        check(
            n_hi <= k,
            "search.n_stages",
            f"at most {k} stage(s): a curriculum uses each of {k} teacher(s) once, got {n_hi}",
        )
        check(self.proxy.iterations >= n_hi, "proxy.iterations", f"must be >= the {n_hi} stages")
        check(self.full.iterations >= n_hi, "full.iterations", f"must be >= the {n_hi} stages")
        check(
            self.student.image_size == self.data.image_size,
            "student.image_size",
            f"must equal data.image_size ({self.data.image_size}), got {self.student.image_size}",
        )
        check(self.trials >= 1, "trials", f"must be >= 1, got {self.trials}")
        check(self.timeout_s is None or self.timeout_s > 0, "timeout_s", "must be > 0 (or null)")
        check(
            self.trial_timeout_s is None or self.trial_timeout_s > 0,
            "trial_timeout_s",
            "must be > 0 (or null: 600 s + 6 s per proxy iteration and seed)",
        )
        check(
            self.data.holdout is None and self.data.eval_split == "val",
            "data.holdout",
            "set the selection split with selection.holdout (or data.test_images), not in data",
        )
        for i, r in enumerate(self.selection.rungs):
            check(
                round(r * self.full.iterations) >= n_hi,
                f"selection.rungs[{i}]",
                f"{r} x full.iterations ({self.full.iterations}) leaves fewer iterations than the {n_hi} stages",
            )

    def split_data(self, split: Literal["selection", "report"]) -> DataConfig:
        """``data`` as every run of a study uses it: the selection carve-out is never trained on,
        and the run evaluates on the ``selection`` or the ``report`` split."""
        d = self.data
        if d.has_test:
            return dataclasses.replace(d, eval_split="val" if split == "selection" else "test")
        if self.selection.holdout is None:
            return d
        return dataclasses.replace(
            d, holdout=self.selection.holdout, eval_split="holdout" if split == "selection" else "val"
        )

    def split_names(self) -> tuple[str, str]:
        """Names of the (selection, report) splits: ``holdout``/``val``, ``val``/``test`` or ``val``/``val``."""
        return (
            self.split_data("selection").eval_split,
            self.split_data("report").eval_split,
        )

    @property
    def search_teachers(self) -> tuple[str, ...]:
        """Teachers the curricula may use, in a fixed order (``search.teachers`` or the pool's order)."""
        return tuple(self.search.teachers) if self.search.teachers is not None else tuple(self.teachers)
