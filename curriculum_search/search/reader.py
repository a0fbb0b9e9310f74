"""One typed, read-only reader of studies: the CLI (``studies``/``status``), the dashboard and the
benchmarks all read studies through it.

* :class:`TrialRecord` — one trial, its Optuna fields and the named attributes of
  :mod:`~curriculum_search.search.attrs` as typed fields;
* :class:`TrialCounts` / :func:`count_trials` — THE count rule: a re-queued trial (attribute
  ``requeued``) is counted by its retry, never itself;
* :func:`study_state` — THE state words (:data:`STUDY_STATES`);
* :class:`StudyRecord` — one study as a row (state, counts, target, best proxy value, full-run AP,
  last update, the selection decision);
* :class:`StudyReader` — reads the studies of one storage with Optuna's storage API only
  (``optuna.load_study`` and ``Study.get_trials``; no SQL of its own).

A reader keeps the :class:`optuna.Study` objects it loaded: Optuna caches finished trials (they
cannot change), so a re-read of a database study fetches only new and unfinished trials, and a
journal storage replays only new log records. The dashboard keeps one reader per storage for that
reason; the CLI reads once. Race runs live in a sibling study ``<name>:selection``: the reader never
lists it as a study of its own, it exposes its decision on the record of ``<name>``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.storage import live_state

# -- the state words -------------------------------------------------------------------------------
EMPTY = "empty"
SEARCHING = "searching"
STOPPED = "stopped"
IDLE = "idle"
SEARCHED = "searched"
SELECTING = "selecting"
SELECTED = "selected"
FULL_RUN = "full run"
DONE = "done"
FULL_RUN_FAILED = "full run failed"
FULL_RUN_INTERRUPTED = "full run interrupted"
UNREADABLE = "unreadable"

#: Every state word, with what it means (the CLI and the dashboard show the same words).
STUDY_STATES: dict[str, str] = {
    EMPTY: "no trial yet",
    SEARCHING: "a search trial is running",
    STOPPED: "fewer finished trials than targeted and nothing running: re-run the command to resume",
    IDLE: "nothing running and no target known",
    SEARCHED: "the targeted number of trials has finished",
    SELECTING: "the selection race is running",
    SELECTED: "the race has decided; the full run has not started",
    FULL_RUN: "the full-length run is training",
    DONE: "the full-length run has finished",
    FULL_RUN_FAILED: "the full-length run failed",
    FULL_RUN_INTERRUPTED: "the full-length run was interrupted",
    UNREADABLE: "the study cannot be read",
}


def study_state(
    counts: TrialCounts,
    target: int | None,
    *,
    full: str | None = None,
    race_running: bool = False,
    decided: bool = False,
) -> str:
    """One word for where a study stands (one of :data:`STUDY_STATES`).

    Args:
        counts: the study's trials counted by :func:`count_trials`.
        target: targeted number of trials (``None``: unknown).
        full: state of the full run (:func:`full_run_state`), ``None`` before it.
        race_running: a race run of the selection study is running.
        decided: the selection study holds a decision.
    """
    if full == "running":
        return FULL_RUN
    if full == "done":
        return DONE
    if full == "failed":
        return FULL_RUN_FAILED
    if full == "interrupted":
        return FULL_RUN_INTERRUPTED
    if counts.total == 0:
        return EMPTY
    if counts.running:
        return SEARCHING
    if race_running:
        return SELECTING
    if decided:
        return SELECTED
    if target is not None and counts.finished >= target:
        return SEARCHED
    return STOPPED if target is not None else IDLE


# -- trials ----------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value)


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _utc(value: datetime | None) -> datetime | None:
    """Optuna's datetimes are naive *local* time (RDB) or aware (journal); return aware UTC."""
    return None if value is None else value.astimezone(UTC)


@dataclass(frozen=True)
class TrialRecord:
    """One trial, read-only.

    Attributes:
        number: Optuna trial number.
        state: ``COMPLETE`` / ``PRUNED`` / ``FAIL`` / ``RUNNING`` / ``WAITING``.
        value: final proxy AP (``None`` unless complete).
        params / distributions: Optuna parameters and their distributions.
        intermediate_values: iteration -> AP reported during the run.
        constraints: constraint name -> value (feasible when <= 0).
        start / complete: UTC times.
        user_attrs: every user attribute (the named ones below are typed copies).
        The other fields are the attributes of :mod:`~curriculum_search.search.attrs` (``None``,
        empty or False when absent or of the wrong type).
    """

    number: int
    state: str
    value: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    distributions: Mapping[str, Any] = field(default_factory=dict)
    intermediate_values: Mapping[int, float] = field(default_factory=dict)
    constraints: Mapping[str, float] = field(default_factory=dict)
    start: datetime | None = None
    complete: datetime | None = None
    user_attrs: Mapping[str, Any] = field(default_factory=dict)
    # search trials
    curriculum: Mapping[str, Any] = field(default_factory=dict)
    curriculum_key: str | None = None
    description: str | None = None
    baseline: str | None = None
    stage_boundaries: tuple[int, ...] = ()
    proxy_cost: float | None = None
    run_dir: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    seed_values: tuple[float, ...] = ()
    teacher_forwards: int | None = None
    wall_time_s: float | None = None
    pruned_at: int | None = None
    failure_reason: str | None = None
    reused_from: int | None = None
    requeued: bool = False
    retry_of: int | None = None
    retry_reason: str | None = None
    # race runs (selection study)
    arm: str | None = None
    role: str | None = None
    iterations: int | None = None
    seed: int | None = None
    report_ap: float | None = None
    interrupted: bool = False

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """The record of an Optuna trial."""
        ua = dict(trial.user_attrs)
        cur = ua.get(A.CURRICULUM)
        bounds = ua.get(A.STAGE_BOUNDARIES)
        metrics = ua.get(A.METRICS)
        seeds = ua.get(A.SEED_VALUES)
        try:
            constraints = {str(k): float(v) for k, v in (trial.constraints or {}).items()}
        except (TypeError, ValueError, AttributeError):
            constraints = {}
        return cls(
            number=int(trial.number),
            state=trial.state.name,
            value=float(trial.value) if trial.value is not None else None,
            params=dict(trial.params),
            distributions=dict(trial.distributions),
            intermediate_values=dict(trial.intermediate_values),
            constraints=constraints,
            start=_utc(trial.datetime_start),
            complete=_utc(trial.datetime_complete),
            user_attrs=ua,
            curriculum=dict(cur) if isinstance(cur, Mapping) else {},
            curriculum_key=_str(ua.get(A.CURRICULUM_KEY)),
            description=_str(ua.get(A.DESCRIPTION)),
            baseline=_str(ua.get(A.BASELINE)) or None,
            stage_boundaries=tuple(int(b) for b in bounds if _int(b) is not None)
            if isinstance(bounds, list) and all(_int(b) is not None for b in bounds)
            else (),
            proxy_cost=_float(ua.get(A.PROXY_COST)),
            run_dir=_str(ua.get(A.RUN_DIR)) or None,
            metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
            seed_values=tuple(float(v) for v in seeds if _float(v) is not None)
            if isinstance(seeds, list)
            else (),
            teacher_forwards=_int(ua.get(A.TEACHER_FORWARDS)),
            wall_time_s=_float(ua.get(A.WALL_TIME_S)),
            pruned_at=_int(ua.get(A.PRUNED_AT)),
            failure_reason=_str(ua.get(A.FAILURE_REASON)),
            reused_from=_int(ua.get(A.REUSED_FROM)),
            requeued=bool(ua.get(A.REQUEUED)),
            retry_of=_int(ua.get(A.RETRY_OF)),
            retry_reason=_str(ua.get(A.RETRY_REASON)),
            arm=_str(ua.get(A.ARM)),
            role=_str(ua.get(A.ROLE)),
            iterations=_int(ua.get(A.ITERATIONS)),
            seed=_int(ua.get(A.SEED)),
            report_ap=_float(ua.get(A.REPORT_AP)),
            interrupted=bool(ua.get(A.INTERRUPTED)),
        )

    @property
    def finished(self) -> bool:
        return self.state in ("COMPLETE", "PRUNED", "FAIL")

    @property
    def counted(self) -> bool:
        """False for a re-queued trial: its retry is counted instead (see :func:`count_trials`)."""
        return not self.requeued

    @property
    def updated(self) -> datetime | None:
        """Completion time, else start time."""
        return self.complete or self.start


def is_counted(user_attrs: Mapping[str, Any]) -> bool:
    """THE count rule on raw attributes: a re-queued trial is counted by its retry, not itself."""
    return not user_attrs.get(A.REQUEUED)


@dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by state, counted by :func:`count_trials`.

    ``failed`` leaves out re-queued trials (``requeued`` counts them): their retry is the trial
    that counts. ``finished`` = complete + pruned + failed is what the target is measured against.
    """

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    requeued: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    @property
    def total(self) -> int:
        return self.finished + self.running + self.waiting + self.requeued

    def as_dict(self) -> dict[str, int]:
        """Counts keyed by Optuna's lower-case state names (``fail`` for failed) plus ``requeued``."""
        return {
            "complete": self.complete,
            "pruned": self.pruned,
            "fail": self.failed,
            "running": self.running,
            "waiting": self.waiting,
            "requeued": self.requeued,
        }


def count_trials(trials: Iterable[TrialRecord]) -> TrialCounts:
    """THE count rule of every report (CLI, dashboard, benchmarks)."""
    n = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    requeued = 0
    for t in trials:
        if not t.counted and t.finished:
            requeued += 1
        elif t.state in n:
            n[t.state] += 1
    return TrialCounts(n["COMPLETE"], n["PRUNED"], n["FAIL"], n["RUNNING"], n["WAITING"], requeued)


def best_of(trials: Iterable[TrialRecord], maximize: bool = True) -> TrialRecord | None:
    """The best complete trial (baselines included); ties go to the lower number."""
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not done:
        return None
    sign = 1.0 if maximize else -1.0
    return max(done, key=lambda t: (sign * float(t.value or 0.0), -t.number))


# -- the full run ----------------------------------------------------------------------------------


def full_run_state(status: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None, history: bool) -> str:
    """``running`` / ``done`` / ``failed`` / ``interrupted`` from ``status.json``; ``done`` when only
    metrics exist, ``running`` when only a history exists, else ``unknown``."""
    if status and status.get("state"):
        return live_state(status)  # "running" of a killed process reads "interrupted"
    return "done" if metrics else "running" if history else "unknown"


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_full_run(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """State (:func:`full_run_state`, ``None`` before it started) and metrics of ``folder/full``."""
    full = folder / "full"
    status, metrics = _json(full / "status.json"), _json(full / "metrics.json")
    history = full / "history.jsonl"
    has_history = history.is_file() and history.stat().st_size > 0
    if status is None and metrics is None and not has_history:
        return None, None
    return full_run_state(status, metrics, has_history), metrics


# -- studies ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyRecord:
    """One study as the ``studies`` command and the dashboard's study table show it.

    Attributes:
        name: study name.
        storage: where it is read from (password hidden).
        state: one of :data:`STUDY_STATES`.
        counts: its trials by :func:`count_trials`.
        target: targeted number of trials, if known.
        direction: ``maximize`` or ``minimize``.
        best_value / best_trial: best proxy value and its trial number (``None`` before one).
        full_ap: AP of the full run (``metrics.json``), if finished.
        full_state: state of the full run, ``None`` before it.
        updated: latest trial start or completion (UTC).
        decision: the selection race's decision (``load_decision``), ``None`` before one.
        attrs: study user attributes.
    """

    name: str
    storage: str
    state: str
    counts: TrialCounts
    target: int | None = None
    direction: str = "maximize"
    best_value: float | None = None
    best_trial: int | None = None
    full_ap: float | None = None
    full_state: str | None = None
    updated: datetime | None = None
    decision: Mapping[str, Any] | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)


def target_of(attrs: Mapping[str, Any]) -> int | None:
    """Targeted number of trials: the ``target_trials`` attribute, else the space's ``trials``."""
    value = attrs.get(A.TARGET_TRIALS)
    if value is None:
        space = attrs.get(A.SPACE)
        value = space.get("trials") if isinstance(space, Mapping) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def study_record(
    name: str,
    storage: str,
    attrs: Mapping[str, Any],
    trials: Iterable[TrialRecord],
    *,
    direction: str = "maximize",
    folder: Path | None = None,
    race: Iterable[TrialRecord] = (),
    decision: Mapping[str, Any] | None = None,
) -> StudyRecord:
    """Build a :class:`StudyRecord` (the one place state, counts and best are derived)."""
    trials = list(trials)
    counts = count_trials(trials)
    target = target_of(attrs)
    best = best_of(trials, maximize=direction != "minimize")
    full_state, metrics = read_full_run(folder) if folder is not None else (None, None)
    full_ap = _float((metrics or {}).get("ap"))
    updated = max((t.updated for t in trials if t.updated is not None), default=None)
    state = study_state(
        counts,
        target,
        full=full_state,
        race_running=any(t.state == "RUNNING" for t in race),
        decided=decision is not None,
    )
    return StudyRecord(
        name=name,
        storage=storage,
        state=state,
        counts=counts,
        target=target,
        direction=direction,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        full_ap=full_ap,
        full_state=full_state,
        updated=updated,
        decision=decision,
        attrs=dict(attrs),
    )


class StudyReader:
    """Read-only access to the studies of one Optuna storage, through Optuna's storage API.

    Args:
        storage: an open storage (``storage.open_readonly`` for the CLI, the dashboard's
            ``open_readonly_storage``); the reader never writes to it.
        display: where the storage is, for messages and records (password hidden).

    Keep a reader to make re-reads cheap (see the module docstring); :meth:`close` releases
    database connections between reads and leaves the reader usable.
    """

    def __init__(self, storage: Any, display: str) -> None:
        self.storage = storage
        self.display = display
        self._studies: dict[str, optuna.Study] = {}
        self._idents: dict[str, tuple[Any, ...]] = {}

    def names(self) -> list[str]:
        """Names of the studies of the storage, without selection studies."""
        names = optuna.get_all_study_names(storage=self.storage)
        return [n for n in names if not A.is_selection_study(n)]

    def study(self, name: str) -> optuna.Study:
        """The Optuna study ``name`` (loaded once per reader).

        Raises:
            StudyError: the storage holds no study of that name.
        """
        study = self._studies.get(name)
        if study is not None and self._identity(name, study) != self._idents.get(name):
            study = None  # deleted and created again under the same name: forget what was cached
        if study is None:
            try:
                study = optuna.load_study(
                    study_name=name, storage=self.storage, sampler=optuna.samplers.RandomSampler()
                )
            except KeyError:
                raise StudyError(f"{self.display}: no study named {name!r}") from None
            except StudyError:
                raise
            except Exception as exc:  # e.g. read while another process is still creating the schema
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                raise StudyError(
                    f"{self.display}: cannot read study {name!r} ({type(exc).__name__}: {first}); if it "
                    "is being created right now, retry in a moment, otherwise it is not an Optuna study"
                ) from exc
            self._studies[name] = study
            self._idents[name] = self._identity(name, study)
        return study

    def _identity(self, name: str, study: optuna.Study) -> tuple[Any, ...]:
        """Study id and creation time: they change when a study is deleted and created again."""
        try:
            sid = self.storage.get_study_id_from_name(name)
        except KeyError:
            raise StudyError(f"{self.display}: no study named {name!r}") from None
        return (sid, self.storage.get_study_user_attrs(sid).get(A.CREATED), study.study_name)

    def has_study(self, name: str) -> bool:
        if name in self._studies:
            return True
        try:
            self.storage.get_study_id_from_name(name)
        except KeyError:
            return False
        return True

    def trials(self, name: str) -> tuple[TrialRecord, ...]:
        """Every trial of study ``name`` (``Study.get_trials``), as records in number order."""
        trials = self.study(name).get_trials(deepcopy=False)
        return tuple(TrialRecord.of(t) for t in sorted(trials, key=lambda t: t.number))

    def attrs(self, name: str) -> dict[str, Any]:
        return dict(self.study(name).user_attrs)

    def direction(self, name: str) -> str:
        directions = self.study(name).directions
        return "minimize" if directions and directions[0].name == "MINIMIZE" else "maximize"

    def race(self, name: str) -> tuple[TrialRecord, ...] | None:
        """Race runs of study ``name`` (its selection study), ``None`` before any race."""
        sel = A.selection_study_name(name)
        if not self.has_study(sel):
            return None
        return self.trials(sel)

    def decision(self, name: str) -> dict[str, Any] | None:
        """The stored decision of study ``name``'s selection race, ``None`` before one."""
        sel = A.selection_study_name(name)
        if not self.has_study(sel):
            return None
        decision = self.study(sel).user_attrs.get(A.DECISION)
        return decision if isinstance(decision, dict) else None

    def record(
        self, name: str, folder: Path | None = None, trials: Iterable[TrialRecord] | None = None
    ) -> StudyRecord:
        """The :class:`StudyRecord` of study ``name``; ``folder`` holds its files (full run).

        ``trials`` saves a second read when the caller already has them.
        """
        race = self.race(name) or ()
        return study_record(
            name,
            self.display,
            self.attrs(name),
            self.trials(name) if trials is None else trials,
            direction=self.direction(name),
            folder=folder,
            race=race,
            decision=self.decision(name),
        )

    def close(self) -> None:
        """Release database connections (the reader stays usable and keeps its cache)."""
        backend = getattr(self.storage, "_backend", self.storage)  # Optuna's caching wrapper
        engine = getattr(backend, "engine", None)
        if engine is not None:
            engine.dispose()


def records_of(trials: Iterable[FrozenTrial]) -> tuple[TrialRecord, ...]:
    """Records of Optuna trials, in number order."""
    return tuple(TrialRecord.of(t) for t in sorted(trials, key=lambda t: t.number))


__all__ = [
    "STUDY_STATES",
    "StudyReader",
    "StudyRecord",
    "TrialCounts",
    "TrialRecord",
    "best_of",
    "count_trials",
    "full_run_state",
    "is_counted",
    "read_full_run",
    "records_of",
    "study_record",
    "study_state",
    "target_of",
]
