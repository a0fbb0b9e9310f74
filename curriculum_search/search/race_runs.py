"""Running the race: every race run is a trial of the sibling study ``<name>:selection`` (same
storage), trained in its own process and resumable run folder; :func:`run_selection` races the
shortlist (:mod:`~curriculum_search.search.arms`) rung by rung as :mod:`~curriculum_search.search.race`
plans it, resuming a killed race without repeating a finished run. See
:mod:`curriculum_search.search.selection` for the whole stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from curriculum_search.curriculum.recipe import Recipe
from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.arms import Candidate, race_settings, shortlist
from curriculum_search.search.attrs import DECISION, SELECTION_OF, selection_study_name
from curriculum_search.search.encoding import build_recipe
from curriculum_search.search.failures import race_time_limit
from curriculum_search.search.options import SearchOptions, study_name
from curriculum_search.search.processes import (
    Process,
    claim,
    finish,
    gpus,
    heartbeats,
    job_for,
    spawn,
    stop_all,
    thread_count,
    worker_count,
)
from curriculum_search.search.protocol import TrialResult
from curriculum_search.search.race import Arm, RacePlan, RaceSettings, RunKey, plan_race
from curriculum_search.search.race_report import summary
from curriculum_search.search.space import SearchSpace
from curriculum_search.search.storage import (
    StorageSpec,
    database_errors,
    load_study_readonly,
    open_storage,
    storage_spec,
    study_lock,
)
from curriculum_search.search.study import check_fingerprint, first_stage_min
from curriculum_search.utils.config import to_dict

log = logging.getLogger(__name__)

#: A race run interrupted this often (SIGKILL: OOM killer, operator) counts as failed.
MAX_INTERRUPTIONS = 3


# -- the selection study ---------------------------------------------------------------------------
def open_selection_study(spec: StorageSpec, name: str) -> optuna.Study:
    """Create or load the selection study of study ``name`` (same storage)."""
    study = optuna.create_study(
        study_name=selection_study_name(name),
        storage=open_storage(spec),
        direction="maximize",
        load_if_exists=True,
    )
    if SELECTION_OF not in study.user_attrs:
        study.set_user_attr(SELECTION_OF, name)
    return study


def _recover(study: optuna.Study, echo: Callable[[str], None]) -> None:
    """Race runs left RUNNING by a killed coordinator are failed as interrupted (re-run from their
    checkpoint by the next plan, never counted as a result)."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, A.INTERRUPTED, True)
        # stopped with its coordinator (kill -9, Ctrl+C, a reboot): never the run's fault, and
        # never counted toward MAX_INTERRUPTIONS (three stopped `run`s must not fail the incumbent)
        study._storage.set_trial_user_attr(t._trial_id, A.INTERRUPTED_BY, "coordinator")
        study.tell(t.number, state=TrialState.FAIL)
    if stale:
        echo(f"selection: {len(stale)} interrupted race run(s) resume from their last checkpoint")


def race_results(study: optuna.Study) -> dict[RunKey, float | None]:
    """Finished race runs: AP on the selection split, ``None`` for a run that failed by itself."""
    out: dict[RunKey, float | None] = {}
    kills: dict[RunKey, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        a = t.user_attrs
        if A.ARM_KEY not in a:
            continue
        key = (str(a[A.ARM_KEY]), int(a[A.ITERATIONS]), int(a[A.SEED]))
        if t.state == TrialState.COMPLETE:
            out[key] = t.value
        elif not a.get(A.INTERRUPTED):
            out.setdefault(key, None)
        elif a.get(A.INTERRUPTED_BY) == "coordinator":  # stopped with its coordinator: run it again
            continue
        else:  # the run process alone SIGKILLed (OOM killer): run it again, but not forever
            kills[key] = kills.get(key, 0) + 1
            if kills[key] >= MAX_INTERRUPTIONS:
                out.setdefault(key, None)
    return out


def race_run_dir(spec: StorageSpec, key: RunKey) -> Path:
    return spec.study_dir / "selection" / f"{key[0]}-i{key[1]}-s{key[2]}"


def _recipe(space: SearchSpace, c: Candidate, key: RunKey, opts: SearchOptions, split: str) -> Recipe:
    return build_recipe(
        space,
        c.choice,
        iterations=key[1],
        proxy=False,
        seed=key[2],
        studies_root=opts.studies_root,
        split=split,  # type: ignore[arg-type]
    )


@dataclass
class _Running:
    trial: optuna.Trial
    key: RunKey
    process: Process
    killed_after_s: float | None = None


def _launch(
    space: SearchSpace,
    study: optuna.Study,
    spec: StorageSpec,
    cands: Mapping[str, Candidate],
    key: RunKey,
    opts: SearchOptions,
    slot: int,
    threads: int,
    gpu_ids: list[str],
    rung: int,
) -> _Running:
    c = cands[key[0]]
    trial = claim(study, spec.is_server)  # server databases: its heartbeat starts at once
    run_dir = race_run_dir(spec, key)
    for k, v in {
        A.ARM_KEY: key[0],
        A.ARM: c.arm.label,
        A.ROLE: c.arm.role,
        A.BASELINE: c.arm.baseline,
        A.SOURCE_TRIAL: c.arm.source_trial,
        A.ITERATIONS: key[1],
        A.SEED: key[2],
        A.RUNG: rung,
        A.CURRICULUM: c.choice.as_dict(),
        A.DESCRIPTION: c.choice.describe(),
        A.RUN_DIR: str(run_dir.relative_to(spec.study_dir)),
    }.items():
        trial.set_user_attr(k, v)
    recipe = _recipe(space, c, key, opts, "selection")
    report = _recipe(space, c, key, opts, "report").data
    job = job_for(
        space=space,
        opts=opts,
        spec=spec,
        study_name=study.study_name,
        trial=trial,
        recipe=recipe,
        run_dir=run_dir,
        seeds=[key[2]],
        threads=threads,
        prune=False,
        first_stage_iterations=first_stage_min(space),
        report_data=to_dict(report),
    )
    (run_dir / "result.json").unlink(missing_ok=True)
    return _Running(trial, key, spawn(job, run_dir, slot, threads, gpu_ids, f"race{trial.number}"))


def _finish(study: optuna.Study, r: _Running) -> str:
    result, wall, killed = finish(r.process)
    trial = r.trial
    trial.set_user_attr(A.WALL_TIME_S, round(wall, 2))
    if r.killed_after_s is not None:  # hung: a failure of this run (not an interruption)
        result = TrialResult(
            "fail",
            reason=f"killed after {wall:.0f} s: over the race run's wall-clock limit of "
            f"{r.killed_after_s:.0f} s (trial_timeout_s scaled to its length); it stopped making progress",
        )
    elif killed and result.state == "fail":  # not the run's fault: run it again (see race_results)
        trial.set_user_attr(A.INTERRUPTED, True)
    label = f"{trial.user_attrs[A.ARM]:<28} {r.key[1]:>5} it  seed {r.key[2]}"
    if result.state == "complete" and result.value is not None:
        trial.set_user_attr(A.METRICS, result.metrics)
        if result.report_values:
            trial.set_user_attr(A.REPORT_AP, result.report_values[0])
            trial.set_user_attr(A.REPORT_METRICS, result.report_metrics)
        study.tell(trial, float(result.value))
        rep = f"  (report split {result.report_values[0]:.4f})" if result.report_values else ""
        return f"race  {label}  AP {result.value:.4f}{rep}  {wall:4.0f}s"
    trial.set_user_attr(A.FAILURE_REASON, result.reason or "unknown")
    study.tell(trial, state=TrialState.FAIL)
    return f"race  {label}  FAILED: {result.reason}"


# -- running the race --------------------------------------------------------------------------------
@dataclass
class SelectionOutcome:
    """The race's decision and report (``summary`` is what ``status --json`` shows)."""

    study_name: str
    plan: RacePlan
    candidates: dict[str, Candidate]
    summary: dict[str, Any]

    @property
    def winner(self) -> Candidate:
        assert self.plan.winner is not None
        return self.candidates[self.plan.winner.key]


def run_selection(space: SearchSpace, opts: SearchOptions) -> SelectionOutcome:
    """Race the shortlist (resuming a killed race) and return the decision.

    Raises:
        StudyError: the search has no finished baseline, or the incumbent's runs failed.
    """
    name = study_name(space, opts)
    spec = storage_spec(opts.studies_root, name, opts.storage)
    local = not spec.is_server
    with study_lock(spec, name, wait=opts.wait), database_errors(spec):  # server: this host's full/
        search = load_study_readonly(spec, name)
        check_fingerprint(search, space, spec, opts.seed)  # the race trains what the search scored
        study = open_selection_study(spec, name)
        if local:  # the study lock makes this the only coordinator (SQLite and journal alike)
            _recover(study, opts.echo)
        cands = {c.arm.key: c for c in shortlist(space, search, space.selection)}
        arms = [c.arm for c in cands.values()]
        base_seed = space.seed if opts.seed is None else opts.seed
        settings = race_settings(space, base_seed)
        n_chal = sum(a.role == "challenger" and a.baseline is None for a in arms)
        n_base = sum(a.role != "reference" and a.baseline is not None for a in arms)
        opts.echo(
            f"selection: {n_chal} searched curricul{'um' if n_chal == 1 else 'a'} against {n_base} baseline(s) "
            f"on common seeds, rungs {list(settings.budgets)} iterations, seeds {[len(s) for s in settings.seeds]} "
            f"(the proxy's favourite baseline: {arms[0].label!r}, proxy {arms[0].proxy_score:.4f})"
        )
        plan = _race(space, study, spec, cands, arms, settings, opts)
        if plan.winner is None or (plan.winner_stats is None and plan.reason.startswith("a run")):
            raise StudyError(
                f"selection of {name!r} stopped: {plan.reason}; see {spec.study_dir / 'selection'}"
            )
        out = SelectionOutcome(name, plan, cands, summary(space, study, plan, cands))
        study.set_user_attr(DECISION, out.summary)
    return out


def _race(
    space: SearchSpace,
    study: optuna.Study,
    spec: StorageSpec,
    cands: Mapping[str, Candidate],
    arms: list[Arm],
    settings: RaceSettings,
    opts: SearchOptions,
) -> RacePlan:
    workers = worker_count(opts.workers, opts.threads, opts.device)
    threads = thread_count(opts.threads, workers)
    gpu_ids = gpus(opts.device)
    running: dict[RunKey, _Running] = {}
    with heartbeats(study, lambda: [r.trial._trial_id for r in running.values()], spec.is_server):
        try:
            while True:
                plan = plan_race(arms, settings, race_results(study))
                if plan.done and not running:
                    return plan
                todo = [k for k in plan.pending if k not in running]
                rung = len(plan.rungs)
                while todo and len(running) < workers:
                    key = todo.pop(0)
                    slot = min(set(range(workers)) - {r.process.slot for r in running.values()})
                    running[key] = _launch(space, study, spec, cands, key, opts, slot, threads, gpu_ids, rung)
                time.sleep(0.25)
                for key, r in list(running.items()):
                    limit = race_time_limit(space, key[1])
                    if r.process.kill_if_over(limit):
                        r.killed_after_s = limit
                    if r.process.done():
                        del running[key]
                        opts.echo(_finish(study, r))
                if not running and not plan.pending and not plan.done:  # pragma: no cover - defensive
                    raise StudyError("selection: the race made no progress")
        except BaseException:
            stop_all(r.process for r in running.values())
            raise
