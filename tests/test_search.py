"""The search service end to end on a tiny space: SQLite study, resume, kill -9 recovery, two
workers, export + train reproduces, Optuna's own API reads the study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from curriculum_search.cli import main as cli
from curriculum_search.errors import StudyError
from curriculum_search.search.service import export_recipe, list_studies, run_search
from curriculum_search.search.space import load_space
from curriculum_search.search.storage import load_study_readonly, storage_spec
from tests.helpers import TINY, kill_when, opts, write_space


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny study shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("search")
    space_file = write_space(tmp)
    assert (
        cli(
            [
                "search",
                "--space",
                str(space_file),
                "--studies-dir",
                str(tmp / "studies"),
                "--threads",
                "1",
                "-q",
            ]
        )
        == 0
    )
    return tmp


def _load(tmp: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'studies' / name / 'study.db'}")


def test_study_has_baselines_decoded_curricula_and_is_readable_by_optuna(study_dir: Path):
    study = _load(study_dir)
    trials = study.get_trials()
    assert len(trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    baselines = {t.user_attrs.get("baseline") for t in trials} - {None}
    assert {"student_only", "direct_strongest", "weak_to_strong"} <= baselines
    for t in trials:
        cur = t.user_attrs["curriculum"]
        assert sum(s["iterations"] for s in cur["stages"]) in (0, 8)
        assert t.user_attrs["curriculum_key"] and t.user_attrs["description"]
    searched = [t for t in trials if "baseline" not in t.user_attrs]
    assert searched and all(t.intermediate_values for t in searched if "reused_from" not in t.user_attrs)
    assert study.user_attrs["pool_hash"] and study.user_attrs["teacher_info"]
    assert (study_dir / "studies" / "tiny" / "best_recipe.yaml").is_file()


def test_rerun_resumes_without_duplicates_and_continues_to_more_trials(study_dir: Path):
    space_file = study_dir / "tiny.yaml"
    before = {t.number: (t.state, t.value, t.params) for t in _load(study_dir).get_trials()}
    run_search(load_space(space_file), opts(study_dir / "studies", space_file))
    after = _load(study_dir).get_trials()
    assert {t.number: (t.state, t.value, t.params) for t in after} == before  # nothing re-run, nothing lost
    run_search(load_space(space_file), opts(study_dir / "studies", space_file, trials=8))
    after = _load(study_dir).get_trials()
    assert len(after) == 8 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after)
    assert {t.number: (t.state, t.value, t.params) for t in after if t.number in before} == before


def test_export_then_train_reproduces_the_trial(study_dir: Path):
    study = _load(study_dir)
    trial = max(
        (
            t
            for t in study.get_trials()
            if t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs
        ),
        key=lambda t: t.value,
    )
    out = study_dir / "exported.yaml"
    assert (
        cli(
            [
                "export",
                "--study",
                "tiny",
                "--trial",
                str(trial.number),
                "--proxy",
                "-o",
                str(out),
                "--studies-dir",
                str(study_dir / "studies"),
            ]
        )
        == 0
    )
    recipe = yaml.safe_load(out.read_text())
    assert recipe["provenance"]["trial"] == trial.number and recipe["provenance"]["proxy_ap"] == trial.value
    assert recipe["provenance"]["versions"]["torch"]
    assert (
        cli(
            [
                "train",
                "--recipe",
                str(out),
                "--out",
                str(study_dir / "retrain"),
                "--studies-dir",
                str(study_dir / "studies"),
                "--threads",
                "1",
                "-q",
            ]
        )
        == 0
    )
    metrics = json.loads((study_dir / "retrain" / "metrics.json").read_text())
    assert metrics["ap"] == pytest.approx(trial.value, abs=1e-9)


def test_listing_and_status(study_dir: Path, capsys: pytest.CaptureFixture[str]):
    rows = list_studies(study_dir / "studies")
    assert [r.name for r in rows] == ["tiny"] and rows[0].best_ap is not None
    assert cli(["status", "tiny", "--studies-dir", str(study_dir / "studies")]) == 0
    out = capsys.readouterr().out
    assert "baselines:" in out and "student_only" in out


def test_changed_teacher_pool_is_refused(study_dir: Path, tmp_path: Path):
    teachers = json.loads(json.dumps(TINY["teachers"]))
    teachers["a"]["zoo"]["iterations"] = 7
    space_file = write_space(tmp_path, teachers=teachers)
    with pytest.raises(StudyError, match="teacher pool of study 'tiny' changed"):
        run_search(load_space(space_file), opts(study_dir / "studies", space_file))


def test_unknown_trial_export_is_a_clear_error(study_dir: Path):
    with pytest.raises(StudyError, match="has no trial 999"):
        export_recipe("tiny", None, study_dir / "studies", 999)


def test_two_workers_on_sqlite_finish_distinct_trials(tmp_path: Path):
    """Two trial processes at once: each trial is claimed and told exactly once (its result line
    appears once), and no curriculum is trained twice (a twin waits and reuses the result).
    (Replaces an assertion that trial numbers are distinct, which Optuna guarantees anyway.)"""
    space_file = write_space(tmp_path, trials=6)
    lines: list[str] = []
    o = opts(tmp_path / "studies", space_file, workers=2)
    o.echo = lines.append
    run_search(load_space(space_file), o)
    trials = _load(tmp_path).get_trials()
    assert len(trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    told = [int(line[1:].split()[0]) for line in lines if line.startswith("#")]
    assert sorted(told) == [t.number for t in trials], lines
    trained = [t.user_attrs["curriculum_key"] for t in trials if "reused_from" not in t.user_attrs]
    assert len(trained) == len(set(trained)), trained


def test_kill_9_mid_trial_then_rerun_loses_nothing(tmp_path: Path):
    space_file = write_space(
        tmp_path, trials=5, proxy={"iterations": 16, "train_subset": 16, "val_subset": 8, "eval_every": 8}
    )
    studies = tmp_path / "studies"
    cmd = [
        sys.executable,
        "-m",
        "curriculum_search",
        "search",
        "--space",
        str(space_file),
        "--studies-dir",
        str(studies),
        "--threads",
        "1",
        "--workers",
        "1",  # one trial at a time: the kill leaves exactly one RUNNING
        "-q",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def trial_past_a_checkpoint():  # a RUNNING trial with a checkpoint, once some trial is COMPLETE
        # read-only, like `status`: a plain optuna.load_study would race the coordinator's schema creation
        trials = load_study_readonly(storage_spec(studies, "tiny", None), "tiny").get_trials()
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

    victim = kill_when(proc, trial_past_a_checkpoint)
    time.sleep(0.5)
    left_running = [t.number for t in _load(tmp_path).get_trials() if t.state == TrialState.RUNNING]
    assert left_running == [victim.number]
    before = {
        t.number: (t.state, t.value, t.params)
        for t in _load(tmp_path).get_trials()
        if t.state == TrialState.COMPLETE
    }
    run_search(load_space(space_file), opts(studies, space_file))
    study = _load(tmp_path)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert {t.number: (t.state, t.value, t.params) for t in trials if t.number in before} == before
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and killed.user_attrs["requeued"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry[0].user_attrs["curriculum_key"] == victim.user_attrs["curriculum_key"]
    finished = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        and not t.user_attrs.get("requeued")
    ]
    assert len(finished) == 5
    log = (studies / "tiny" / retry[0].user_attrs["run_dir"] / "trial.log").read_text()
    assert "resuming" in log


def _trial_worker_pids(job_file: Path) -> list[int]:
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmd = (proc_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(job_file).encode() in cmd and b"curriculum_search.search.trial_worker" in cmd:
                pids.append(int(proc_dir.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to find the trial process")
def test_a_trial_process_killed_by_sigkill_is_retried_once_from_its_checkpoint(tmp_path: Path):
    """The OOM killer (or an operator) SIGKILLs one trial process; the coordinator survives."""
    space_file = write_space(
        tmp_path, trials=4, proxy={"iterations": 16, "train_subset": 16, "val_subset": 8, "eval_every": 8}
    )
    studies = tmp_path / "studies"
    killed: dict[str, int] = {}

    def kill_one_trial_after_its_checkpoint() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            time.sleep(0.2)
            for ckpt in studies.glob("tiny/trials/*/checkpoints/last.pt"):
                for job in ckpt.parent.parent.glob("job-*.json"):
                    number = int(job.stem.split("-")[1])
                    for pid in _trial_worker_pids(job):
                        os.kill(pid, signal.SIGKILL)
                        killed["number"] = number
                    if killed:
                        return

    import threading

    killer = threading.Thread(target=kill_one_trial_after_its_checkpoint, daemon=True)
    killer.start()
    summary = run_search(load_space(space_file), opts(studies, space_file))
    killer.join(timeout=1)
    assert killed, "no trial reached a checkpoint in time"
    trials = _load(tmp_path).get_trials()
    victim = next(t for t in trials if t.number == killed["number"])
    assert victim.state == TrialState.FAIL and victim.user_attrs["requeued"]
    assert "killed (out of memory?)" in victim.user_attrs["failure_reason"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].user_attrs["retry_reason"] == "killed"
    assert retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert summary.finished == 4  # the killed attempt does not count; its retry does
    log = (studies / "tiny" / retry[0].user_attrs["run_dir"] / "trial.log").read_text()
    assert "resuming" in log


def test_zoo_list_shows_teachers_and_the_student_alone_reference(
    study_dir: Path, capsys: pytest.CaptureFixture[str]
):
    assert (
        cli(
            [
                "zoo",
                "list",
                "--space",
                str(study_dir / "tiny.yaml"),
                "--studies-dir",
                str(study_dir / "studies"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "(student alone)" in out and "reference" in out
    rows = [ln for ln in out.splitlines() if ln.startswith(("a ", "b "))]
    assert len(rows) == 2 and all("ready" in r and "M" in r for r in rows)  # params column filled


def test_workers_starting_together_on_a_fresh_database_all_open_it(tmp_path: Path):
    """Optuna's schema creation races when several processes open a new database at once (one of
    them fails on CREATE TABLE or the alembic_version row); open_storage retries."""
    code = (
        "import sys; from pathlib import Path; "
        "from curriculum_search.search.storage import open_storage, storage_spec; "
        "open_storage(storage_spec(Path(sys.argv[1]), 'race', None)); print('opened')"
    )
    for round_ in range(3):
        root = tmp_path / f"r{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err.decode()[-300:] for _, err in outs]
        assert all(out.strip() == b"opened" for out, _ in outs)
