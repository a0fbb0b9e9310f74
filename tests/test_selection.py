"""The selection stage end to end on space/tiny.yaml: race runs recorded in storage, kill -9 during
the race then a rerun that repeats no finished run, the shipped student with its held-out report,
`status --json`, and the held-out split itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from curriculum_search.cli import main as cli
from curriculum_search.search.fullrun import run_full
from curriculum_search.search.selection import selection_study_name
from curriculum_search.search.space import load_space
from curriculum_search.search.storage import load_study_readonly, storage_spec
from tests.helpers import kill_when, opts, write_space

pytestmark = pytest.mark.slow


def _race(studies: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return load_study_readonly(storage_spec(studies, name, None), selection_study_name(name)).get_trials()


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study whose search has finished (no selection yet)."""
    tmp = tmp_path_factory.mktemp("selection")
    space_file = write_space(tmp)
    args = [
        "search",
        "--space",
        str(space_file),
        "--studies-dir",
        str(tmp / "studies"),
        "--threads",
        "1",
        "-q",
    ]
    assert cli(args) == 0
    return tmp


def test_kill_9_during_the_race_then_rerun_repeats_no_finished_run(searched: Path):
    space_file, studies = searched / "tiny.yaml", searched / "studies"
    cmd = [sys.executable, "-m", "curriculum_search", "select", "--space", str(space_file)]
    cmd += ["--studies-dir", str(studies), "--threads", "1", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def run_past_a_checkpoint():  # a RUNNING race run with a checkpoint, once one run is COMPLETE
        trials = _race(studies)
        if not any(t.state == TrialState.COMPLETE for t in trials):
            return None
        running = [t for t in trials if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs]
        return next(
            (
                t
                for t in running
                if (studies / "tiny" / t.user_attrs["run_dir"] / "checkpoints" / "last.pt").exists()
            ),
            None,
        )

    victim = kill_when(proc, run_past_a_checkpoint)
    key = lambda t: (t.user_attrs["arm_key"], t.user_attrs["iterations"], t.user_attrs["seed"])  # noqa: E731
    done_before = {key(t): (t.number, t.value) for t in _race(studies) if t.state == TrialState.COMPLETE}
    assert done_before

    result = run_full(load_space(space_file), opts(studies, space_file))

    trials = _race(studies)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = [key(t) for t in complete]
    assert len(keys) == len(set(keys)), "a finished race run was repeated"
    assert {key(t): (t.number, t.value) for t in complete if key(t) in done_before} == done_before
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and killed.user_attrs["interrupted"]
    redo = next(t for t in complete if key(t) == key(victim))
    assert "resuming" in (studies / "tiny" / redo.user_attrs["run_dir"] / "trial.log").read_text()
    # every arm ran on the same seeds at the same budget (common random numbers)
    seeds_by_arm: dict[str, set[int]] = {}
    for t in complete:
        seeds_by_arm.setdefault(t.user_attrs["arm_key"], set()).add(t.user_attrs["seed"])
    assert (
        len({frozenset(s) for s in seeds_by_arm.values()}) == 1
        and len(next(iter(seeds_by_arm.values()))) == 2
    )
    assert all("report_ap" in t.user_attrs for t in complete)

    # what ships: the winner's first full-length run, reported on the held-out split
    assert result.student_path == studies / "tiny" / "full" / "student.pt" and result.student_path.is_file()
    m = json.loads((studies / "tiny" / "full" / "metrics.json").read_text())
    assert m["split"] == "val" and m["selection_split"] == "holdout"
    sel = m["selection"]
    assert sel["best_baseline"] in ("student_only", "direct_strongest", "weak_to_strong", "heuristic")
    assert sel["seeds"] == 2 and sel["budget_iterations"] == 8
    winner_runs = [t for t in complete if t.user_attrs["arm_key"] == sel["winner_key"]]
    first = min(winner_runs, key=lambda t: t.user_attrs["seed"])
    assert m["ap"] == pytest.approx(first.user_attrs["report_ap"])
    assert (studies / "tiny" / "best_recipe.yaml").is_file()


def test_status_json_and_plain_words(searched: Path, capsys: pytest.CaptureFixture[str]):
    studies = searched / "studies"
    if not (studies / "tiny" / "full" / "metrics.json").is_file():  # run alone: select first
        run_full(load_space(searched / "tiny.yaml"), opts(studies, searched / "tiny.yaml"))
    assert cli(["status", "tiny", "--json", "--studies-dir", str(studies)]) == 0
    out = json.loads(capsys.readouterr().out)
    sel, fid, fin = out["selection"], out["fidelity"], out["final"]
    assert isinstance(sel["winner_is_baseline"], bool) and isinstance(sel["best_baseline"], str)
    assert sel["winner_trial"] is None or isinstance(sel["winner_trial"], int)
    assert isinstance(sel["delta_ap_mean"], float) and len(sel["delta_ap_interval"]) == 2
    assert sel["seeds"] == 2 and sel["budget_iterations"] == 8
    assert set(fid) >= {"kendall_tau", "seed_std"}
    assert fin["split"] == "val" and isinstance(fin["ap"], float)
    assert isinstance(fin["student_alone_ap"], float) and len(fin["delta_vs_student_alone_interval"]) == 2
    assert cli(["status", "tiny", "--studies-dir", str(studies)]) == 0
    text = capsys.readouterr().out
    assert "selection:" in text and "fidelity:" in text and "held-out val split" in text
    # no claim without support: "beats" only when the interval clears zero
    lo = sel["delta_ap_interval"][0]
    assert ("beats" in text.split("selection:")[1].splitlines()[0]) == (
        not sel["winner_is_baseline"] and lo > 0
    )
    # the race is listed with the study, not as a study of its own
    assert cli(["studies", "--studies-dir", str(studies)]) == 0
    assert ":selection" not in capsys.readouterr().out


def test_race_runs_are_visible_in_optunas_own_api(searched: Path):
    studies = searched / "studies"
    if not (studies / "tiny" / "full" / "metrics.json").is_file():
        run_full(load_space(searched / "tiny.yaml"), opts(studies, searched / "tiny.yaml"))
    storage = f"sqlite:///{studies / 'tiny' / 'study.db'}"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"tiny", "tiny:selection"}
    race = optuna.load_study(study_name="tiny:selection", storage=storage)
    assert race.user_attrs["selection_of"] == "tiny" and race.user_attrs["decision"]["selection"]
    assert all(t.user_attrs.get("arm") for t in race.get_trials())


def test_select_override_from_the_command_line_is_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    space_file = write_space(tmp_path)
    code = cli(
        ["select", "--space", str(space_file), "--studies-dir", str(tmp_path / "s"), "--race-seeds", "1"]
    )
    assert code == 2
    assert "selection.seeds" in capsys.readouterr().err
