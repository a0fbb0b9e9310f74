"""The one study reader: records equal Optuna's own trials, one count rule, one set of state words,
and the ``studies`` command and the dashboard agree on both (a re-queued trial included)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from curriculum_search.cli import main as cli
from curriculum_search.dashboard import data as dd
from curriculum_search.search import attrs as A
from curriculum_search.search import reader as R
from curriculum_search.search.listing import list_studies, status_json
from curriculum_search.search.storage import open_readonly, storage_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)
DIST = {"x": FloatDistribution(0.0, 1.0)}


def _study(studies: Path, name: str = "s", target: int = 3) -> optuna.Study:
    """A study as the search service leaves it: a baseline, a searched trial, a trial failed by a
    killed coordinator and re-queued (``requeued``), and its retry that completed."""
    (studies / name).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{studies / name / 'study.db'}", direction="maximize"
    )
    study.set_user_attr(A.TARGET_TRIALS, target)
    study.set_user_attr(A.CREATED, "2026-01-01T00:00:00+00:00")

    def add(state: TrialState, value: float | None = None, **ua: object) -> None:
        study.add_trial(
            optuna.create_trial(
                state=state,
                value=value,
                params={"x": 0.5},
                distributions=DIST,
                user_attrs={A.DESCRIPTION: "a → b", **ua},
                intermediate_values={4: 0.01, 8: value or 0.02},
            )
        )

    add(TrialState.COMPLETE, 0.1, **{A.BASELINE: "student_only", A.PROXY_COST: 1.5})
    add(TrialState.COMPLETE, 0.3, **{A.STAGE_BOUNDARIES: [0, 4, 8], A.PROXY_COST: 2.0})
    add(TrialState.FAIL, None, **{A.REQUEUED: True, A.FAILURE_REASON: "interrupted"})
    add(TrialState.COMPLETE, 0.2, **{A.RETRY_OF: 2})
    return study


def _cli_row(studies: Path, capsys: pytest.CaptureFixture[str], name: str) -> list[str]:
    assert cli(["studies", "--studies-dir", str(studies)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name + " "))
    return line.split()


def _dashboard_row(studies: Path, name: str) -> dict[str, object]:
    src = next(s for s in dd.discover(studies).sources if s.name == name)
    return dd.summary_row(dd.load_study(src), dd.load_full_run(src))


def test_records_equal_optunas_own_trials(tmp_path: Path) -> None:
    study = _study(tmp_path / "studies")
    study.ask()  # a RUNNING trial
    spec = storage_spec(tmp_path / "studies", "s", None)
    reader = R.StudyReader(open_readonly(spec), spec.display)
    try:
        records = reader.trials("s")
    finally:
        reader.close()
    trials = optuna.load_study(study_name="s", storage=spec.url).get_trials()
    assert [r.number for r in records] == [t.number for t in trials]
    for r, t in zip(records, trials, strict=True):
        assert r.state == t.state.name and r.value == t.value
        assert dict(r.params) == t.params and dict(r.distributions) == t.distributions
        assert dict(r.intermediate_values) == t.intermediate_values
        assert dict(r.user_attrs) == t.user_attrs
        assert r.start == (t.datetime_start.astimezone() if t.datetime_start else None)
        assert r.baseline == t.user_attrs.get(A.BASELINE)
        assert r.requeued == bool(t.user_attrs.get(A.REQUEUED))
        assert r.retry_of == t.user_attrs.get(A.RETRY_OF)
        assert r.proxy_cost == t.user_attrs.get(A.PROXY_COST)
        assert list(r.stage_boundaries) == t.user_attrs.get(A.STAGE_BOUNDARIES, [])
    counts = R.count_trials(records)
    assert counts == R.TrialCounts(complete=3, pruned=0, failed=0, running=1, waiting=0, requeued=1)


def test_cli_and_dashboard_show_the_same_state_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    studies = tmp_path / "studies"
    study = _study(studies, target=3)
    # the re-queued trial is counted by its retry: 3 finished of 3, "searched" everywhere
    # (before the reader: `studies` said 3 finished + "done", the dashboard 4 + "searched")
    cols = _cli_row(studies, capsys, "s")
    dash = _dashboard_row(studies, "s")
    assert cols[1] == dash["state"] == "searched"
    assert cols[3] == f"{dash['finished']}/{dash['target']}" == "3/3"
    assert int(cols[5]) == dash["failed"] == 0 and int(cols[4]) == dash["pruned"] == 0
    [row] = list_studies(studies)
    assert (row.state, row.finished, row.failed, row.running) == ("searched", 3, 0, 0)
    assert status_json("s", studies)["trials"] == {
        "complete": 3,
        "pruned": 0,
        "fail": 0,
        "running": 0,
        "waiting": 0,
        "requeued": 1,
    }
    # a trial failing by itself counts; one running: "searching" everywhere
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={A.FAILURE_REASON: "nan loss"}))
    study.ask()
    cols = _cli_row(studies, capsys, "s")
    dash = _dashboard_row(studies, "s")
    assert cols[1] == dash["state"] == "searching"
    assert (cols[3], int(cols[5]), int(cols[6])) == ("4/3", dash["failed"], dash["running"]) == ("4/3", 1, 1)
    assert status_json("s", studies)["state"] == "searching"


def test_selection_study_is_no_study_of_its_own_and_its_decision_is_on_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    studies = tmp_path / "studies"
    _study(studies)
    race = optuna.create_study(
        study_name=A.selection_study_name("s"), storage=f"sqlite:///{studies / 's' / 'study.db'}"
    )
    race.set_user_attr(A.SELECTION_OF, "s")
    race.ask()  # a race run in progress
    assert [r.name for r in list_studies(studies)] == ["s"]
    assert [s.name for s in dd.discover(studies).sources] == ["s"]
    assert _cli_row(studies, capsys, "s")[1] == _dashboard_row(studies, "s")["state"] == "selecting"
    decision = {"selection": {"winner": "trial #1", "winner_is_baseline": False}}
    race.set_user_attr(A.DECISION, decision)
    race.tell(0, 0.25)
    spec = storage_spec(studies, "s", None)
    reader = R.StudyReader(open_readonly(spec), spec.display)
    try:
        record = reader.record("s", spec.study_dir)
    finally:
        reader.close()
    assert record.decision == decision and record.state == "selected"
    assert _dashboard_row(studies, "s")["state"] == "selected"
    # a finished full run decides the state, in both tools
    (studies / "s" / "full").mkdir()
    (studies / "s" / "full" / "metrics.json").write_text(json.dumps({"ap": 0.4, "ap50": 0.6}))
    cols = _cli_row(studies, capsys, "s")
    assert cols[1] == _dashboard_row(studies, "s")["state"] == "done" and cols[7] == "0.400"


def test_a_kept_reader_sees_new_trials_and_a_recreated_study(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    study = _study(studies)
    src = next(iter(dd.discover(studies).sources))
    reader = dd.open_reader(src.url)
    assert len(dd.load_study(src, reader).trials) == 4
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, user_attrs={}))
    assert dd.load_study(src, reader).tally.pruned == 1
    # the study is deleted and created again under the same name: nothing cached survives
    optuna.delete_study(study_name="s", storage=f"sqlite:///{studies / 's' / 'study.db'}")
    again = optuna.create_study(study_name="s", storage=f"sqlite:///{studies / 's' / 'study.db'}")
    again.set_user_attr(A.CREATED, "2026-02-02T00:00:00+00:00")
    again.add_trial(optuna.create_trial(value=0.9))
    data = dd.load_study(src, reader)
    assert list(data.trials["value"]) == [0.9] and data.tally.complete == 1


def test_state_words_are_one_vocabulary() -> None:
    c = R.TrialCounts
    assert R.study_state(c(), 5) == "empty"
    assert R.study_state(c(complete=1, running=1), 5) == "searching"
    assert R.study_state(c(complete=1), 5) == "stopped"
    assert R.study_state(c(complete=1), None) == "idle"
    assert R.study_state(c(complete=4, failed=1, requeued=3), 5) == "searched"
    assert R.study_state(c(complete=4, requeued=1), 5) == "stopped"  # a re-queued trial is not counted
    assert R.study_state(c(complete=5), 5, race_running=True) == "selecting"
    assert R.study_state(c(complete=5), 5, decided=True) == "selected"
    for full, word in (
        ("running", "full run"),
        ("done", "done"),
        ("failed", "full run failed"),
        ("interrupted", "full run interrupted"),
    ):
        assert R.study_state(c(complete=5), 5, full=full) == word
    words = {R.study_state(c(complete=1), 5, full=f) for f in ("running", "done", "failed", "interrupted")}
    assert words <= set(R.STUDY_STATES)


def test_benchmarks_read_trials_through_the_reader(tmp_path: Path) -> None:
    from benchmarks.common import read_trials, trial_rows

    study = _study(tmp_path / "studies")
    study.add_trial(
        optuna.create_trial(
            state=TrialState.PRUNED,
            user_attrs={A.PRUNED_AT: 4, A.CURRICULUM: {"total_iterations": 8}, A.WALL_TIME_S: 3.0},
        )
    )
    rows = trial_rows(read_trials(tmp_path / "studies", "s"))
    # the re-queued FAIL is left out (its retry #3 counts); the pruned trial trained 4 iterations
    assert sorted(r["number"] for r in rows) == [0, 1, 3, 4]
    pruned = next(r for r in rows if r["number"] == 4)
    assert (pruned["state"], pruned["iterations"], pruned["wall_s"]) == ("pruned", 4, 3.0)
    assert next(r for r in rows if r["number"] == 0)["baseline"] == "student_only"


def test_dashboard_benchmark_is_a_suite_part_with_its_report_section() -> None:
    from benchmarks import PARTS
    from benchmarks import dashboard_render as dr
    from benchmarks.__main__ import COMMANDS, TITLES

    assert "dashboard_render" in PARTS and "dashboard_render" in TITLES and "dashboard_render" in COMMANDS
    page = {"cold_median_s": 0.5, "warm_median_s": 0.2, "cold_s": [0.5, 0.6, 0.4]}
    result = {
        "trials": 1000,
        "pages": {"Overview": page},
        "worst_cold_median_s": 0.5,
        "first_open_median_s": 2.6,
        "first_open_s": [2.6, 2.7, 2.5],
        "target_s": 3.0,
        "load_average_1min": 6.7,
        "cpu_count": 2,
    }
    [line] = dr.headline(result)
    assert "0.50 s on a refresh" in line and "2.60 s for the study's first read" in line
    text = dr.markdown(result)
    assert "| Overview | 0.50 | 0.20 | 0.50, 0.60, 0.40 |" in text
    assert "shared with other work" in text
    assert "shared with other work" not in dr.markdown({**result, "load_average_1min": 0.5})
