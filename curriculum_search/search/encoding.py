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

The decoded curriculum itself (:class:`CurriculumChoice`, the budget split) is
:mod:`curriculum_search.search.choice`; recipes and costs of a choice are
:mod:`curriculum_search.search.recipes`. This module re-exports their names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from curriculum_search.search.choice import (
    SIG_DIGITS,
    CurriculumChoice,
    PseudoSteps,
    StageChoice,
    choice_from_dict,
    floor_fractions,
    min_stage_iterations,
    round_sig,
    round_sig_in,
    split_iterations,
)
from curriculum_search.search.params import grid_search_space, in_distribution, param_distributions
from curriculum_search.search.recipes import build_recipe, proxy_cost, teacher_refs, zoo_checkpoint_path
from curriculum_search.search.space import NO_FEATURE, SearchSpace

if TYPE_CHECKING:
    import optuna

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
        "lr": round_sig(math.sqrt(dims.lr[0] * dims.lr[1])),
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
        return CurriculumChoice.student_only(total, round_sig_in(s["lr"], *dims.lr))
    if canonical and bool(s["pseudo"]) and s["pseudo_form"] == "two_step":
        a, b = split_iterations([1.0 - dims.pseudo_finetune_share, dims.pseudo_finetune_share], total)
        return CurriculumChoice(
            stages=(),
            total_iterations=total,
            min_stage_fraction=dims.min_stage_fraction,
            pseudo=True,
            lr=round_sig_in(s["lr"], *dims.lr),
            pseudo_steps=PseudoSteps(
                teachers=tuple(sorted(teachers)),
                pseudo_iterations=a,
                finetune_iterations=b,
                gt_fraction=round_sig_in(s["pseudo_gt_fraction"], *dims.pseudo_gt_fraction),
            ),
        )
    return CurriculumChoice(
        stages=tuple(StageChoice(t, it) for t, it in zip(teachers, its)),
        total_iterations=total,
        min_stage_fraction=dims.min_stage_fraction,
        feature_loss=str(feature) if use_feature else None,
        feature_weight=round_sig_in(s["feature_weight"], *dims.feature_weight) if use_feature else None,
        response=use_response,
        cls_weight=round_sig_in(s["cls_weight"], *dims.cls_weight) if use_response else None,
        box_weight=round_sig_in(s["box_weight"], *dims.box_weight) if use_response else None,
        temperature=round_sig_in(s["temperature"], *dims.temperature) if use_response else None,
        pseudo=bool(s["pseudo"]),
        decay=decay,
        decay_floor=round_sig_in(s["decay_floor"], *dims.decay_floor) if decay != "constant" else 0.0,
        lr=round_sig_in(s["lr"], *dims.lr),
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
