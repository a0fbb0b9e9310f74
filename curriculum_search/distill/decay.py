"""Distillation decay γ(t): how strongly the distillation terms count as a stage progresses.

TADF (Sun et al. 2020) trains with ``L_det + γ(t) · (λ_f L_f + λ_c L_c + λ_r L_r)`` where γ falls
over the stage, so the student leans on the teacher early and on the ground truth late. Each
schedule maps the stage progress ``t ∈ [0, 1]`` (iteration / stage length, clamped) to a factor in
``[floor, 1]``:

* ``constant``: ``γ = 1`` (``floor`` is ignored).
* ``linear``: ``γ = 1 − (1 − floor) · t``.
* ``cosine``: ``γ = floor + (1 − floor) · (1 + cos(π t)) / 2``.
* ``step``: ``γ = max(floor, gamma ** #{m ∈ milestones : m ≤ t})`` (defaults ``milestones=(0.5,)``,
  ``gamma=0.1``).

Adding a schedule is one function plus ``@register_decay("name")``; its keyword-only parameters
are the ``**params`` that :func:`decay_factor` accepts (any other keyword is an error).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

DecayFn = Callable[..., float]

_DECAYS: dict[str, DecayFn] = {}


def register_decay(name: str) -> Callable[[DecayFn], DecayFn]:
    """Register a decay schedule ``fn(progress, floor, *, **params) -> float`` under ``name``.

    Args:
        name: Registry key used in recipes (``decay: cosine``).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: DecayFn) -> DecayFn:
        if name in _DECAYS:
            raise ValueError(f"decay schedule {name!r} is already registered")
        _DECAYS[name] = fn
        return fn

    return decorator


def list_decays() -> list[str]:
    """Return the registered decay schedule names, sorted."""
    return sorted(_DECAYS)


def decay_params(kind: str) -> list[str]:
    """Return the names of the keyword parameters that schedule ``kind`` accepts.

    Raises:
        ValueError: ``kind`` is not registered.
    """
    fn = _get(kind)
    return [
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _get(kind: str) -> DecayFn:
    try:
        return _DECAYS[kind]
    except KeyError:
        raise ValueError(
            f"unknown decay schedule {kind!r}; choose one of {', '.join(list_decays())}"
        ) from None


def decay_factor(kind: str, progress: float, floor: float = 0.0, **params: Any) -> float:
    """Distillation weight γ at ``progress`` through a stage.

    Args:
        kind: Registered schedule name (see :func:`list_decays`).
        progress: Fraction of the stage done; clamped into ``[0, 1]``.
        floor: Lowest value the schedule reaches, in ``[0, 1]`` (default 0).
        **params: Schedule-specific keyword parameters (``step``: ``milestones``, ``gamma``).

    Returns:
        γ as a Python float in ``[floor, 1]`` (``constant`` always returns 1).

    Raises:
        ValueError: Unknown ``kind`` or parameter, ``floor`` outside ``[0, 1]``, NaN ``progress``,
            or a bad schedule parameter. The message is one line.
    """
    fn = _get(kind)
    allowed = decay_params(kind)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) if allowed else "none"
        raise ValueError(
            f"decay schedule {kind!r} got unknown parameter(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    progress = float(progress)
    if math.isnan(progress):
        raise ValueError("decay progress must be a number in [0, 1], got nan")
    floor = float(floor)
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"decay floor must be in [0, 1], got {floor}")
    progress = min(max(progress, 0.0), 1.0)
    return float(fn(progress, floor, **params))


@register_decay("constant")
def _constant(progress: float, floor: float) -> float:
    """γ = 1 throughout the stage."""
    return 1.0


@register_decay("linear")
def _linear(progress: float, floor: float) -> float:
    """γ = 1 − (1 − floor) · t."""
    return 1.0 - (1.0 - floor) * progress


@register_decay("cosine")
def _cosine(progress: float, floor: float) -> float:
    """γ = floor + (1 − floor) · (1 + cos(π t)) / 2 (half cosine from 1 to floor)."""
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_decay("step")
def _step(
    progress: float, floor: float, *, milestones: Sequence[float] = (0.5,), gamma: float = 0.1
) -> float:
    """γ = max(floor, gamma ** (number of milestones ≤ t)); milestones are stage fractions."""
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence):
        raise ValueError(f"step decay milestones must be a list of fractions in [0, 1], got {milestones!r}")
    values = [float(m) for m in milestones]
    if any(not 0.0 <= m <= 1.0 for m in values):
        raise ValueError(f"step decay milestones must be fractions in [0, 1], got {list(milestones)}")
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"step decay gamma must be in [0, 1], got {gamma}")
    passed = sum(1 for m in values if m <= progress)
    return max(floor, gamma**passed)


__all__ = ["decay_factor", "decay_params", "list_decays", "register_decay"]
