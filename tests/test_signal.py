"""Issue 12 (search signal): no-KD trials reuse the student-only result; the pruner ignores the
dip after a stage switch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from curriculum_search.search.baselines import STUDENT_ONLY, student_only_choice
from curriculum_search.search.encoding import encode_curriculum
from curriculum_search.search.space import SearchSpace, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    shipped = load_space(REPO / "space" / "default.yaml")
    return dataclasses.replace(
        shipped, proxy=dataclasses.replace(shipped.proxy, iterations=300, eval_every=100)
    )


def test_a_no_kd_trial_reuses_the_student_only_result(space: SearchSpace, tmp_path: Path) -> None:
    from curriculum_search.search import service

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("teacher_info", [{"name": t, "gflops": 5.0} for t in space.search_teachers])
    study.set_user_attr("student_gflops", 1.0)
    opts = service.SearchOptions(studies_root=tmp_path, progress=False)
    # the student-only baseline ran first
    study.enqueue_trial(
        encode_curriculum({"teachers": ["small"]}, space), user_attrs={"baseline": STUDENT_ONLY}
    )
    base = study.ask()
    choice = service._decode(base, space)
    assert choice == student_only_choice(space)
    assert service._prepare_trial(space, study, base, choice, opts) == "run"
    study.tell(base, 0.25)
    # a searched 3-teacher curriculum without any KD term is that run
    no_kd = {"feature_loss": "none", "response": False, "pseudo": False}
    study.enqueue_trial(encode_curriculum({"teachers": ["small", "medium"], **no_kd}, space))
    trial = study.ask()
    choice = service._decode(trial, space)
    assert service._prepare_trial(space, study, trial, choice, opts) == "reused"
    done = study.trials[-1]
    assert done.value == 0.25 and done.user_attrs["reused_from"] == base.number
    assert done.user_attrs["description"].startswith("student only")
    assert done.user_attrs["proxy_cost"] == 300.0  # student FLOPs only, no teacher charged


# -- 12.2: the pruner ignores the dip after a stage switch ----------------------------------------


def test_pruning_allowed_skips_the_first_stage_and_one_interval_after_each_switch() -> None:
    from curriculum_search.search.space import pruning_allowed

    allowed = [it for it in range(0, 301, 50) if pruning_allowed(it, [100, 100, 100], 50)]
    assert allowed == [100, 200]  # stage ends; 150/250 are the first evaluations of a stage
    # single stage: only the first evaluation (right after the warm-up) and the end are skipped
    assert [it for it in range(0, 301, 50) if pruning_allowed(it, [300], 50)] == [100, 150, 200, 250]
    assert [it for it in range(0, 301, 25) if pruning_allowed(it, [60, 240], 25)] == [
        100,
        125,
        150,
        175,
        200,
        225,
        250,
        275,
    ]


def _study_with_single_stage_runs(space: SearchSpace) -> optuna.Study:
    from curriculum_search.search.space import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(space, 45))
    for k in range(5):  # single-stage runs in their smooth ramp
        t = study.ask()
        for i, step in enumerate(range(50, 301, 50)):
            t.report(0.03 * (i + 1) + 0.002 * k, step)
        study.tell(t, 0.18 + 0.002 * k)
    return study


def _run_curve(study: optuna.Study, curve: dict[int, float], stages: list[int], rule: str) -> int | None:
    """Report ``curve`` like trial_worker does; the iteration it is pruned at (None: never)."""
    from curriculum_search.search.space import pruning_allowed

    trial = study.ask()
    for step, ap in curve.items():
        trial.report(ap, step)
        ok = (
            pruning_allowed(step, stages, 50)
            if rule == "new"
            else stages[0] <= step < sum(stages)  # the rule before issue 12.2
        )
        if ok and trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, curve[max(curve)])
    return None


def test_a_curriculum_that_dips_after_each_switch_and_recovers_is_not_pruned(space: SearchSpace) -> None:
    stages = [100, 100, 100]
    dip_and_recover = {50: 0.02, 100: 0.07, 150: 0.03, 200: 0.13, 250: 0.06, 300: 0.21}
    assert _run_curve(_study_with_single_stage_runs(space), dip_and_recover, stages, "old") == 150
    assert _run_curve(_study_with_single_stage_runs(space), dip_and_recover, stages, "new") is None
    # one that does not recover is still pruned, at the next stage end
    stays_low = {**dip_and_recover, 200: 0.05}
    assert _run_curve(_study_with_single_stage_runs(space), stays_low, stages, "new") == 200
