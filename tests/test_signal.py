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
