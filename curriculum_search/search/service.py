"""The curriculum search service: Optuna study, proxy trials in worker processes, pruning,
resume, baselines, the full run of the best curriculum, export, listing.

One *coordinator* per host claims trials (``study.ask``), decodes their curriculum, and starts
one process per trial (``trial_worker``); the trial process reports AP at fixed global iterations
and consults the pruner; the coordinator finishes the trial (``study.tell``) from the process'
``result.json``. With SQLite a lock makes sure only one coordinator runs a study (so no queued
trial is claimed twice) and trials left RUNNING by a killed coordinator are failed and re-queued at
the next start; their run folder is keyed by the curriculum, so the retry resumes from the last
stage checkpoint. Server databases (PostgreSQL) take one coordinator per host (``worker``), with
Optuna heartbeats failing and re-queuing the trials of a dead host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from curriculum_search import __version__
from curriculum_search.curriculum.recipe import Recipe, recipe_to_dict, save_recipe
from curriculum_search.curriculum.trainer import RunOptions, RunResult, recipe_hash, run_recipe
from curriculum_search.distill.cache import CacheConfig
from curriculum_search.errors import ConfigError, StudyError
from curriculum_search.search.baselines import (
    STUDENT_ONLY,
    baseline_choices,
    student_only_choice,
    student_only_params,
)
from curriculum_search.search.encoding import (
    CurriculumChoice,
    build_recipe,
    choice_from_dict,
    min_stage_iterations,
    proxy_cost,
    suggest_curriculum,
)
from curriculum_search.search.space import (
    SearchSpace,
    load_space,
    make_pruner,
    make_sampler,
    pool_hash,
    space_from_dict,
)
from curriculum_search.search.storage import (
    StorageSpec,
    coordinator_lock,
    load_study_readonly,
    open_storage,
    storage_spec,
)
from curriculum_search.search.trial_worker import RESULT_FILE
from curriculum_search.utils.config import to_dict
from curriculum_search.utils.io import atomic_write_text, dump_yaml, stable_hash

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class SearchOptions:
    """How to run a search (what is not in the space file)."""

    studies_root: Path
    name: str | None = None
    storage: str | None = None
    trials: int | None = None
    timeout_s: float | None = None
    workers: int = 1
    device: str | None = None
    threads: int | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    progress: bool = True
    seed: int | None = None
    space_file: Path | None = None
    echo: Callable[[str], None] = print


@dataclass
class SearchSummary:
    study_name: str
    storage: str
    finished: int
    best_trial: int | None
    best_value: float | None
    best_description: str | None


# -- study creation / resume --------------------------------------------------------------------
def study_name(space: SearchSpace, opts: SearchOptions) -> str:
    return opts.name or space.name


def open_study(
    space: SearchSpace, opts: SearchOptions, spec: StorageSpec, *, create: bool = True
) -> optuna.Study:
    """Create or resume the study; refuse a changed teacher pool or a direction mismatch."""
    name = study_name(space, opts)
    storage = open_storage(spec)
    first_min = _first_stage_min(space)
    sampler = make_sampler(space, source=opts.space_file)
    pruner = make_pruner(space, first_min, source=opts.space_file)
    try:
        if create:
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction="maximize",
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise StudyError(
            f"{spec.display}: no study named {name!r}; create it with `run`/`search` first"
        ) from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise StudyError(
            f"{spec.display}: study {name!r} minimises its objective; this tool maximises AP (use another --name)"
        )
    attrs = study.user_attrs
    for tname, entry in space.teachers.items():  # a moved teacher file is not "a changed pool"
        if entry.checkpoint is not None and not Path(entry.checkpoint).is_file():
            raise ConfigError(
                opts.space_file, f"teachers.{tname}.checkpoint", f"{entry.checkpoint}: checkpoint not found"
            )
    phash = pool_hash(space)
    if "pool_hash" not in attrs:
        study.set_user_attr("pool_hash", phash)
        study.set_user_attr("space", to_dict(space))
        study.set_user_attr("space_file", str(opts.space_file) if opts.space_file else None)
        study.set_user_attr("package_version", __version__)
        study.set_user_attr("created", datetime.now(UTC).isoformat(timespec="seconds"))
    elif attrs["pool_hash"] != phash:
        raise StudyError(
            f"{spec.display}: the teacher pool of study {name!r} changed (study {attrs['pool_hash']}, space {phash}); "
            "a study keeps its pool: run with --name NEW to start a new study"
        )
    return study


def _first_stage_min(space: SearchSpace) -> int:
    return min_stage_iterations(
        space.proxy.iterations, space.search.min_stage_fraction, space.search.n_stages[1]
    )


def _seeds(space: SearchSpace, opts: SearchOptions, n: int) -> list[int]:
    base = space.seed if opts.seed is None else opts.seed
    return [base + i for i in range(n)]


# -- recovery -------------------------------------------------------------------------------------
def recover_interrupted(study: optuna.Study, echo: Callable[[str], None]) -> int:
    """Fail and re-queue trials left RUNNING by a killed coordinator (local storages only)."""
    n = 0
    retried = {t.user_attrs.get("retry_of") for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number not in retried:  # retry first: killed before the FAIL below, it is not doubled
            _enqueue_retry(study, t)
        study._storage.set_trial_user_attr(
            t._trial_id, "failure_reason", "interrupted: the process running it stopped"
        )
        study._storage.set_trial_user_attr(t._trial_id, "requeued", True)
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    if n:
        echo(f"re-queued {n} interrupted trial(s); they resume from their last checkpoint")
    return n


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str | None = None) -> None:
    """Queue ``trial``'s curriculum again; its run folder is keyed by the curriculum, so the retry
    resumes from the last checkpoint."""
    keep = {
        k: v
        for k, v in trial.user_attrs.items()
        if k in ("baseline", "curriculum", "curriculum_key", "description")
    }
    keep["retry_of"] = trial.number
    if reason:
        keep["retry_reason"] = reason
    study.enqueue_trial(trial.params, user_attrs=keep, skip_if_exists=False)


def _finished_count(study: optuna.Study) -> int:
    return sum(
        1 for t in study.get_trials(deepcopy=False, states=FINISHED) if not t.user_attrs.get("requeued")
    )


# -- baselines ------------------------------------------------------------------------------------
def enqueue_baselines(space: SearchSpace, study: optuna.Study, opts: SearchOptions) -> None:
    """Enqueue student-only, direct-strongest, weak->strong and heuristic-order trials (once)."""
    if study.user_attrs.get("baselines_enqueued"):
        return
    from curriculum_search.zoo import describe_pool

    infos = describe_pool(
        space, opts.studies_root, device=opts.device, evaluate_missing=True, source=opts.space_file
    )
    study.set_user_attr("teacher_info", [i.as_dict() for i in infos])
    ap = {i.name: float(i.ap or 0.0) for i in infos}
    order: list[str] | None = None
    try:
        order = _heuristic(space, opts, ap)
        study.set_user_attr("heuristic_order", order)
    except Exception as exc:  # the heuristic is a warm start, never a blocker
        log.warning("adaptation-cost heuristic failed (%s); skipping that baseline", exc)
    baselines = baseline_choices(space, ap, order)
    have = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
    for name, params in baselines.items():
        if name in have:  # enqueued by a start that was killed before the end of this loop
            continue
        if params is None:  # student-only: carry a full parameter set (see baselines.py)
            params = student_only_params(space, ap)
        study.enqueue_trial(params, user_attrs={"baseline": name})
    study.set_user_attr("baselines_enqueued", True)
    opts.echo(f"enqueued baselines: {', '.join(baselines)}")


def _heuristic(space: SearchSpace, opts: SearchOptions, ap: dict[str, float]) -> list[str]:
    import torch

    from curriculum_search.curriculum.datasets import build_datasets
    from curriculum_search.curriculum.trainer import load_teacher
    from curriculum_search.data import collate_detection
    from curriculum_search.models import build_detector
    from curriculum_search.search.encoding import teacher_refs
    from curriculum_search.search.heuristic import heuristic_order

    data = build_datasets(
        space.data,
        class_names=space.student.class_names if space.data.kind == "coco" else None,
        cache_root=opts.studies_root / "_cache",
        base_dir=opts.studies_root,
        source=opts.space_file,
    )
    n = min(32, len(data.train))  # type: ignore[arg-type]
    images, _ = collate_detection([data.train_base.get(i) for i in range(n)])
    torch.manual_seed(space.seed)
    student = build_detector(space.student, source=opts.space_file)
    refs = teacher_refs(space, opts.studies_root)
    teachers = {
        t: load_teacher(refs[t], t, opts.studies_root, opts.space_file) for t in space.search_teachers
    }
    return heuristic_order(student, teachers, images, ap, space.search.n_stages[1])


# -- the coordinator -------------------------------------------------------------------------------
@dataclass
class _Running:
    trial: optuna.Trial
    choice: CurriculumChoice
    proc: subprocess.Popen[bytes]
    run_dir: Path
    started: float
    log_file: Any
    slot: int


def run_search(space: SearchSpace, opts: SearchOptions, *, enqueue: bool = True) -> SearchSummary:
    """Run (or resume) the study until it has ``trials`` finished trials (or the timeout)."""
    name = study_name(space, opts)
    spec = storage_spec(opts.studies_root, name, opts.storage)
    local = not spec.is_server
    lock = (
        coordinator_lock(spec.study_dir) if local and spec.journal_path is None else contextlib.nullcontext()
    )
    with lock:
        study = open_study(space, opts, spec)
        _ensure_zoo(space, opts)
        if local and spec.journal_path is None:
            recover_interrupted(study, opts.echo)
        target = opts.trials or int(study.user_attrs.get("target_trials", space.trials))
        if opts.trials:
            study.set_user_attr("target_trials", opts.trials)
        elif "target_trials" not in study.user_attrs:
            study.set_user_attr("target_trials", space.trials)
        if enqueue:
            enqueue_baselines(space, study, opts)
        _coordinate(space, study, spec, opts, target)
    return summarize(study, spec)


def _ensure_zoo(space: SearchSpace, opts: SearchOptions) -> None:
    """Train zoo teachers this host does not have yet (each host of a multi-host study needs them)."""
    from curriculum_search.search.encoding import zoo_checkpoint_path
    from curriculum_search.zoo import build_zoo

    missing = [
        n
        for n, e in space.teachers.items()
        if e.zoo is not None and not zoo_checkpoint_path(space, n, opts.studies_root).is_file()
    ]
    if missing:
        opts.echo(f"training zoo teacher(s) first: {', '.join(missing)}")
        build_zoo(
            space,
            opts.studies_root,
            cache=opts.cache,
            device=opts.device,
            threads=opts.threads,
            progress=opts.progress,
            source=opts.space_file,
        )


def _coordinate(
    space: SearchSpace, study: optuna.Study, spec: StorageSpec, opts: SearchOptions, target: int
) -> None:
    t_start = time.time()
    timeout = opts.timeout_s if opts.timeout_s is not None else space.timeout_s
    workers = max(1, opts.workers)
    threads = opts.threads or max(1, (os.cpu_count() or 1) // workers)
    gpus = _gpus(opts.device)
    running: dict[int, _Running] = {}
    waiting_reuse: list[tuple[optuna.Trial, CurriculumChoice]] = []
    done = _finished_count(study)
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
    stop_heartbeat = threading.Event()
    hb = _start_heartbeat(study, running, stop_heartbeat) if spec.is_server else None
    try:
        while True:
            done = _finished_count(study)
            out_of_time = timeout is not None and time.time() - t_start > timeout
            free_slots = sorted(set(range(workers)) - {r.slot for r in running.values()})
            while (
                not out_of_time
                and len(running) + len(waiting_reuse) < workers
                and done + len(running) + len(waiting_reuse) < target
            ):
                if spec.is_server:
                    optuna.storages.fail_stale_trials(study)
                trial = study.ask()
                choice = _decode(trial, space)
                prepared = _prepare_trial(space, study, trial, choice, opts)
                if prepared == "reused":
                    done += 1
                    bar.update(1)
                    line = f"#{trial.number:<3} {trial.user_attrs.get('baseline') or 'search':<16} same curriculum as #{trial.user_attrs.get('reused_from')}: result reused  {choice.describe()}"
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
                running[trial.number] = _launch(space, study, spec, trial, choice, opts, slot, threads, gpus)
            if not running and not waiting_reuse:
                break
            time.sleep(0.25)
            if workers == 1 and running:
                _update_iteration_bar(it_bar, next(iter(running.values())))
            for number, r in list(running.items()):
                if r.proc.poll() is None:
                    continue
                del running[number]
                line = _finish(study, r)
                if not r.trial.user_attrs.get("requeued"):  # a re-queued trial is counted by its retry
                    bar.update(1)
                it_bar.reset()
                opts.echo(line) if not opts.progress else bar.write(line)
            for trial, choice in list(waiting_reuse):
                if choice.key not in {r.choice.key for r in running.values()}:
                    waiting_reuse.remove((trial, choice))
                    if _prepare_trial(space, study, trial, choice, opts) == "reused":
                        bar.update(1)
                    else:  # the twin did not complete: run it ourselves
                        slot = min(set(range(workers)) - {r.slot for r in running.values()})
                        running[trial.number] = _launch(
                            space, study, spec, trial, choice, opts, slot, threads, gpus
                        )
    except BaseException:
        for r in running.values():  # leave nothing orphaned; their checkpoints stay for the retry
            r.proc.terminate()
        for r in running.values():
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
        raise
    finally:
        stop_heartbeat.set()
        if hb is not None:
            hb.join(timeout=5)
        it_bar.close()
        bar.close()


def _gpus(device: str | None) -> list[str]:
    if device is not None and device.startswith("cpu"):
        return []
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _start_heartbeat(
    study: optuna.Study, running: dict[int, _Running], stop: threading.Event
) -> threading.Thread:
    storage = study._storage

    def beat() -> None:
        while not stop.wait(10):
            for r in list(running.values()):
                try:
                    storage.record_heartbeat(r.trial._trial_id)  # type: ignore[attr-defined]
                except Exception as exc:  # pragma: no cover - network hiccup
                    log.debug("heartbeat failed: %s", exc)

    th = threading.Thread(target=beat, name="heartbeat", daemon=True)
    th.start()
    return th


def _decode(trial: optuna.Trial, space: SearchSpace) -> CurriculumChoice:
    choice = suggest_curriculum(trial, space)  # fixed parameter set in every trial
    if trial.user_attrs.get("baseline") == STUDENT_ONLY:
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
    trial.set_user_attr("curriculum", choice.as_dict())
    trial.set_user_attr("curriculum_key", choice.key)
    trial.set_user_attr("description", choice.describe())
    trial.set_user_attr("stage_boundaries", _boundaries(choice))
    gflops = {i["name"]: float(i.get("gflops") or 0.0) for i in study.user_attrs.get("teacher_info", [])}
    student_gflops = float(study.user_attrs.get("student_gflops") or _student_gflops(space, study))
    cost = proxy_cost(choice, gflops, student_gflops) if gflops or choice.is_student_only else 0.0
    trial.set_user_attr("proxy_cost", cost)
    cap = space.constraints.max_proxy_cost
    if cap is not None:
        trial.set_constraint("proxy_cost", cost - cap)
        if cost > cap:
            trial.set_user_attr(
                "failure_reason", f"infeasible: proxy cost {cost:.4g} > max_proxy_cost {cap:.4g}"
            )
            study.tell(trial, state=TrialState.PRUNED)
            return "infeasible"
    twins = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("curriculum_key") == choice.key and t.number != trial.number
    ]
    if twins:
        twin = twins[0]
        trial.set_user_attr("reused_from", twin.number)
        for k in ("metrics", "seed_values", "run_dir"):
            if k in twin.user_attrs:
                trial.set_user_attr(k, twin.user_attrs[k])
        for step, v in twin.intermediate_values.items():
            trial.report(v, step)
        study.tell(trial, twin.value)
        return "reused"
    running_twins = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("curriculum_key") == choice.key and t.number != trial.number
    ]
    if running_twins:
        return "wait"
    return "run"


def _boundaries(choice: CurriculumChoice) -> list[int]:
    out, acc = [0], 0
    for s in choice.stages:
        acc += s.iterations
        out.append(acc)
    if len(out) == 1:
        out.append(choice.total_iterations)
    return out


def _student_gflops(space: SearchSpace, study: optuna.Study) -> float:
    from curriculum_search.models import build_detector
    from curriculum_search.models.cost import measure_cost

    cost = measure_cost(
        build_detector(space.student.with_updates(weights=None)), space.student.image_size, iters=2, warmup=1
    )
    study.set_user_attr("student_gflops", cost.gflops)
    study.set_user_attr("student_cost", cost.as_dict())
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
    gpus: list[str],
) -> _Running:
    seeds = _seeds(space, opts, space.proxy.seeds)
    recipe = build_recipe(
        space,
        choice,
        iterations=space.proxy.iterations,
        proxy=True,
        seed=seeds[0],
        studies_root=opts.studies_root,
    )
    run_dir = spec.study_dir / "trials" / f"{choice.key}-s{seeds[0]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    trial.set_user_attr("run_dir", str(run_dir.relative_to(spec.study_dir)))
    job = {
        "study": study.study_name,
        "storage": {
            "url": spec.url,
            "study_dir": str(spec.study_dir),
            "sqlite_path": str(spec.sqlite_path) if spec.sqlite_path else None,
            "journal_path": str(spec.journal_path) if spec.journal_path else None,
        },
        "trial_id": trial._trial_id,
        "trial_number": trial.number,
        "recipe": recipe_to_dict(recipe),
        "space": to_dict(space),
        "first_stage_iterations": _first_stage_min(space),
        "run_dir": str(run_dir),
        "seeds": seeds,
        "prune": True,
        "cache": {**to_dict(opts.cache), "root": str(opts.cache.root) if opts.cache.root else None},
        "cache_root": str(opts.studies_root / "_cache"),
        "base_dir": str(opts.studies_root),
        "source": str(opts.space_file) if opts.space_file else None,
        "device": opts.device,
        "threads": threads,
    }
    job_file = run_dir / f"job-{trial.number}.json"
    atomic_write_text(job_file, json.dumps(job))
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    log_file = open(run_dir / "trial.log", "ab")  # noqa: SIM115 - closed in _finish
    proc = subprocess.Popen(
        [sys.executable, "-m", "curriculum_search.search.trial_worker", str(job_file)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    return _Running(trial, choice, proc, run_dir, time.time(), log_file, slot)


def _die_with_parent() -> None:
    """Linux: the trial process gets SIGKILL when its coordinator dies (no orphan keeps writing)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _update_iteration_bar(bar: Any, r: _Running) -> None:
    path = r.run_dir / "progress.json"
    try:
        p = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    bar.total = p["total"]
    bar.n = p["iteration"]
    bar.set_description(f"trial #{r.trial.number} stage {p['stage'] + 1}")
    bar.refresh()


def _finish(study: optuna.Study, r: _Running) -> str:
    r.log_file.close()
    trial = r.trial
    wall = time.time() - r.started
    trial.set_user_attr("wall_time_s", round(wall, 2))
    try:
        result = json.loads((r.run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        code = r.proc.returncode
        killed = code in (-9, 137)
        why = "killed (out of memory?)" if killed else f"crashed with exit code {code}"
        result = {"state": "fail", "reason": f"trial process {why}; see {r.run_dir / 'trial.log'}"}
        # SIGKILL is mostly the OOM killer or an operator, rarely the curriculum itself: retry once
        # (from the last checkpoint); a retry that is killed again fails for good
        if killed and trial.user_attrs.get("retry_reason") != "killed":
            _enqueue_retry(study, trial, reason="killed")
            trial.set_user_attr("requeued", True)
            result["reason"] += "; re-queued once, the retry resumes from the last checkpoint"
    label = trial.user_attrs.get("baseline") or "search"
    desc = r.choice.describe()
    if result["state"] == "complete":
        trial.set_user_attr("metrics", result.get("metrics", {}))
        trial.set_user_attr("seed_values", result.get("seed_values", []))
        trial.set_user_attr("teacher_forwards", result.get("teacher_forwards", 0))
        study.tell(trial, float(result["value"]))
        best = study.best_value
        return (
            f"#{trial.number:<3} {label:<16} AP {result['value']:.3f} (best {best:.3f})  {wall:5.0f}s  {desc}"
        )
    if result["state"] == "pruned":
        trial.set_user_attr("pruned_at", result.get("pruned_at"))
        study.tell(trial, state=TrialState.PRUNED)
        ap = result.get("value")
        return f"#{trial.number:<3} {label:<16} pruned at iteration {result.get('pruned_at')} (AP {ap if ap is None else f'{ap:.3f}'})  {wall:5.0f}s  {desc}"
    trial.set_user_attr("failure_reason", result.get("reason", "unknown"))
    study.tell(trial, state=TrialState.FAIL)
    return f"#{trial.number:<3} {label:<16} FAILED: {result.get('reason')}  {desc}"


# -- results ------------------------------------------------------------------------------------------
def best_trial(study: optuna.Study) -> FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return (
        max(done, key=lambda t: (t.value if t.value is not None else -math.inf, -t.number)) if done else None
    )


def summarize(study: optuna.Study, spec: StorageSpec) -> SearchSummary:
    bt = best_trial(study)
    return SearchSummary(
        study.study_name,
        spec.display,
        _finished_count(study),
        bt.number if bt else None,
        bt.value if bt else None,
        bt.user_attrs.get("description") if bt else None,
    )


def trial_recipe(
    space: SearchSpace, study: optuna.Study, trial: FrozenTrial, studies_root: Path, *, proxy: bool = False
) -> Recipe:
    """The recipe of ``trial``'s curriculum at proxy or full length, with provenance."""
    choice = choice_from_dict(trial.user_attrs["curriculum"])
    phase = space.proxy if proxy else space.full
    seed = space.seed
    recipe = build_recipe(
        space, choice, iterations=phase.iterations, proxy=proxy, seed=seed, studies_root=studies_root
    )
    import torch
    import torchvision

    prov = dict(recipe.provenance)
    prov.update(
        study=study.study_name,
        trial=trial.number,
        baseline=trial.user_attrs.get("baseline"),
        proxy_ap=trial.value,
        data_hash=stable_hash(to_dict(space.data)),
        exported=datetime.now(UTC).isoformat(timespec="seconds"),
        versions={
            "curriculum_search": __version__,
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "optuna": str(optuna.__version__),
        },
    )
    return replace(recipe, name=f"{study.study_name}-trial{trial.number}", provenance=prov)


def space_of(study: optuna.Study) -> SearchSpace:
    if "space" not in study.user_attrs:
        raise StudyError(
            f"study {study.study_name!r} was not created by curriculum_search (no space attribute)"
        )
    return space_from_dict(study.user_attrs["space"])


def export_recipe(
    study_name_: str,
    storage: str | None,
    studies_root: Path,
    trial_number: int | None = None,
    proxy: bool = False,
) -> str:
    """YAML text of the best (or given) trial's recipe."""
    spec = storage_spec(studies_root, study_name_, storage)
    study = load_study_readonly(spec, study_name_)
    if trial_number is None:
        trial = best_trial(study)
        if trial is None:
            raise StudyError(f"study {study_name_!r} has no completed trial yet")
    else:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial_number]
        if not matches:
            raise StudyError(f"study {study_name_!r} has no trial {trial_number}")
        trial = matches[0]
        if "curriculum" not in trial.user_attrs:
            raise StudyError(
                f"trial {trial_number} of {study_name_!r} has no decoded curriculum (it never started)"
            )
    recipe = trial_recipe(space_of(study), study, trial, studies_root, proxy=proxy)
    return dump_yaml(recipe_to_dict(recipe))


# -- full run -------------------------------------------------------------------------------------------
def run_full(space: SearchSpace, opts: SearchOptions) -> RunResult:
    """Train the best curriculum at full length into ``<study>/full`` (resumes; restarts if the best changed)."""
    name = study_name(space, opts)
    spec = storage_spec(opts.studies_root, name, opts.storage)
    study = load_study_readonly(spec, name)
    trial = best_trial(study)
    if trial is None:
        raise StudyError(f"study {name!r} has no completed trial: nothing to train")
    recipe = trial_recipe(space, study, trial, opts.studies_root, proxy=False)
    out = spec.study_dir / "full"
    save_recipe(recipe, spec.study_dir / "best_recipe.yaml")
    old = out / "recipe.yaml"
    if old.is_file():
        from curriculum_search.curriculum.recipe import load_recipe

        try:
            same = recipe_hash(load_recipe(old)) == recipe_hash(recipe)
        except Exception:
            same = False
        if not same:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            out.rename(spec.study_dir / f"full-previous-{stamp}")
            opts.echo(f"the best curriculum changed: previous full run kept in full-previous-{stamp}/")
    status = out / "status.json"
    out.mkdir(parents=True, exist_ok=True)
    _status(status, "running", trial.number)
    opts.echo(
        f"full run of trial #{trial.number}: {trial.user_attrs.get('description')} ({recipe.total_iterations} iterations)"
    )
    try:
        result = run_recipe(
            recipe,
            RunOptions(
                out_dir=out,
                cache_root=opts.studies_root / "_cache",
                base_dir=opts.studies_root,
                source=opts.space_file,
                cache=opts.cache,
                progress=opts.progress,
                device=opts.device,
                threads=opts.threads,
            ),
        )
    except BaseException as exc:
        _status(
            status,
            "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted",
            trial.number,
            str(exc)[:300],
        )
        raise
    _status(status, "done", trial.number)
    return result


def _status(path: Path, state: str, trial: int, error: str | None = None) -> None:
    atomic_write_text(
        path,
        json.dumps(
            {
                "state": state,
                "trial": trial,
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "error": error,
            }
        ),
    )


# -- listing ---------------------------------------------------------------------------------------------
@dataclass
class StudyRow:
    name: str
    storage: str
    state: str
    best_ap: float | None
    finished: int
    pruned: int
    failed: int
    running: int
    target: int | None
    full_ap: float | None
    updated: str | None


def list_studies(studies_root: Path, storage: str | None = None) -> list[StudyRow]:
    """Every study under ``studies_root`` (and in ``storage``), read-only."""
    rows: list[StudyRow] = []
    if studies_root.is_dir():
        for db in sorted(studies_root.glob("*/study.db")):
            rows.extend(_rows(storage_spec(studies_root, db.parent.name, None), studies_root))
    if storage:
        rows.extend(_rows(storage_spec(studies_root, "_remote", storage), studies_root))
    return rows


def _rows(spec: StorageSpec, studies_root: Path) -> list[StudyRow]:
    from curriculum_search.search.storage import open_readonly

    try:
        summaries = optuna.get_all_study_summaries(open_readonly(spec), include_best_trial=False)
    except Exception as exc:
        return [
            StudyRow(
                spec.study_dir.name,
                spec.display,
                f"unreadable: {str(exc).splitlines()[0][:80]}",
                None,
                0,
                0,
                0,
                0,
                None,
                None,
                None,
            )
        ]
    out = []
    for s in summaries:
        study = load_study_readonly(spec, s.study_name)
        trials = study.get_trials(deepcopy=False)
        count = {st: sum(1 for t in trials if t.state == st) for st in TrialState}
        bt = best_trial(study)
        target = study.user_attrs.get("target_trials")
        done = sum(1 for t in trials if t.state in FINISHED and not t.user_attrs.get("requeued"))
        finished = done
        full = studies_root / s.study_name / "full" / "metrics.json"
        full_ap = json.loads(full.read_text()).get("ap") if full.is_file() else None
        updated = max(
            (t.datetime_complete or t.datetime_start for t in trials if t.datetime_start), default=None
        )
        state = (
            "running" if count[TrialState.RUNNING] else ("done" if target and done >= target else "paused")
        )
        if full_ap is not None:
            state = "done + full run"
        out.append(
            StudyRow(
                s.study_name,
                spec.display,
                state,
                bt.value if bt else None,
                finished,
                count[TrialState.PRUNED],
                count[TrialState.FAIL],
                count[TrialState.RUNNING],
                target,
                full_ap,
                updated.isoformat(timespec="seconds") if updated else None,
            )
        )
    return out


def format_studies(rows: list[StudyRow]) -> str:
    if not rows:
        return "no studies yet: start one with `python -m curriculum_search run`"
    head = f"{'study':<20}{'state':<18}{'best AP':>8}{'done':>6}{'pruned':>7}{'failed':>7}{'running':>8}{'full AP':>8}  updated (UTC)"
    lines = [head, "-" * len(head)]
    for r in rows:
        best = f"{r.best_ap:.3f}" if r.best_ap is not None else "-"
        full = f"{r.full_ap:.3f}" if r.full_ap is not None else "-"
        done = f"{r.finished}/{r.target}" if r.target else str(r.finished)
        lines.append(
            f"{r.name:<20}{r.state:<18}{best:>8}{done:>6}{r.pruned:>7}{r.failed:>7}{r.running:>8}{full:>8}  {r.updated or '-'}"
        )
    return "\n".join(lines)


def study_status(name: str, studies_root: Path, storage: str | None = None) -> str:
    """A readable report of one study: counts, top trials, baselines, full run."""
    spec = storage_spec(studies_root, name, storage)
    study = load_study_readonly(spec, name)
    trials = study.get_trials(deepcopy=False)
    lines = [f"study {name}  ({spec.display})"]
    count = {st.name.lower(): sum(1 for t in trials if t.state == st) for st in TrialState}
    lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in count.items() if v))
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -(t.value or 0))
    if done:
        lines.append("top trials:")
        for t in done[:5]:
            lines.append(
                f"  #{t.number:<4} AP {t.value:.4f}  {t.user_attrs.get('baseline') or 'search':<16} {t.user_attrs.get('description', '')}"
            )
        base = [t for t in done if t.user_attrs.get("baseline")]
        if base:
            lines.append("baselines:")
            for t in sorted(base, key=lambda t: t.number):
                lines.append(f"  {t.user_attrs['baseline']:<18} AP {t.value:.4f}  (#{t.number})")
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("requeued")]
    for t in failed[-3:]:
        lines.append(f"failed #{t.number}: {t.user_attrs.get('failure_reason', '?')}")
    full = spec.study_dir / "full"
    if (full / "metrics.json").is_file():
        m = json.loads((full / "metrics.json").read_text())
        lines.append(f"full run: AP {m['ap']:.4f} AP50 {m['ap50']:.4f} ({full / 'student.pt'})")
    elif (full / "status.json").is_file():
        lines.append(f"full run: {json.loads((full / 'status.json').read_text())['state']}")
    return "\n".join(lines)


def load_space_for_cli(path: Path) -> SearchSpace:
    return load_space(path)
