"""The Optuna sampler and pruner of a search space, and when the pruner may judge an evaluation."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curriculum_search.errors import ConfigError
from curriculum_search.utils.config import FieldError

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler

    from curriculum_search.search.space_blocks import SearchSpace

SAMPLERS = ("tpe", "gp", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "patient", "none")


# Sampler/pruner constructor arguments that cannot come from a YAML file (callables, objects) or
# that the space sets itself.
_SAMPLER_EXCLUDED = {
    "self",
    "constraints_func",
    "gamma",
    "weights",
    "independent_sampler",
    "source_trials",
    "search_space",
}
_GRID_PARAMS = ("points", "values", "seed")
_PATIENT_OWN = ("patience", "min_delta")
_MEDIAN_PARAMS = ("n_startup_trials", "interval_steps", "n_min_trials")
_HYPERBAND_PARAMS = ("min_resource", "max_resource", "reduction_factor", "bootstrap_count")


def _sampler_class(name: str) -> Any:
    import optuna

    return {
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }[name]


def sampler_param_names(name: str) -> list[str]:
    if name == "grid":
        return list(_GRID_PARAMS)
    sig = inspect.signature(_sampler_class(name).__init__)
    return sorted(p for p in sig.parameters if p not in _SAMPLER_EXCLUDED)


def pruner_param_names(name: str) -> list[str]:
    return {
        "median": list(_MEDIAN_PARAMS),
        "hyperband": list(_HYPERBAND_PARAMS),
        "patient": [*_PATIENT_OWN, *_MEDIAN_PARAMS],
        "none": [],
    }[name]


def make_sampler(
    space: SearchSpace, *, source: str | Path | None = None, seed: int | None = None, enqueued: int = 0
) -> BaseSampler:
    """The Optuna sampler of ``space``, seeded with ``params.seed`` if given, else ``seed`` (the
    run's ``--seed``), else ``space.seed``.

    ``n_startup_trials`` (TPE, GP, CMA-ES: random draws before the model is used) counts the
    *searched* trials: the ``enqueued`` trials that precede them (the study's baselines) come on
    top. Optuna counts every finished trial, so without this the four baselines used up the default
    four random draws and TPE modelled from the baselines alone, proposing variations of the best
    baseline from its fifth trial on (what ``benchmarks/RESULTS.md`` showed: random search at equal
    compute found curricula the TPE study never tried).

    TPE defaults to ``multivariate=True`` (the parameter set is fixed, see
    :mod:`~curriculum_search.search.encoding`, so the joint model applies). ``grid`` enumerates
    :func:`~curriculum_search.search.encoding.grid_search_space`.

    Args:
        space: the search space.
        source: the space file, named in errors.
        seed: the run's seed override (``--seed``): another seed proposes other curricula.
        enqueued: trials the study enqueues before its searched ones (the baselines).

    Raises:
        ConfigError: on ``sampler.name`` when the sampler's optional dependency is missing, or on
            ``sampler.params`` when Optuna rejects a value.
    """
    try:
        return _build_sampler(space, seed, enqueued)
    except FieldError as exc:
        raise ConfigError(source, exc.field, exc.message) from None


def _build_sampler(space: SearchSpace, seed: int | None = None, enqueued: int = 0) -> BaseSampler:
    cfg = space.sampler
    params = dict(cfg.params)
    cls = _sampler_class(cfg.name)
    startup = inspect.signature(cls.__init__).parameters.get("n_startup_trials")
    if startup is not None and enqueued > 0:
        n = params.get("n_startup_trials", startup.default)
        if isinstance(n, int) and not isinstance(n, bool):  # a wrong type is Optuna's to reject below
            params["n_startup_trials"] = n + enqueued
    params.setdefault("seed", space.seed if seed is None else seed)
    if cfg.name == "grid":
        from curriculum_search.search.params import grid_search_space

        try:
            grid = grid_search_space(space, points=params.pop("points", 2), values=params.pop("values", {}))
        except ValueError as exc:
            raise FieldError("sampler.params.values", str(exc)) from None
        return cls(grid, seed=params["seed"])  # type: ignore[no-any-return]
    if cfg.name == "tpe":
        params.setdefault("multivariate", True)
    if cfg.name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise FieldError("sampler.name", "cmaes needs the 'cmaes' package (pip install cmaes)") from None
    try:
        return cls(**params)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        raise FieldError("sampler.params", f"{cfg.name} sampler rejected its parameters ({exc})") from None


def default_warmup_steps(space: SearchSpace) -> int:
    """Pruner warm-up in global iterations: the end of the shortest possible first stage.

    With up to ``n`` >= 2 stages a first stage is at least ``ceil(min_stage_fraction × proxy
    iterations)`` long; with single-stage curricula only there is no stage boundary to protect,
    so the warm-up is one evaluation interval (``proxy.eval_every``).
    """
    if space.search.n_stages[1] >= 2:
        return first_stage_min_iterations(space)
    return space.proxy.eval_every


def pruning_allowed(iteration: int, stage_iterations: Sequence[int], eval_every: int) -> bool:
    """Whether the evaluation at global ``iteration`` may be judged by the pruner.

    Every stage restarts the optimiser and its LR warm-up, so AP dips right after a switch and
    recovers; a median pruner would compare that dip with single-stage runs in their low-LR tail.
    So the pruner is never asked during the first stage of a multi-stage curriculum (a weak start
    is by design), at the last iteration (the trial is complete), nor within one evaluation
    interval after any stage start (``0 < iteration - start <= eval_every``). The evaluation is
    still reported (it is the trial's learning curve); it only makes the median at that step lower
    for other trials, never stricter.

    Args:
        iteration: global iteration of the evaluation (iterations done).
        stage_iterations: iterations of each stage, in order.
        eval_every: the evaluation interval (``<= 0``: only the stage rules apply).
    """
    total = sum(stage_iterations)
    if not 0 < iteration < total:
        return False
    starts = [0]
    for n in stage_iterations[:-1]:
        starts.append(starts[-1] + n)
    if len(starts) > 1 and iteration < starts[1]:
        return False
    interval = max(0, eval_every)
    return not any(0 < iteration - s <= interval for s in starts)


def first_stage_min_iterations(space: SearchSpace, total: int | None = None) -> int:
    """Fewest iterations any stage gets out of ``total`` (default ``proxy.iterations``)."""
    total = space.proxy.iterations if total is None else total
    n_hi = space.search.n_stages[1]
    return min(max(1, math.ceil(space.search.min_stage_fraction * total - 1e-9)), total // n_hi)


def make_pruner(
    space: SearchSpace, first_stage_min_iters: int | None = None, *, source: str | Path | None = None
) -> BasePruner:
    """The Optuna pruner of ``space``; its steps are global iterations.

    Args:
        space: the search space.
        first_stage_min_iters: warm-up used when ``pruner.warmup_steps`` is null (default
            :func:`default_warmup_steps`).
        source: the space file, named in errors.

    Raises:
        ConfigError: on ``pruner.params`` when Optuna rejects a value.
    """
    try:
        return _build_pruner(space, first_stage_min_iters)
    except FieldError as exc:
        raise ConfigError(source, exc.field, exc.message) from None


def _build_pruner(space: SearchSpace, first_stage_min_iters: int | None) -> BasePruner:
    import optuna

    cfg = space.pruner
    warmup = cfg.warmup_steps
    if warmup is None:
        warmup = default_warmup_steps(space) if first_stage_min_iters is None else first_stage_min_iters
    params = dict(cfg.params)
    try:
        if cfg.name == "none":
            return optuna.pruners.NopPruner()
        if cfg.name == "median":
            return optuna.pruners.MedianPruner(n_warmup_steps=warmup, **params)
        if cfg.name == "patient":
            patience = params.pop("patience", 1)
            min_delta = params.pop("min_delta", 0.0)
            inner = optuna.pruners.MedianPruner(n_warmup_steps=warmup, **params)
            with warnings.catch_warnings():  # "experimental" since optuna 2.8, still the one we want
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.pruners.PatientPruner(inner, patience=patience, min_delta=min_delta)
        params.setdefault("min_resource", max(1, warmup))
        params.setdefault("max_resource", space.proxy.iterations)
        return optuna.pruners.HyperbandPruner(**params)
    except (TypeError, ValueError) as exc:
        raise FieldError("pruner.params", f"{cfg.name} pruner rejected its parameters ({exc})") from None
