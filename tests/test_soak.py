"""Fault injection: a search killed at any moment loses at most the trial in flight.

* The short soak (``benchmarks/soak.py --short``): the real ``run`` command with two trial
  processes at once SIGKILLed 6 times (process group at random moments and during checkpoint
  writes, a trial process alone, the coordinator alone, the full run), resumed each time, then
  every invariant checked (retried baselines keep their curriculum, no orphan trial process).
* The short PostgreSQL soak (``benchmarks/soak.py --postgres --short``): two hosts (``search`` and
  ``worker``) on one study in a throwaway server, one host's process group SIGKILLed while it
  trains; its trial is failed by the survivor's heartbeat check and retried there (skipped where
  the server binaries are missing).
* Deterministic crash windows: the coordinator's multi-step bookkeeping (re-queuing interrupted
  trials, enqueuing baselines) interrupted between two of its database writes, then run again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

import curriculum_search.curriculum.trainer as trainer
from benchmarks import pgserver
from curriculum_search.curriculum.recipe import load_recipe
from curriculum_search.curriculum.trainer import run_recipe
from curriculum_search.models import load_checkpoint
from curriculum_search.search.service import enqueue_baselines, recover_interrupted
from curriculum_search.search.space import load_space
from curriculum_search.search.storage import open_storage, storage_spec
from tests.helpers import opts, recipe_dict, run_options, write_space, write_yaml

REPO = Path(__file__).resolve().parent.parent


class Killed(BaseException):
    """Stands for SIGKILL: the process stops between two database writes (each one committed)."""


def _die_on_call(monkeypatch: pytest.MonkeyPatch, method: str, call: int = 1) -> None:
    """Make ``optuna.Study.<method>`` raise :class:`Killed` on its ``call``-th call."""
    real = getattr(optuna.Study, method)
    count = {"n": 0}

    def dying(self: optuna.Study, *args: object, **kwargs: object) -> object:
        count["n"] += 1
        if count["n"] == call:
            raise Killed
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, method, dying)


def _study(studies: Path, name: str = "tiny") -> optuna.Study:
    storage = open_storage(storage_spec(studies, name, None))
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)


@pytest.mark.parametrize("dies_in", ["set_trial_user_attr", "tell", "enqueue_trial"])
def test_requeue_of_an_interrupted_trial_survives_a_kill_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_in: str
) -> None:
    """The coordinator dies while re-queuing a trial left RUNNING; the next start must still end
    with the trial FAILED + re-queued and exactly one retry of it (none lost, none doubled)."""
    study = _study(tmp_path)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("curriculum_key", "k1")
    trial.set_user_attr("baseline", "direct_strongest")
    if dies_in == "set_trial_user_attr":
        real = study._storage.set_trial_user_attr
        calls = {"n": 0}

        def dying(*args: object, **kwargs: object) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise Killed
            real(*args, **kwargs)

        monkeypatch.setattr(study._storage, "set_trial_user_attr", dying)
    else:
        _die_on_call(monkeypatch, dies_in)
    with pytest.raises(Killed):
        recover_interrupted(study, lambda s: None)
    monkeypatch.undo()

    recover_interrupted(_study(tmp_path), lambda s: None)  # the next start
    trials = _study(tmp_path).get_trials()
    original = trials[trial.number]
    assert original.state == TrialState.FAIL and original.user_attrs["requeued"] is True
    retries = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retries) == 1, [(t.number, t.state, t.user_attrs) for t in trials]
    assert retries[0].state == TrialState.WAITING
    assert retries[0].system_attrs["fixed_params"] == original.params
    assert retries[0].user_attrs["baseline"] == "direct_strongest"


def test_baselines_are_enqueued_once_even_if_killed_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after enqueuing some of the baselines: the next start enqueues the missing ones only."""
    space_file = write_space(tmp_path)
    space = load_space(space_file)
    studies = tmp_path / "studies"
    options = opts(studies, space_file)
    _die_on_call(monkeypatch, "enqueue_trial", call=2)
    with pytest.raises(Killed):
        enqueue_baselines(space, _study(studies), options)
    monkeypatch.undo()
    enqueue_baselines(space, _study(studies), options)
    names = [str(t.user_attrs.get("baseline")) for t in _study(studies).get_trials()]
    assert sorted(names) == sorted(set(names)), names  # each baseline once
    assert {"student_only", "direct_strongest", "weak_to_strong"} <= set(names)
    enqueue_baselines(space, _study(studies), options)  # a later start adds nothing
    assert len(_study(studies).get_trials()) == len(names)


@pytest.mark.parametrize("killed_after_save", [2, 3, 5])
def test_killed_right_after_a_checkpoint_resumes_identically(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch, killed_after_save: int
) -> None:
    """Killed just after training checkpoint k (mid-stage 1, the end of stage 1, mid-stage 2), the
    resumed run ends with exactly the weights and AP of an uninterrupted run. Stage 2's MGD draws
    random generator weights and masks, so the random stream must continue where it stopped, also
    when the run resumes at a stage start."""
    data = recipe_dict(teacher_ckpt)
    data["teachers"]["b"] = {"checkpoint": str(teacher_ckpt)}
    data["stages"] = [
        {"teachers": ["a"], "iterations": 3, "feature": {"loss": "mgd"}},
        {"teachers": ["b"], "iterations": 3, "feature": {"loss": "mgd"}, "response": {}},
    ]
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", data))
    reference = run_recipe(recipe, run_options(tmp_path, "reference"))
    real = trainer._save_state
    saves = {"n": 0}

    def save_then_die(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)
        saves["n"] += 1
        if saves["n"] == killed_after_save:
            raise Killed

    monkeypatch.setattr(trainer, "_save_state", save_then_die)
    with pytest.raises(Killed):
        run_recipe(recipe, run_options(tmp_path, "killed"))
    monkeypatch.undo()
    resumed = run_recipe(recipe, run_options(tmp_path, "killed"))
    assert resumed.resumed_from == killed_after_save
    a = load_checkpoint(reference.student_path)["state_dict"]
    b = load_checkpoint(resumed.student_path)["state_dict"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert resumed.metrics.ap == reference.metrics.ap


def _soak(workdir: Path, *args: str, timeout: float, logs: str) -> dict[str, Any]:
    """Run ``benchmarks/soak.py ARGS --seed 1``; its report, every invariant checked as passed
    (else the failed ones, its output and the end of the ``logs`` files in ``workdir``)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "soak.py"),
            *args,
            "--seed",
            "1",
            "--workdir",
            str(workdir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report_file = workdir / "soak_report.json"
    assert report_file.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_file.read_text())
    failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
    log = "".join(p.read_text(errors="replace")[-3000:] for p in sorted(workdir.glob(logs))) if failed else ""
    assert not failed and proc.returncode == 0, "\n".join(failed) + "\n" + proc.stdout[-2000:] + log
    return report


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    """6 SIGKILLs of the real ``run`` command (see ``benchmarks/soak.py``); every invariant holds."""
    report = _soak(tmp_path / "soak", "--short", timeout=900, logs="job.log")
    names = {c["name"] for c in report["checks"]}
    assert {
        "job_finished",
        "no_trial_running",
        "finished_trials_intact",
        "no_trial_counted_twice",
        "retries_keep_curriculum",
        "no_orphan_trials",
        "checkpoints_loadable",
        "full_run_same_recipe",
        "full_run_matches_uninterrupted",
        "kills_done",
    } <= names
    kills = report["kills"]
    assert len(kills) >= 6
    assert {k["mode"] for k in kills} == {"group", "write", "worker", "coordinator"}
    assert any(k["phase"] == "full" for k in kills)
    assert any(k["mode"] == "write" and k["detail"].startswith("during the write of") for k in kills)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_short_postgres_soak_loses_nothing(tmp_path: Path) -> None:
    """A host killed on a PostgreSQL study (see ``benchmarks/soak.py --postgres``): every invariant
    holds, among them that the killed host's trial was failed by the heartbeat check and finished
    by the other host with its label, curriculum and run folder."""
    if pgserver.server_binaries() is None:
        pytest.skip(pgserver.MISSING)
    pytest.importorskip("psycopg", reason="psycopg not installed (test extra)")
    report = _soak(tmp_path / "soak", "--postgres", "--short", timeout=360, logs="host-*.log")
    assert {
        "hosts_finished",
        "no_trial_running",
        "finished_trials_intact",
        "no_trial_counted_twice",
        "retries_keep_curriculum",
        "killed_trials_retried",
        "one_host_per_trial",
        "no_result_lost",
        "checkpoints_loadable",
        "kills_done",
    } <= {c["name"] for c in report["checks"]}
    assert [k["mode"] for k in report["kills"]] == ["host"]
    killed = report["killed_trials"]
    assert killed and all(k["checkpoint"] for k in killed)
