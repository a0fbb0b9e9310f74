"""The fixed Optuna parameter set of a search space, and its grid for ``GridSampler``.

Every trial of a space suggests exactly these parameters (Optuna refuses a parameter whose choices
change between trials): one random key per teacher and the number of stages (the order), one
fraction per stage slot (the lengths), and one value per searched method setting. Decoding them into
a curriculum is :mod:`curriculum_search.search.encoding`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

if TYPE_CHECKING:
    from curriculum_search.search.space import SearchSpace


def param_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The fixed parameter set every trial of ``space`` suggests (see the module docstring)."""
    dims = space.search
    out: dict[str, BaseDistribution] = {"n_stages": IntDistribution(dims.n_stages[0], dims.n_stages[1])}
    teachers = space.search_teachers
    if len(teachers) >= 2:
        for t in teachers:
            out[f"order_key.{t}"] = FloatDistribution(0.0, 1.0)
    if dims.n_stages[1] >= 2:
        for i in range(dims.n_stages[1]):
            out[f"frac.{i}"] = FloatDistribution(0.0, 1.0)
    out["feature_loss"] = CategoricalDistribution(list(dims.feature_losses))
    out["response"] = CategoricalDistribution(list(dims.response))
    out["pseudo"] = CategoricalDistribution(list(dims.pseudo))
    if dims.has_two_step:
        if len(dims.pseudo_form) > 1:
            out["pseudo_form"] = CategoricalDistribution(list(dims.pseudo_form))
        out["pseudo_gt_fraction"] = FloatDistribution(*dims.pseudo_gt_fraction)
    if dims.has_feature:
        out["feature_weight"] = FloatDistribution(*dims.feature_weight, log=True)
    if dims.has_response:
        out["cls_weight"] = FloatDistribution(*dims.cls_weight, log=True)
        out["box_weight"] = FloatDistribution(*dims.box_weight, log=True)
        out["temperature"] = FloatDistribution(*dims.temperature, log=True)
    out["decay"] = CategoricalDistribution(list(dims.decay))
    if dims.has_floor:
        out["decay_floor"] = FloatDistribution(*dims.decay_floor)
    out["lr"] = FloatDistribution(*dims.lr, log=True)
    return out


def grid_search_space(
    space: SearchSpace, points: int = 2, values: Mapping[str, Sequence[Any]] | None = None
) -> dict[str, list[Any]]:
    """A ``GridSampler`` search space over :func:`param_distributions`.

    Categorical and int parameters take all their values; a float range takes ``points`` values
    (log-spaced on log ranges, both ends included; one point = the geometric/arithmetic middle; a
    fixed range ``lo == hi`` one value). ``values`` overrides the grid of named parameters.

    Raises:
        ValueError: an override names an unknown parameter or holds a value outside its range.
    """
    dists = param_distributions(space)
    grid: dict[str, list[Any]] = {}
    for name, dist in dists.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            assert isinstance(dist, FloatDistribution)
            grid[name] = _float_points(dist.low, dist.high, points, dist.log)
    for name, vals in (values or {}).items():
        if name not in dists:
            raise ValueError(f"unknown parameter {name!r} (parameters: {', '.join(dists)})")
        dist = dists[name]
        for v in vals:
            if not in_distribution(dist, v):
                raise ValueError(f"value {v!r} of {name!r} is outside its distribution {dist}")
        grid[name] = list(vals)
    return grid


def in_distribution(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a valid external value of ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        return any(value == c and type(value) is type(c) for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(dist, IntDistribution):
        return float(value).is_integer() and dist.low <= value <= dist.high
    assert isinstance(dist, FloatDistribution)
    return dist.low <= value <= dist.high


def _float_points(lo: float, hi: float, points: int, log: bool) -> list[float]:
    if lo == hi:
        return [lo]
    if points == 1:
        return [math.sqrt(lo * hi) if log else (lo + hi) / 2]
    out = []
    for k in range(points):
        t = k / (points - 1)
        v = math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))) if log else lo + t * (hi - lo)
        out.append(min(max(float(f"{v:.6g}"), lo), hi))
    return out


# -- integer split of a budget --------------------------------------------------------------------


__all__ = ["grid_search_space", "in_distribution", "param_distributions"]
