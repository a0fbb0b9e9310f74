"""The race's arms from a finished search (no training): the incumbent, the challenger, the
incumbent at the challenger's learning rate, and the student alone at both learning rates, so the
shipped student is reported against the student alone at its own learning rate."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
from optuna.distributions import FloatDistribution

from curriculum_search.search import attrs as A
from curriculum_search.search.baselines import STUDENT_ONLY, student_only_choice
from curriculum_search.search.encoding import choice_from_settings
from curriculum_search.search.race_report import _student_alone_key, decision_lines
from curriculum_search.search.selection import shortlist
from curriculum_search.search.space import space_from_dict
from tests.helpers import TINY


def _trial(study: optuna.Study, choice: Any, value: float, baseline: str | None = None) -> None:
    attrs = {A.CURRICULUM: choice.as_dict(), A.CURRICULUM_KEY: choice.key}
    if baseline:
        attrs[A.BASELINE] = baseline
    study.add_trial(
        optuna.trial.create_trial(
            value=value,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs=attrs,
        )
    )


def _space_and_study() -> tuple[Any, optuna.Study, Any, Any]:
    space = space_from_dict(TINY)
    study = optuna.create_study(direction="maximize")
    direct = choice_from_settings(space, {"teachers": ["b"]})
    fast = choice_from_settings(space, {"teachers": ["a", "b"], "lr": direct.lr * 2, "feature_loss": "mse"})
    _trial(study, student_only_choice(space), 0.10, STUDENT_ONLY)
    _trial(study, direct, 0.20, "direct_strongest")
    _trial(study, fast, 0.30)
    return space, study, direct, fast


def test_the_student_alone_races_at_the_incumbents_and_the_challengers_learning_rate() -> None:
    space, study, direct, fast = _space_and_study()
    arms = {
        c.arm.label: c for c in shortlist(space, study, dataclasses.replace(space.selection, lr_matched=True))
    }
    roles = {label: c.arm.role for label, c in arms.items()}
    lr = f"{fast.lr:.3g}"
    assert roles == {
        "direct_strongest": "incumbent",
        "trial #2": "challenger",
        f"direct_strongest @ lr {lr}": "challenger",
        "student alone": "reference",
        f"student alone @ lr {lr}": "reference",
    }, roles
    assert arms[f"student alone @ lr {lr}"].choice.is_student_only
    assert arms[f"student alone @ lr {lr}"].choice.lr == fast.lr
    assert arms["student alone"].choice.lr == direct.lr


def test_the_shipped_student_is_reported_against_the_student_alone_at_its_learning_rate() -> None:
    space, study, _, fast = _space_and_study()
    cands = {
        c.arm.key: c for c in shortlist(space, study, dataclasses.replace(space.selection, lr_matched=True))
    }
    by_label = {c.arm.label: k for k, c in cands.items()}
    raced = {k: [0.1, 0.1] for k in cands}
    matched = by_label[f"direct_strongest @ lr {fast.lr:.3g}"]
    assert _student_alone_key(cands, matched, raced) == by_label[f"student alone @ lr {fast.lr:.3g}"]
    assert _student_alone_key(cands, by_label["direct_strongest"], raced) == by_label["student alone"]
    # a winner that distils nothing IS the student alone at its learning rate
    alone_fast = by_label[f"student alone @ lr {fast.lr:.3g}"]
    assert _student_alone_key(cands, alone_fast, raced) == alone_fast


def test_every_distinct_distilling_baseline_races() -> None:
    """The proxy ranks baselines no better than anything else: every distinct baseline that distils
    races (the proxy-best one as the incumbent, the others as challengers), so what ships is at
    least as good as each of them; the student alone is the reference, or the incumbent when the
    proxy ranked it first (then it is not raced twice)."""
    space = space_from_dict(TINY)
    direct = choice_from_settings(space, {"teachers": ["b"]})
    w2s = choice_from_settings(space, {"teachers": ["a", "b"]})
    searched = choice_from_settings(space, {"teachers": ["a"], "feature_loss": "mse"})

    def arms(values: dict[str, float]) -> dict[str, tuple[str, str | None]]:
        study = optuna.create_study(direction="maximize")
        _trial(study, student_only_choice(space), values[STUDENT_ONLY], STUDENT_ONLY)
        _trial(study, direct, values["direct_strongest"], "direct_strongest")
        _trial(study, w2s, values["weak_to_strong"], "weak_to_strong")
        _trial(study, w2s, values["weak_to_strong"], "heuristic")  # the same curriculum: raced once
        _trial(study, searched, 0.25)
        cands = shortlist(space, study, dataclasses.replace(space.selection, lr_matched=True))
        return {c.arm.label: (c.arm.role, c.arm.baseline) for c in cands}

    assert arms({STUDENT_ONLY: 0.30, "direct_strongest": 0.10, "weak_to_strong": 0.20}) == {
        STUDENT_ONLY: ("incumbent", STUDENT_ONLY),
        "trial #4": ("challenger", None),
        "weak_to_strong": ("challenger", "weak_to_strong"),
        "direct_strongest": ("challenger", "direct_strongest"),
    }
    assert arms({STUDENT_ONLY: 0.10, "direct_strongest": 0.15, "weak_to_strong": 0.20}) == {
        "weak_to_strong": ("incumbent", "weak_to_strong"),
        "trial #4": ("challenger", None),
        "direct_strongest": ("challenger", "direct_strongest"),
        "student alone": ("reference", STUDENT_ONLY),
    }


def test_the_shortlist_scores_every_curriculum_on_the_same_evaluations() -> None:
    """The noise-aware score averages the evaluations in the same final window for every
    curriculum (inside every last stage's second half), so the number of stages does not bias
    it: a one-stage curriculum with the better final proxy AP is shortlisted over a two-stage one
    although its curve was lower two thirds of the way through (the rule before, which averaged
    the final AP with the last evaluation in the last stage's second half, ranked it below: a
    one-stage curriculum's curve is still rising there, a two-stage one had no such evaluation)."""
    space = space_from_dict(TINY)  # min_stage_fraction 0.15: the window is the last 7.5 %

    def rank(curves: dict[str, tuple[list[int], dict[int, float]]]) -> list[str]:
        study = optuna.create_study(direction="maximize")
        _trial(study, student_only_choice(space), 0.01, STUDENT_ONLY)
        labels = {}
        for name, (bounds, values) in curves.items():
            n = len(bounds) - 1
            choice = choice_from_settings(space, {"teachers": ["a", "b"][:n], "feature_loss": "mse"})
            study.add_trial(
                optuna.trial.create_trial(
                    value=values[bounds[-1]],
                    params={"x": 0.5},
                    distributions={"x": FloatDistribution(0, 1)},
                    intermediate_values=values,
                    user_attrs={
                        A.CURRICULUM: choice.as_dict(),
                        A.CURRICULUM_KEY: choice.key,
                        A.STAGE_BOUNDARIES: bounds,
                    },
                )
            )
            labels[f"trial #{len(study.trials) - 1}"] = name
        cfg = dataclasses.replace(space.selection, shortlist=2, lr_matched=False)
        cands = [c for c in shortlist(space, study, cfg) if c.arm.role == "challenger"]
        return [labels[c.arm.label] for c in cands]

    # sparse evaluations (every third of the run): only the final AP falls in the window
    one_stage = ([0, 150], {50: 0.004, 100: 0.008, 150: 0.018})
    two_stage = ([0, 84, 150], {50: 0.003, 100: 0.005, 150: 0.015})
    assert rank({"two stages": two_stage, "one stage": one_stage}) == ["one stage", "two stages"]
    # dense evaluations: both average the same two steps (140 and 150); the dip right after the
    # two-stage curriculum's switch (at 130) is outside the window and counts for nothing
    one_stage = ([0, 150], {130: 0.010, 140: 0.014, 150: 0.016})
    two_stage = ([0, 125, 150], {130: 0.001, 140: 0.017, 150: 0.015})
    assert rank({"one stage": one_stage, "two stages": two_stage}) == ["two stages", "one stage"]


def _summary(final: dict[str, Any]) -> dict[str, Any]:
    return {
        "selection": {
            "winner_is_baseline": True,
            "winner": "direct_strongest",
            "best_baseline": "direct_strongest",
            "best_challenger": None,
        },
        "fidelity": {"kendall_tau": None, "n": 1, "seed_std": 0.01, "warnings": []},
        "final": {"ap": 0.2, "ap_mean": 0.2, "split": "val", "seeds": 3, **final},
    }


def test_plain_words_say_when_the_shipped_student_distils_nothing_or_the_rates_differ() -> None:
    lines = decision_lines(
        _summary(
            {"student_alone_ap": 0.2, "student_alone_words": "is", "lr": 0.003, "student_alone_lr": 0.003}
        )
    )
    assert any("it is the student alone" in x and "distils nothing" in x for x in lines), lines
    lines = decision_lines(
        _summary(
            {
                "student_alone_ap": 0.1,
                "student_alone_words": "beats",
                "delta_vs_student_alone_mean": 0.1,
                "delta_vs_student_alone_interval": [0.05, 0.15],
                "lr": 0.003,
                "student_alone_lr": 0.0016,
            }
        )
    )
    assert any("beats the student alone" in x for x in lines), lines
    assert any("not distillation alone" in x for x in lines), lines
