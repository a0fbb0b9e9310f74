"""Distillation decay schedules γ(t)."""

from __future__ import annotations

import itertools
import math

import pytest

from curriculum_search.distill.decay import decay_factor, decay_params, list_decays, register_decay


@pytest.mark.parametrize(
    ("kind", "floor", "params", "expected"),
    [
        ("constant", 0.3, {}, (1.0, 1.0, 1.0)),
        ("linear", 0.0, {}, (1.0, 0.5, 0.0)),
        ("linear", 0.1, {}, (1.0, 0.55, 0.1)),
        ("cosine", 0.0, {}, (1.0, 0.5, 0.0)),
        ("cosine", 0.2, {}, (1.0, 0.6, 0.2)),
        ("step", 0.0, {}, (1.0, 0.1, 0.1)),  # default: milestone 0.5, gamma 0.1
        ("step", 0.3, {"milestones": [0.25, 0.75], "gamma": 0.5}, (1.0, 0.5, 0.3)),
        ("step", 0.0, {"milestones": [0.25, 0.75], "gamma": 0.5}, (1.0, 0.5, 0.25)),
    ],
)
def test_curves_at_start_middle_end(kind: str, floor: float, params: dict, expected: tuple) -> None:
    got = tuple(decay_factor(kind, t, floor=floor, **params) for t in (0.0, 0.5, 1.0))
    assert got == pytest.approx(expected, abs=1e-12)


def test_cosine_quarter_and_step_milestone_is_inclusive() -> None:
    assert decay_factor("cosine", 0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert decay_factor("step", 0.2499, milestones=[0.25], gamma=0.5) == 1.0
    assert decay_factor("step", 0.25, milestones=[0.25], gamma=0.5) == 0.5


def test_progress_is_clamped() -> None:
    assert decay_factor("linear", -3.0, floor=0.2) == 1.0
    assert decay_factor("linear", 7.0, floor=0.2) == pytest.approx(0.2)
    assert decay_factor("cosine", 1.5, floor=0.4) == pytest.approx(0.4)


@pytest.mark.parametrize("kind", list_decays())
@pytest.mark.parametrize("floor", [0.0, 0.25])
def test_every_schedule_is_non_increasing_and_within_floor_and_one(kind: str, floor: float) -> None:
    values = [decay_factor(kind, i / 20, floor=floor) for i in range(21)]
    assert values[0] == 1.0
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))
    assert all(floor - 1e-12 <= v <= 1.0 for v in values)


def test_registry_lists_the_builtins() -> None:
    assert {"constant", "linear", "cosine", "step"} <= set(list_decays())
    assert decay_params("step") == ["milestones", "gamma"]
    assert decay_params("linear") == []


def test_unknown_kind_is_a_one_line_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown decay schedule 'exp'; choose one of .*cosine") as err:
        decay_factor("exp", 0.5)
    assert "\n" not in str(err.value)


def test_unknown_parameter_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"'linear' got unknown parameter\(s\) gamma; accepted: none"):
        decay_factor("linear", 0.5, gamma=0.1)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) milestone; accepted: milestones, gamma"):
        decay_factor("step", 0.5, milestone=[0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"floor": 1.5}, "floor must be in"),
        ({"floor": -0.1}, "floor must be in"),
        ({"milestones": [1.5]}, "milestones must be fractions"),
        ({"milestones": "0.5"}, "milestones must be a list"),
        ({"gamma": 2.0}, "gamma must be in"),
    ],
)
def test_bad_values_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decay_factor("step", 0.5, **kwargs)


def test_nan_progress_raises() -> None:
    with pytest.raises(ValueError, match="got nan"):
        decay_factor("linear", float("nan"))


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_decay("linear")(lambda progress, floor: 1.0)
