"""Race decisions on synthetic score tables (no training): the incumbent is kept within noise,
replaced when a challenger is clearly better, interval arithmetic, ties, drops and promotion."""

from __future__ import annotations

import math

import pytest

from curriculum_search.search.race import (
    Arm,
    RaceSettings,
    kendall_tau,
    paired_stats,
    plan_race,
    pooled_seed_std,
    t_quantile,
)

INC = Arm("inc", "direct_strongest", "incumbent", baseline="direct_strongest")
A = Arm("a", "trial #5", "challenger", source_trial=5)
B = Arm("b", "trial #6", "challenger", source_trial=6)
C = Arm("c", "trial #7", "challenger", source_trial=7)
REF = Arm("ref", "student alone", "reference", baseline="student_only")


def table(values: dict[str, dict[int, list[float]]], seeds: dict[int, tuple[int, ...]]):
    """{arm: {iterations: [AP per seed]}} -> {(arm, iterations, seed): AP}."""
    return {
        (arm, its, s): v
        for arm, by_its in values.items()
        for its, vals in by_its.items()
        for s, v in zip(seeds[its], vals)
    }


def test_t_quantile_matches_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.95, 2) == pytest.approx(2.920, abs=1e-3)
    assert t_quantile(0.975, 30) == pytest.approx(2.042, abs=1e-3)


def test_paired_stats_interval_arithmetic():
    st = paired_stats([0.30, 0.32, 0.34], [0.20, 0.21, 0.25], confidence=0.95)
    d = [0.10, 0.11, 0.09]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    assert st.n == 3
    assert st.mean == pytest.approx(mean)
    assert st.sd == pytest.approx(sd)
    assert st.lo == pytest.approx(mean - half, abs=1e-6)
    assert st.hi == pytest.approx(mean + half, abs=1e-6)
    assert st.clears(0.0) and st.words() == "beats"
    assert not st.clears(0.09)  # a margin above the lower bound


def test_paired_stats_one_pair_has_no_interval_and_never_clears():
    st = paired_stats([0.5], [0.1], 0.9)
    assert st.lo is None and st.hi is None
    assert not st.clears(0.0) and not st.clearly_worse()
    assert st.words() == "is within noise of"


def test_paired_stats_rejects_unpaired():
    with pytest.raises(ValueError):
        paired_stats([0.1, 0.2], [0.1], 0.9)


def test_ties_keep_the_incumbent():
    s = RaceSettings(budgets=(100,), seeds=((0, 1, 2),))
    res = table({"inc": {100: [0.2, 0.3, 0.25]}, "a": {100: [0.2, 0.3, 0.25]}}, {100: (0, 1, 2)})
    plan = plan_race([INC, A], s, res)
    assert plan.done and plan.winner == INC
    assert plan.rungs[0].stats["a"].mean == 0.0 and plan.rungs[0].stats["a"].sd == 0.0
    assert plan.rungs[0].fate["a"] == "within noise"


def test_incumbent_kept_when_challenger_is_within_noise():
    s = RaceSettings(budgets=(100,), seeds=((0, 1, 2),))
    # the challenger is better on average (+0.01) but the paired differences scatter widely
    res = table({"inc": {100: [0.20, 0.30, 0.25]}, "a": {100: [0.25, 0.28, 0.25]}}, {100: (0, 1, 2)})
    plan = plan_race([INC, A], s, res)
    st = plan.rungs[0].stats["a"]
    assert st.mean > 0 and st.lo is not None and st.lo < 0
    assert plan.winner == INC and plan.winner_stats is None
    assert "no challenger" in plan.reason


def test_challenger_replaces_incumbent_when_clearly_better():
    s = RaceSettings(budgets=(100,), seeds=((0, 1, 2),))
    res = table({"inc": {100: [0.20, 0.30, 0.25]}, "a": {100: [0.25, 0.36, 0.29]}}, {100: (0, 1, 2)})
    plan = plan_race([INC, A], s, res)
    assert plan.winner == A
    assert plan.winner_stats is not None and plan.winner_stats.lo is not None and plan.winner_stats.lo > 0
    assert plan.rungs[0].fate["a"] == "winner"


def test_margin_is_required_at_the_lower_bound():
    res = table({"inc": {100: [0.20, 0.30, 0.25]}, "a": {100: [0.25, 0.36, 0.29]}}, {100: (0, 1, 2)})
    lo = paired_stats([0.25, 0.36, 0.29], [0.20, 0.30, 0.25], 0.9).lo
    assert lo is not None
    keep = plan_race([INC, A], RaceSettings((100,), ((0, 1, 2),), margin=lo + 1e-4), res)
    take = plan_race([INC, A], RaceSettings((100,), ((0, 1, 2),), margin=lo - 1e-4), res)
    assert keep.winner == INC and take.winner == A


def test_rungs_drop_clearly_worse_promote_few_and_use_common_seeds():
    s = RaceSettings(budgets=(50, 100), seeds=((0, 1), (0, 1, 2)), promote=1)
    arms = [INC, A, B, C, REF]
    plan = plan_race(arms, s, {})
    # first rung: incumbent + challengers on the same seeds; the reference waits for the last rung
    assert sorted(plan.pending) == sorted((k, 50, sd) for k in ("inc", "a", "b", "c") for sd in (0, 1))
    rung0 = table(
        {
            "inc": {50: [0.20, 0.22]},
            "a": {50: [0.10, 0.11]},  # clearly worse: dropped
            "b": {50: [0.24, 0.25]},  # best mean difference: promoted
            "c": {50: [0.21, 0.24]},  # not clearly worse, but only one is promoted
        },
        {50: (0, 1)},
    )
    plan = plan_race(arms, s, rung0)
    assert plan.rungs[0].fate == {
        "a": "dropped: clearly worse",
        "b": "promoted",
        "c": "dropped: not among the best",
    }
    assert sorted(plan.pending) == sorted((k, 100, sd) for k in ("inc", "b", "ref") for sd in (0, 1, 2))
    full = dict(rung0)
    full.update(
        table(
            {"inc": {100: [0.30, 0.31, 0.33]}, "b": {100: [0.35, 0.36, 0.37]}, "ref": {100: [0.2, 0.2, 0.2]}},
            {100: (0, 1, 2)},
        )
    )
    plan = plan_race(arms, s, full)
    assert plan.winner == B
    assert "ref" in plan.rungs[1].stats  # the reference is compared, never a candidate


def test_failed_challenger_is_out_failed_incumbent_stops():
    s = RaceSettings(budgets=(100,), seeds=((0, 1),))
    res = {("inc", 100, 0): 0.2, ("inc", 100, 1): 0.3, ("a", 100, 0): None, ("a", 100, 1): 0.9}
    plan = plan_race([INC, A], s, res)
    assert plan.winner == INC and plan.rungs[0].fate["a"] == "failed"
    res = {("inc", 100, 0): None, ("inc", 100, 1): 0.3, ("a", 100, 0): 0.5, ("a", 100, 1): 0.9}
    plan = plan_race([INC, A], s, res)
    assert plan.winner_stats is None and "incumbent" in plan.reason


def test_several_finalists_are_bonferroni_corrected():
    s = RaceSettings(budgets=(100,), seeds=((0, 1, 2),), confidence=0.9)
    vals = {"inc": [0.20, 0.30, 0.25], "a": [0.25, 0.36, 0.29], "b": [0.10, 0.40, 0.25]}
    plan = plan_race([INC, A, B], s, table({k: {100: v} for k, v in vals.items()}, {100: (0, 1, 2)}))
    assert plan.rungs[0].stats["a"].confidence == pytest.approx(0.95)
    alone = plan_race([INC, A], s, table({k: {100: vals[k]} for k in ("inc", "a")}, {100: (0, 1, 2)}))
    assert alone.rungs[0].stats["a"].confidence == pytest.approx(0.9)
    assert (alone.rungs[0].stats["a"].lo or 0) > (plan.rungs[0].stats["a"].lo or 0)


def test_settings_validation():
    with pytest.raises(ValueError, match="at least 2 seeds"):
        RaceSettings((100,), ((0,),))
    with pytest.raises(ValueError, match="increase"):
        RaceSettings((100, 50), ((0, 1), (0, 1)))
    with pytest.raises(ValueError, match="one incumbent"):
        plan_race([A], RaceSettings((100,), ((0, 1),)), {})


def test_kendall_tau_and_pooled_std():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2], [1, 2]) is None
    assert pooled_seed_std({"a": [1.0, 3.0], "b": [2.0, 2.0]}) == pytest.approx(math.sqrt(2 / 2))
    assert pooled_seed_std({"a": [1.0]}) is None


def test_a_race_run_killed_again_and_again_counts_as_failed():
    import optuna

    from curriculum_search.search.selection import MAX_INTERRUPTIONS, race_results

    study = optuna.create_study(direction="maximize")
    attrs = {"arm_key": "a", "iterations": 100, "seed": 0}
    for i in range(MAX_INTERRUPTIONS):
        t = study.ask()
        for k, v in {**attrs, "interrupted": True}.items():
            t.set_user_attr(k, v)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
        assert (("a", 100, 0) in race_results(study)) == (i + 1 >= MAX_INTERRUPTIONS)
    assert race_results(study)[("a", 100, 0)] is None
    t = study.ask()
    for k, v in {**attrs, "seed": 1}.items():
        t.set_user_attr(k, v)
    study.tell(t, 0.25)
    assert race_results(study)[("a", 100, 1)] == 0.25


def test_race_runs_get_the_trial_limit_scaled_to_their_length(tmp_path):
    import dataclasses

    from curriculum_search.search.failures import race_time_limit, trial_time_limit
    from curriculum_search.search.space import load_space
    from tests.helpers import write_space

    space = load_space(write_space(tmp_path))
    assert race_time_limit(space, 100) == 600 + 6 * 100  # default: generous, grows with the budget
    fixed = dataclasses.replace(space, trial_timeout_s=90.0)
    assert trial_time_limit(fixed) == 90.0
    its = fixed.proxy.iterations
    assert race_time_limit(fixed, its) == 90.0 and race_time_limit(fixed, 4 * its) == 360.0


def test_of_several_challengers_that_clear_the_bar_the_best_mean_wins():
    """A steady +0.016 (tight interval) and a larger +0.031 (wider interval) both clear the
    incumbent: the one with the higher expected AP ships, not the tighter interval."""
    s = RaceSettings(budgets=(400,), seeds=((0, 1, 2),), promote=1, margin=0.0, confidence=0.9)
    values = table(
        {
            "inc": {400: [0.104, 0.111, 0.103]},
            "a": {400: [0.124, 0.121, 0.121]},  # steady: +0.019, +0.010, +0.018
            "b": {400: [0.149, 0.135, 0.127]},  # larger: +0.045, +0.024, +0.024
        },
        {400: (0, 1, 2)},
    )
    plan = plan_race([INC, A, B], s, values)
    st = plan.rungs[0].stats
    assert st["a"].clears(0.0) and st["b"].clears(0.0)
    assert (st["a"].lo or 0) > (st["b"].lo or 0)  # a has the tighter interval...
    assert plan.winner == B and plan.rungs[0].fate["b"] == "winner"  # ...b the higher mean
    assert plan.rungs[0].fate["a"] == "beats the best baseline"


W2S = Arm("w2s", "weak_to_strong", "incumbent", baseline="weak_to_strong")
DIRECT = Arm("direct", "direct_strongest", "challenger", baseline="direct_strongest")


def test_the_best_baseline_is_measured_by_the_race_not_the_proxy():
    """The proxy's favourite baseline (weak->strong) is the incumbent, but direct KD has the better
    mean on the race's seeds without clearing the bar against it: direct KD is the best baseline and
    ships, and the searched challenger is measured against it. Other baselines run at the last rung
    only."""
    s = RaceSettings(budgets=(200, 400), seeds=((0, 1), (0, 1, 2)), promote=1)
    arms = [W2S, A, DIRECT, REF]
    first = plan_race(arms, s, {})
    assert {k[0] for k in first.pending} == {"w2s", "a"}  # rung 1: the incumbent and searched only
    res = table(
        {
            "w2s": {200: [0.10, 0.11], 400: [0.20, 0.24, 0.22]},
            "a": {200: [0.11, 0.12], 400: [0.22, 0.25, 0.24]},  # +0.017 on w2s, +0.001 on direct
            "direct": {400: [0.21, 0.26, 0.23]},  # +0.013 on w2s, within noise
            "ref": {400: [0.15, 0.16, 0.15]},
        },
        {200: (0, 1), 400: (0, 1, 2)},
    )
    plan = plan_race(arms, s, res)
    last = plan.rungs[-1]
    assert plan.done and plan.winner == DIRECT and plan.incumbent == DIRECT and plan.winner_stats is None
    assert last.fate["direct"] == "best baseline" and last.fate["w2s"] == "baseline"
    assert last.stats["a"].mean == pytest.approx(0.0033, abs=1e-4)  # against direct KD, not w2s
    assert last.fate["a"] == "within noise" and "best mean of the baselines" in plan.reason
    # a searched challenger that clears the best baseline still ships
    res[("a", 400, 0)], res[("a", 400, 1)], res[("a", 400, 2)] = 0.25, 0.30, 0.27
    assert plan_race(arms, s, res).winner == A
