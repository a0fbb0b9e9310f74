"""The coordinator ↔ trial-process protocol: a typed job file in, a typed result file out.

The coordinator writes a :class:`TrialJob` as JSON (``job-<n>.json`` in the run folder), starts
``python -m curriculum_search.search.trial_worker JOB.json`` and, when the process ends, reads the
:class:`TrialResult` the process wrote to ``result.json``. Both are plain dataclasses of JSON
values, so a job file can be read, edited and replayed by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from curriculum_search.search.storage import StorageSpec, password_from_env
from curriculum_search.utils.io import atomic_write_text

RESULT_FILE = "result.json"

State = Literal["complete", "pruned", "fail"]


@dataclass(frozen=True)
class StorageRef:
    """A :class:`~curriculum_search.search.storage.StorageSpec` as JSON values."""

    url: str
    study_dir: str
    sqlite_path: str | None = None
    journal_path: str | None = None
    #: in memory only: never written to the job file (:meth:`TrialJob.write`); the trial process
    #: gets it through its environment (:func:`~curriculum_search.search.storage.secret_env`)
    password: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, spec: StorageSpec) -> StorageRef:
        return cls(
            spec.url,
            str(spec.study_dir),
            str(spec.sqlite_path) if spec.sqlite_path else None,
            str(spec.journal_path) if spec.journal_path else None,
            spec.password,
        )

    def spec(self) -> StorageSpec:
        """The storage; a server database's password comes from this object or the environment."""
        spec = StorageSpec(
            self.url,
            Path(self.study_dir),
            Path(self.sqlite_path) if self.sqlite_path else None,
            Path(self.journal_path) if self.journal_path else None,
        )
        if not spec.is_server:
            return spec
        return replace(spec, password=self.password or password_from_env())


@dataclass(frozen=True)
class TrialJob:
    """One run for a trial process: train ``recipe`` for each seed, report to the trial.

    Attributes:
        study: Optuna study name the trial belongs to (the search study or its selection study).
        storage: where that study lives.
        trial_id / trial_number: the claimed trial.
        recipe: the recipe (``recipe_to_dict``) at the run's length; its data evaluates on the
            selection split.
        space: the study's search space (``to_dict``), for the pruner settings.
        first_stage_iterations: pruner warm-up used when the space does not set one.
        run_dir: the run folder (keyed by curriculum, budget and seed, so a retry resumes).
        seeds: seeds to train; the objective is the mean AP over them.
        prune: whether the pruner may stop the run.
        cache: teacher-output cache settings (``CacheConfig`` as JSON values).
        cache_root / base_dir / source: where caches, relative paths and the space file are.
        device / threads: where and with how many CPU threads to train.
        report_data: a ``DataConfig`` (as a dict) of the report split; when set, the final student
            of each seed is also evaluated there (the race's held-out numbers).
    """

    study: str
    storage: StorageRef
    trial_id: int
    trial_number: int
    recipe: dict[str, Any]
    space: dict[str, Any]
    first_stage_iterations: int
    run_dir: str
    seeds: list[int]
    prune: bool
    cache: dict[str, Any]
    cache_root: str
    base_dir: str
    source: str | None = None
    device: str | None = None
    threads: int | None = None
    progress: bool = False
    report_data: dict[str, Any] | None = None

    def write(self, path: Path) -> None:
        data = asdict(self)
        data["storage"].pop("password", None)  # job files are ordinary files: no secret in them
        atomic_write_text(path, json.dumps(data))

    @classmethod
    def read(cls, path: Path) -> TrialJob:
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        raw["storage"] = StorageRef(**raw["storage"])
        return cls(**raw)


@dataclass
class TrialResult:
    """What a trial process reports back (``result.json`` in its run folder).

    Attributes:
        state: ``complete``, ``pruned`` or ``fail``.
        value: mean final AP over the seeds (complete), or the last reported AP (pruned).
        seed_values: final AP of each seed on the run's evaluation (selection) split.
        metrics: the first seed's final metrics (AP, AP50, ...).
        report_values: final AP of each seed on the report split (when the job asked for it).
        report_metrics: the first seed's metrics on the report split.
        teacher_forwards: teacher forward passes the run needed (not served by the cache).
        pruned_at: global iteration of the pruning decision.
        reason: why the run failed.
        wall_time_s: seconds the process spent.
        environment: set when the failure is the environment's (``"disk full"``, ``"CUDA error"``,
            see :mod:`~curriculum_search.search.failures`): re-queued, not counted.
    """

    state: State
    value: float | None = None
    seed_values: list[float] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    report_values: list[float] = field(default_factory=list)
    report_metrics: dict[str, Any] = field(default_factory=dict)
    teacher_forwards: int = 0
    pruned_at: int | None = None
    reason: str | None = None
    wall_time_s: float | None = None
    environment: str | None = None

    def write(self, run_dir: Path) -> None:
        atomic_write_text(Path(run_dir) / RESULT_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, run_dir: Path) -> TrialResult:
        """The result in ``run_dir``.

        Raises:
            OSError, ValueError: no (readable) result file.
        """
        raw = json.loads((Path(run_dir) / RESULT_FILE).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


__all__ = ["RESULT_FILE", "StorageRef", "TrialJob", "TrialResult"]
