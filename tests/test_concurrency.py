"""Concurrency: the dashboard (and the read-only CLI path) reading a SQLite study while several
processes write it never produces "database is locked" on either side.

Writers are real processes (a coordinator with 2 trial workers, or 2 processes reporting as fast as
they can); the reader runs in the test process, like the dashboard runs in its own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from curriculum_search.search.storage import open_readonly, open_storage, storage_spec
from tests.helpers import write_space

REPO = Path(__file__).resolve().parent.parent


def _readers(studies: Path, name: str) -> dict[str, Callable[[], list[TrialState]]]:
    """Each reader returns the states of the study's trials (raises when it cannot read)."""
    spec = storage_spec(studies, name, None)

    def cli_path() -> list[TrialState]:
        storage = open_readonly(spec)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            return [t.state for t in study.get_trials(deepcopy=False)]
        finally:
            storage.engine.dispose()  # type: ignore[attr-defined]

    out = {"storage.open_readonly": cli_path}
    try:
        from curriculum_search.dashboard import data
    except ImportError:
        return out

    def dashboard() -> list[TrialState]:
        sources = [s for s in data.discover(studies).sources if s.name == name]
        if not sources:
            raise KeyError("study not created yet")
        loaded = data.load_study(sources[0])
        return [TrialState[s] for s in loaded.trials["state"]] if len(loaded.trials) else []

    out["dashboard.data"] = dashboard
    return out


def _chain(exc: BaseException) -> str:
    """An exception and its causes (Optuna and the dashboard wrap SQLite's own message)."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 5:
        parts.append(f"{type(seen).__name__}: {str(seen).strip()[:200]}")
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _check_errors(errors: list[str], reads: int) -> None:
    """No reader ever saw a lock; other read errors (none expected) stay rare transients that the
    dashboard's next refresh absorbs."""
    locked = [e for e in errors if "locked" in e.lower()]
    assert not locked, "\n".join(locked[:5])
    assert len(errors) <= max(1, reads // 50), "\n".join(errors[:5])


def _read_while(
    alive: Callable[[], bool], studies: Path, name: str, pause: float
) -> tuple[int, int, list[str]]:
    """Read in a loop while ``alive()``; returns (successful reads, most RUNNING trials seen, errors).

    Until the first successful read the study is still being created (empty file, tables being
    made, no study row yet): those errors are expected and only a "locked" one counts. After it,
    every error counts.
    """
    readers = _readers(studies, name)
    db = studies / name / "study.db"
    reads, most_running, errors = 0, 0, []
    while alive():
        time.sleep(pause)
        if not db.exists():
            continue
        for label, read in readers.items():
            try:
                states = read()
            except Exception as exc:
                text = f"{label}: {_chain(exc)}"
                if reads or "locked" in text.lower():
                    errors.append(text)
                continue
            reads += 1
            most_running = max(most_running, sum(s == TrialState.RUNNING for s in states))
    return reads, most_running, errors


WRITER = textwrap.dedent(
    """
    import sys, optuna
    from pathlib import Path
    from curriculum_search.search.storage import open_storage, storage_spec
    studies, name, trial_id, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(storage_spec(studies, name, None)))
    trial = optuna.trial.Trial(study, trial_id)
    for step in range(steps):
        trial.report(step / steps, step)
        if step % 10 == 0:
            trial.set_user_attr("progress", step)
    print("done", flush=True)
    """
)


def test_readers_never_see_locked_while_two_processes_report(tmp_path: Path) -> None:
    """Two processes write intermediate values as fast as SQLite lets them (what trial workers do)
    while the dashboard and the CLI read path read in a loop."""
    studies = tmp_path / "studies"
    spec = storage_spec(studies, "busy", None)
    storage = open_storage(spec)
    study = optuna.create_study(study_name="busy", storage=storage, direction="maximize")
    trials = [study.ask() for _ in range(2)]
    # the reading process must hold no read-write connection of its own (like the dashboard): in
    # one process, SQLite 3.40 mixing it with mode=ro readers gives "database disk image is malformed"
    storage.engine.dispose()  # type: ignore[attr-defined]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(studies), "busy", str(t._trial_id), "300"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in trials
    ]
    reads, _, errors = _read_while(lambda: any(p.poll() is None for p in procs), studies, "busy", pause=0.005)
    outputs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0 and "done" in out, err
        assert "locked" not in err.lower(), err
    _check_errors(errors, reads)
    assert reads >= 10, reads  # the reads overlapped the writes
    final = optuna.load_study(study_name="busy", storage=open_storage(spec))
    assert [len(t.intermediate_values) for t in final.trials] == [300, 300]


@pytest.mark.slow
def test_dashboard_reads_while_a_two_worker_search_writes(tmp_path: Path) -> None:
    space_file = write_space(tmp_path, trials=6)
    studies = tmp_path / "studies"
    log = tmp_path / "search.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "curriculum_search",
                "search",
                "--space",
                str(space_file),
                "--studies-dir",
                str(studies),
                "--workers",
                "2",
                "--threads",
                "1",
                "-q",
            ],
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        try:
            reads, running, errors = _read_while(lambda: proc.poll() is None, studies, "tiny", pause=0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    _check_errors(errors, reads)
    assert reads >= 20 and running == 2, (reads, running)  # both workers were running while we read
    logs = [text, *(p.read_text(errors="replace") for p in studies.glob("tiny/trials/*/trial.log"))]
    assert not [t for t in logs if "database is locked" in t]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{studies / 'tiny' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
