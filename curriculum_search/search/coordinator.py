"""The search coordinator: claims trials, decodes their curricula, runs each in its own process.

One *coordinator* per host claims trials (``study.ask``), decodes their curriculum, and starts one
process per trial (:mod:`~curriculum_search.search.trial_worker`); the trial process reports AP at
fixed global iterations and consults the pruner; the coordinator finishes the trial
(``study.tell``) from the process' :class:`~curriculum_search.search.protocol.TrialResult`. With
SQLite a lock makes sure only one coordinator runs a study (so no queued trial is claimed twice)
and trials left RUNNING by a killed coordinator are failed and re-queued at the next start; their
run folder is keyed by the curriculum, so the retry resumes from the last stage checkpoint. Server
databases (PostgreSQL) take one coordinator per host (``worker``), with Optuna heartbeats failing
and re-queuing the trials of a dead host.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.baselines import STUDENT_ONLY, student_only_choice
from curriculum_search.search.encoding import CurriculumChoice, build_recipe, proxy_cost, suggest_curriculum
from curriculum_search.search.failures import ENV_FAILURE_LIMIT, trial_time_limit
from curriculum_search.search.options import SearchOptions, SearchSummary, run_seeds, study_name
from curriculum_search.search.processes import (
    Process,
    claim,
    finish,
    gpus,
    heartbeats,
    job_for,
    progress_of,
    spawn,
    still_ours,
    stop_all,
    thread_count,
    worker_count,
)
from curriculum_search.search.protocol import RESULT_FILE, TrialResult
from curriculum_search.search.reader import is_counted
from curriculum_search.search.results import summarize
from curriculum_search.search.space import SearchSpace
from curriculum_search.search.storage import (
    RUN_LOCK,
    StorageSpec,
    database_errors,
    heartbeat_grace_s,
    lock_held,
    storage_spec,
    study_lock,
)
from curriculum_search.search.study import (
    enqueue_baselines,
    enqueue_retry,
    ensure_zoo,
    fail_stale,
    finished_count,
    first_stage_min,
    open_study,
    recover_interrupted,
    run_folder_id,
)

# -- the coordinator -------------------------------------------------------------------------------
#: Seconds between reads of what other hosts do (server databases): stale trials, trials running
#: elsewhere, and the twins that trials waiting to reuse a result wait on.
TWIN_CHECK_S = 2.0


@dataclass
class _Running:
    trial: optuna.Trial
    choice: CurriculumChoice
    process: Process
    killed_after_s: float | None = None  # set when the per-trial wall-clock limit killed it

    @property
    def slot(self) -> int:
        return self.process.slot


def run_search(space: SearchSpace, opts: SearchOptions, *, enqueue: bool = True) -> SearchSummary:
    """Run (or resume) the study until it has ``trials`` finished trials (or the timeout)."""
    name = study_name(space, opts)
    spec = storage_spec(opts.studies_root, name, opts.storage)
    local = not spec.is_server
    # one coordinator per local database (SQLite, journal); server databases take a `worker` per host
    lock = study_lock(spec, name, wait=opts.wait) if local else contextlib.nullcontext()
    with lock, database_errors(spec):
        study = open_study(space, opts, spec)
        ensure_zoo(space, opts)
        if local:  # the study lock makes this the only coordinator (SQLite and journal alike)
            recover_interrupted(study, opts.echo)
        target = opts.trials or int(study.user_attrs.get(A.TARGET_TRIALS, space.trials))
        if opts.trials:
            study.set_user_attr(A.TARGET_TRIALS, opts.trials)
        elif A.TARGET_TRIALS not in study.user_attrs:
            study.set_user_attr(A.TARGET_TRIALS, space.trials)
        if enqueue:
            enqueue_baselines(space, study, opts)
        _coordinate(space, study, spec, opts, target)
    return summarize(study, spec)


def _coordinate(
    space: SearchSpace, study: optuna.Study, spec: StorageSpec, opts: SearchOptions, target: int
) -> None:
    t_start = time.time()
    timeout = opts.timeout_s if opts.timeout_s is not None else space.timeout_s
    workers = worker_count(opts.workers, opts.threads, opts.device)
    threads = thread_count(opts.threads, workers)
    gpu_ids = gpus(opts.device)
    running: dict[int, _Running] = {}
    waiting_reuse: list[tuple[optuna.Trial, CurriculumChoice]] = []
    done = finished_count(study)
    bar = tqdm(
        total=target,
        initial=min(done, target),
        desc=f"study {study.study_name}",
        unit="trial",
        disable=not opts.progress,
        dynamic_ncols=True,
    )
    it_bar = tqdm(
        total=space.proxy.iterations,
        desc="trial",
        unit="it",
        disable=not (opts.progress and workers == 1),
        leave=False,
        dynamic_ncols=True,
    )
    limit = trial_time_limit(space)
    env_failures: list[str] = []  # environment failures in a row (disk full, CUDA error...)
    # server databases: trials other hosts run count toward the target too (no host claims past
    # it), and a host with nothing left to claim waits for them: when one's heartbeat stops (its
    # host died), it is failed, re-queued and run here, so no trial stays RUNNING and a dead host's
    # baseline is not replaced by a new trial
    others, next_host_check = 0, 0.0  # one read of other hosts' state per TWIN_CHECK_S
    others_seen: dict[int, float] = {}  # when this coordinator first saw each of them
    patience = limit + heartbeat_grace_s() if spec.is_server else 0.0
    with heartbeats(
        study,
        lambda: [r.trial._trial_id for r in running.values()] + [t._trial_id for t, _ in waiting_reuse],
        spec.is_server,
    ):
        try:
            while True:
                ask_storage = spec.is_server and time.time() >= next_host_check
                if ask_storage:  # every few seconds, not every tick
                    next_host_check = time.time() + TWIN_CHECK_S
                    fail_stale(study)
                    others = _others_running(study, running, waiting_reuse, others_seen, patience)
                done = finished_count(study)
                out_of_time = timeout is not None and time.time() - t_start > timeout
                if out_of_time and (running or waiting_reuse):  # --timeout holds even if a trial hangs
                    _stop_at_timeout(study, running, waiting_reuse, opts, bar)
                    break
                free_slots = sorted(set(range(workers)) - {r.slot for r in running.values()})
                while (
                    not out_of_time
                    and len(running) + len(waiting_reuse) < workers
                    and done + len(running) + len(waiting_reuse) + others < target
                ):
                    if spec.is_server:
                        fail_stale(study)
                    trial = claim(study, spec.is_server)
                    choice = _decode(trial, space)
                    prepared = _prepare_trial(space, study, trial, choice, opts)
                    if prepared == "reused":
                        done += 1
                        bar.update(1)
                        line = _reused_line(trial, choice)
                        opts.echo(line) if not opts.progress else bar.write(line)
                        continue
                    if prepared == "wait":
                        waiting_reuse.append((trial, choice))
                        continue
                    if prepared == "infeasible":
                        done += 1
                        bar.update(1)
                        continue
                    slot = free_slots.pop(0)
                    running[trial.number] = _launch(
                        space, study, spec, trial, choice, opts, slot, threads, gpu_ids
                    )
                if not running and not waiting_reuse and not (others and done < target and not out_of_time):
                    break
                time.sleep(0.25)
                if workers == 1 and running:
                    _update_iteration_bar(it_bar, next(iter(running.values())))
                for number, r in list(running.items()):
                    if r.process.kill_if_over(limit):
                        r.killed_after_s = limit
                    if not r.process.done():
                        continue
                    del running[number]
                    line, cause = _finish(study, r)
                    if is_counted(r.trial.user_attrs):  # a re-queued trial is counted by its retry
                        bar.update(1)
                    it_bar.reset()
                    opts.echo(line) if not opts.progress else bar.write(line)
                    env_failures = [*env_failures, cause] if cause else []
                    if len(env_failures) >= ENV_FAILURE_LIMIT:
                        raise StudyError(
                            f"study {study.study_name!r} stopped: {len(env_failures)} trials in a row failed "
                            f"on the environment, last: {cause}; fix it and re-run the same command (those "
                            "trials run again; they do not count toward the target)"
                        )
                for trial, choice in list(waiting_reuse):
                    if choice.key in {r.choice.key for r in running.values()}:
                        continue  # its twin runs here
                    if spec.is_server and (not ask_storage or _twin_runs(study, trial, choice)):
                        continue  # its twin may run on another host (or was claimed there first)
                    waiting_reuse.remove((trial, choice))
                    if _prepare_trial(space, study, trial, choice, opts) == "reused":
                        bar.update(1)
                        line = _reused_line(trial, choice)  # told like any other trial
                        opts.echo(line) if not opts.progress else bar.write(line)
                    else:  # the twin did not complete: run it ourselves
                        slot = min(set(range(workers)) - {r.slot for r in running.values()})
                        running[trial.number] = _launch(
                            space, study, spec, trial, choice, opts, slot, threads, gpu_ids
                        )
        except BaseException:
            stop_all(r.process for r in running.values())  # nothing orphaned; checkpoints stay for the retry
            raise
        finally:
            it_bar.close()
            bar.close()


def _others_running(
    study: optuna.Study,
    running: dict[int, _Running],
    waiting: list[tuple[optuna.Trial, CurriculumChoice]],
    seen: dict[int, float],
    patience: float,
) -> int:
    """Trials other hosts run (RUNNING in the storage, not here), which count toward the target.

    ``seen`` keeps when each was first seen; one running for longer than ``patience`` (the per-trial
    limit plus the heartbeat grace: its host would have killed it, or its heartbeat would have
    stopped) is no longer counted: it has no heartbeat (claimed by an older version, or its host
    died within the claim), so it would never end and a host would wait for it forever."""
    ours = set(running) | {t.number for t, _ in waiting}
    now = time.time()
    current = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))} - ours
    for n in set(seen) - current:
        del seen[n]
    return sum(1 for n in current if now - seen.setdefault(n, now) <= patience)


def _reused_line(trial: optuna.Trial, choice: CurriculumChoice) -> str:
    label = trial.user_attrs.get(A.BASELINE) or "search"
    return (
        f"#{trial.number:<3} {label:<16} same curriculum as #{trial.user_attrs.get(A.REUSED_FROM)}: "
        f"result reused  {choice.describe()}"
    )


def _stop_at_timeout(
    study: optuna.Study,
    running: dict[int, _Running],
    waiting: list[tuple[optuna.Trial, CurriculumChoice]],
    opts: SearchOptions,
    bar: Any,
) -> None:
    """``--timeout`` reached: stop the running trials (a hung one included) and re-queue them with
    the ones waiting for a twin; each resumes from its last checkpoint on the next run."""
    stop_all(r.process for r in running.values())
    trials = [r.trial for r in running.values()] + [t for t, _ in waiting]
    for r in running.values():
        r.process.close()
    for trial in trials:
        enqueue_retry(study, trial, reason="timeout")
        trial.set_user_attr(A.REQUEUED, True)
        trial.set_user_attr(
            A.FAILURE_REASON, "interrupted: --timeout reached; re-queued, it resumes from its last checkpoint"
        )
        study.tell(trial, state=TrialState.FAIL)
    running.clear()
    waiting.clear()
    line = f"timeout reached: stopped {len(trials)} trial(s); the next run resumes them from their last checkpoint"
    opts.echo(line) if not opts.progress else bar.write(line)


def _decode(trial: optuna.Trial, space: SearchSpace) -> CurriculumChoice:
    choice = suggest_curriculum(trial, space)  # fixed parameter set in every trial
    if trial.user_attrs.get(A.BASELINE) == STUDENT_ONLY:
        choice = student_only_choice(space)
    return choice


def _prepare_trial(
    space: SearchSpace,
    study: optuna.Study,
    trial: optuna.Trial,
    choice: CurriculumChoice,
    opts: SearchOptions,
) -> str:
    """Record the decoded curriculum; reuse an identical finished curriculum; apply constraints."""
    trial.set_user_attr(A.CURRICULUM, choice.as_dict())
    trial.set_user_attr(A.CURRICULUM_KEY, choice.key)
    trial.set_user_attr(A.DESCRIPTION, choice.describe())
    trial.set_user_attr(A.STAGE_BOUNDARIES, _boundaries(choice))
    gflops = {i["name"]: float(i.get("gflops") or 0.0) for i in study.user_attrs.get(A.TEACHER_INFO, [])}
    student_gflops = float(study.user_attrs.get(A.STUDENT_GFLOPS) or _student_gflops(space, study))
    cost = proxy_cost(choice, gflops, student_gflops) if gflops or choice.is_student_only else 0.0
    trial.set_user_attr(A.PROXY_COST, cost)
    cap = space.constraints.max_proxy_cost
    if cap is not None:
        trial.set_constraint(A.PROXY_COST, cost - cap)
        if cost > cap:
            trial.set_user_attr(
                A.FAILURE_REASON, f"infeasible: proxy cost {cost:.4g} > max_proxy_cost {cap:.4g}"
            )
            study.tell(trial, state=TrialState.PRUNED)
            return "infeasible"
    twins = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(A.CURRICULUM_KEY) == choice.key and t.number != trial.number
    ]
    if twins:
        twin = twins[0]
        trial.set_user_attr(A.REUSED_FROM, twin.number)
        for k in A.REUSE_COPIES:
            if k in twin.user_attrs:
                trial.set_user_attr(k, twin.user_attrs[k])
        for step, v in twin.intermediate_values.items():
            trial.report(v, step)
        study.tell(trial, twin.value)
        return "reused"
    return "wait" if _twin_runs(study, trial, choice) else "run"


def _twin_runs(study: optuna.Study, trial: optuna.Trial, choice: CurriculumChoice) -> bool:
    """Whether another RUNNING trial (of this or another host) trains the same curriculum first:
    one that was launched (its run folder is recorded), or, when two hosts claimed twins at the same
    moment, the lower-numbered one. Read from the storage, so every coordinator agrees."""
    return any(
        t.user_attrs.get(A.CURRICULUM_KEY) == choice.key
        and t.number != trial.number
        and (A.RUN_DIR in t.user_attrs or t.number < trial.number)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    )


def _boundaries(choice: CurriculumChoice) -> list[int]:
    return choice.boundaries()


def _student_gflops(space: SearchSpace, study: optuna.Study) -> float:
    from curriculum_search.models import build_detector
    from curriculum_search.models.cost import measure_cost

    cost = measure_cost(
        build_detector(space.student.with_updates(weights=None)), space.student.image_size, iters=2, warmup=1
    )
    study.set_user_attr(A.STUDENT_GFLOPS, cost.gflops)
    study.set_user_attr(A.STUDENT_COST, cost.as_dict())
    return cost.gflops


def _launch(
    space: SearchSpace,
    study: optuna.Study,
    spec: StorageSpec,
    trial: optuna.Trial,
    choice: CurriculumChoice,
    opts: SearchOptions,
    slot: int,
    threads: int,
    gpu_ids: list[str],
) -> _Running:
    seeds = run_seeds(space, opts, space.proxy.seeds)
    recipe = build_recipe(
        space,
        choice,
        iterations=space.proxy.iterations,
        proxy=True,
        seed=seeds[0],
        studies_root=opts.studies_root,
    )
    run_dir = trial_run_dir(spec, study, choice, seeds[0], trial.number)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    trial.set_user_attr(A.RUN_DIR, str(run_dir.relative_to(spec.study_dir)))
    job = job_for(
        space=space,
        opts=opts,
        spec=spec,
        study_name=study.study_name,
        trial=trial,
        recipe=recipe,
        run_dir=run_dir,
        seeds=seeds,
        threads=threads,
        prune=True,
        first_stage_iterations=first_stage_min(space),
    )
    return _Running(trial, choice, spawn(job, run_dir, slot, threads, gpu_ids, str(trial.number)))


def trial_run_dir(
    spec: StorageSpec, study: optuna.Study, choice: CurriculumChoice, seed: int, number: int
) -> Path:
    """The run folder of a trial: keyed by curriculum and the study's fingerprint (data, student,
    pool, proxy, train, seed), so a retry resumes from the last checkpoint and an incomparable run
    is never resumed from; a folder a live trial process holds (an original on a paused host that
    another host retried) is never shared: the trial gets its own."""
    run_dir = spec.study_dir / "trials" / f"{choice.key}-{run_folder_id(study)}-s{seed}"
    if lock_held(run_dir / RUN_LOCK):
        run_dir = run_dir.with_name(f"{run_dir.name}-t{number}")
    return run_dir


def _update_iteration_bar(bar: Any, r: _Running) -> None:
    p = progress_of(r.process.run_dir)
    if p is None:
        return
    bar.total = p["total"]
    bar.n = p["iteration"]
    bar.set_description(f"trial #{r.trial.number} stage {p['stage'] + 1}")
    bar.refresh()


def read_result(study: optuna.Study, trial: optuna.Trial, process: Process) -> TrialResult:
    """The trial process' result; a process SIGKILLed without one is re-queued once."""
    result, wall, killed = finish(process)
    trial.set_user_attr(A.WALL_TIME_S, round(wall, 2))
    # SIGKILL is mostly the OOM killer or an operator, rarely the curriculum itself: retry once
    # (from the last checkpoint); a retry that is killed again fails for good
    if (
        killed
        and result.state == "fail"
        and not result.environment
        and trial.user_attrs.get(A.RETRY_REASON) != "killed"
    ):
        enqueue_retry(study, trial, reason="killed")
        trial.set_user_attr(A.REQUEUED, True)
        result.reason = f"{result.reason}; re-queued once, the retry resumes from the last checkpoint"
    return result


def _finish(study: optuna.Study, r: _Running) -> tuple[str, str | None]:
    """Tell the trial's outcome; returns its log line and the environment cause of its failure
    (``None`` unless the environment failed it: then it is re-queued and does not count)."""
    trial = r.trial
    label = trial.user_attrs.get(A.BASELINE) or "search"
    desc = r.choice.describe()
    if not still_ours(study, trial):
        r.process.close()
        return (
            f"#{trial.number:<3} {label:<16} result dropped: the trial was failed and retried by another "
            "host while this one was not answering (heartbeat lost)  " + desc,
            None,
        )
    if r.killed_after_s is not None:
        wall = r.process.close()
        trial.set_user_attr(A.WALL_TIME_S, round(wall, 2))
        reason = (
            f"killed after {wall:.0f} s: over the per-trial wall-clock limit of {r.killed_after_s:.0f} s "
            "(trial_timeout_s in the space file); it stopped making progress or is far too slow"
        )
        trial.set_user_attr(A.FAILURE_REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        return f"#{trial.number:<3} {label:<16} FAILED: {reason}  {desc}", None
    result = read_result(study, trial, r.process)
    if result.state == "fail" and result.environment:
        reason = f"environment ({result.environment}): {result.reason}"
        trial.set_user_attr(A.FAILURE_REASON, reason)
        trial.set_user_attr(A.ENVIRONMENT_FAILURE, result.environment)
        if not trial.user_attrs.get(A.REQUEUED):
            enqueue_retry(study, trial, reason="environment")
            trial.set_user_attr(A.REQUEUED, True)
        study.tell(trial, state=TrialState.FAIL)
        return f"#{trial.number:<3} {label:<16} FAILED, re-queued: {reason}  {desc}", result.environment
    return _tell(study, trial, result, label, desc), None


def _tell(study: optuna.Study, trial: optuna.Trial, result: TrialResult, label: str, desc: str) -> str:
    wall = trial.user_attrs.get(A.WALL_TIME_S, 0.0)
    if result.state == "complete":
        assert result.value is not None
        trial.set_user_attr(A.METRICS, result.metrics)
        trial.set_user_attr(A.SEED_VALUES, result.seed_values)
        trial.set_user_attr(A.TEACHER_FORWARDS, result.teacher_forwards)
        study.tell(trial, float(result.value))
        best = study.best_value
        return f"#{trial.number:<3} {label:<16} AP {result.value:.3f} (best {best:.3f})  {wall:5.0f}s  {desc}"
    if result.state == "pruned":
        trial.set_user_attr(A.PRUNED_AT, result.pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
        ap = result.value
        return f"#{trial.number:<3} {label:<16} pruned at iteration {result.pruned_at} (AP {ap if ap is None else f'{ap:.3f}'})  {wall:5.0f}s  {desc}"
    trial.set_user_attr(A.FAILURE_REASON, result.reason or "unknown")
    study.tell(trial, state=TrialState.FAIL)
    return f"#{trial.number:<3} {label:<16} FAILED: {result.reason}  {desc}"
