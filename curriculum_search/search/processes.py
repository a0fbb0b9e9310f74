"""Trial processes: start one per run, assign GPUs and threads, keep server heartbeats.

Shared by the search coordinator and the selection race: each run is a fresh
``python -m curriculum_search.search.trial_worker JOB.json`` process (all memory, GPU memory
included, is freed when it ends; a crash or an out-of-memory kill cannot take the coordinator down).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.trial import TrialState

from curriculum_search.search.failures import low_disk
from curriculum_search.search.protocol import TrialJob, TrialResult
from curriculum_search.search.storage import beat_every_s, secret_env

log = logging.getLogger(__name__)


@dataclass
class Process:
    """A running trial process and what the coordinator needs to finish it."""

    proc: subprocess.Popen[bytes]
    run_dir: Path
    started: float
    log_file: IO[bytes]
    slot: int

    def done(self) -> bool:
        return self.proc.poll() is not None

    def kill_if_over(self, limit_s: float) -> bool:
        """SIGKILL the process when it has run longer than ``limit_s`` (hung: SIGSTOP, deadlock,
        stale mount; SIGKILL also ends a stopped process); whether it was killed."""
        if self.done() or time.time() - self.started <= limit_s:
            return False
        self.proc.kill()
        self.proc.wait()
        return True

    def close(self) -> float:
        """Close the log; the wall time in seconds."""
        self.log_file.close()
        return time.time() - self.started


def finish(process: Process) -> tuple[TrialResult, float, bool]:
    """Close a finished process: its result (a failure when it wrote none), wall time, and whether
    it was SIGKILLed (OOM killer, operator) — a kill is not the run's fault."""
    wall = process.close()
    code = process.proc.returncode
    killed = code in (-9, 137)
    try:
        return TrialResult.read(process.run_dir), wall, killed
    except (OSError, ValueError, TypeError):
        why = "killed (out of memory?)" if killed else f"crashed with exit code {code}"
        result = TrialResult("fail", reason=f"trial process {why}; see {process.run_dir / 'trial.log'}")
        if low_disk(process.run_dir):  # it could not even write its result
            result.environment = "disk full"
        return result, wall, killed


def gpus(device: str | None) -> list[str]:
    """The GPUs to spread trial processes over, as ``CUDA_VISIBLE_DEVICES`` entries of this
    machine (none on a CPU-only machine or for ``cpu``).

    Each trial process sees exactly one of them, so the entries are the ones *this* process sees:
    under ``CUDA_VISIBLE_DEVICES=2,3`` they are ``2`` and ``3`` (not ``0`` and ``1``, which would be
    other physical GPUs); ``cuda:N`` keeps only this process' N-th GPU.
    """
    if device is not None and device.startswith("cpu"):
        return []
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        visible = [str(i) for i in range(count)]
    else:
        visible = [e.strip() for e in env.split(",") if e.strip()][:count]
    if device is not None and device.startswith("cuda:"):
        n = int(device.split(":", 1)[1])
        return visible[n : n + 1]
    return visible


#: Most trial processes ``--workers`` picks by itself on a CPU (each holds a model, its optimizer
#: and a data loader: about 1 GB at 128 px).
AUTO_CPU_WORKERS_MAX = 4


def worker_count(workers: int | None, threads: int | None, device: str | None) -> int:
    """Trial processes at once: ``workers``, or by default one per GPU, or on a CPU one per
    ``threads`` cores (one per core by default), at most :data:`AUTO_CPU_WORKERS_MAX`: small
    detectors use several cores poorly, so on 2 cores two 1-thread trials finish 1.8x more
    trials per hour than one 2-thread trial (README, "Scaling")."""
    if workers is not None:
        return max(1, workers)
    gpu_ids = gpus(device)
    if gpu_ids:
        return len(gpu_ids)
    return max(1, min(AUTO_CPU_WORKERS_MAX, (os.cpu_count() or 1) // max(1, threads or 1)))


def thread_count(threads: int | None, workers: int) -> int:
    """CPU threads per trial process: ``threads`` or the cores split between the workers."""
    return threads or max(1, (os.cpu_count() or 1) // max(1, workers))


def pinned_device(device: str | None) -> str | None:
    """The device of a trial process that sees one GPU (``CUDA_VISIBLE_DEVICES=<one>``): that GPU
    is its ``cuda:0``, so a requested ``cuda:N`` becomes ``cuda`` (``cuda:N`` would name a GPU the
    process cannot see); anything else is kept."""
    return "cuda" if device is not None and device.startswith("cuda:") else device


def spawn(job: TrialJob, run_dir: Path, slot: int, threads: int, gpu_ids: list[str], tag: str) -> Process:
    """Write ``job`` into ``run_dir`` and start its trial process (output appended to ``trial.log``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env.update(secret_env(job.storage.spec()))  # the database password, never in the job file
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = gpu_ids[slot % len(gpu_ids)]
        device = pinned_device(job.device or job.recipe.get("train", {}).get("device"))
        if device != job.device:
            job = dataclasses.replace(job, device=device)
    job_file = run_dir / f"job-{tag}.json"
    job.write(job_file)
    log_file = open(run_dir / "trial.log", "ab")  # noqa: SIM115 - closed by Process.close
    proc = subprocess.Popen(
        [sys.executable, "-m", "curriculum_search.search.trial_worker", str(job_file)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
    )
    return Process(proc, run_dir, time.time(), log_file, slot)


def stop_all(processes: Iterable[Process]) -> None:
    """Terminate (then kill) processes; their checkpoints stay for a retry."""
    procs = list(processes)
    for p in procs:
        p.proc.terminate()
        with contextlib.suppress(OSError):  # a stopped (SIGSTOP) process handles SIGTERM once resumed
            p.proc.send_signal(signal.SIGCONT)
    for p in procs:
        try:
            p.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.proc.kill()


def die_with_parent() -> None:
    """Linux: the trial process gets SIGKILL when its coordinator dies (no orphan keeps writing)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def claim(study: optuna.Study, server: bool) -> optuna.Trial:
    """``study.ask()``; on a server database the trial's heartbeat starts at once, before the
    (possibly long) preparation: a host killed in its first seconds leaves no trial RUNNING
    forever (Optuna only fails stale trials that have a heartbeat)."""
    trial = study.ask()
    if server:
        try:
            study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        except Exception as exc:  # pragma: no cover - network hiccup: the heartbeat thread retries
            log.debug("first heartbeat failed: %s", exc)
    return trial


def still_ours(study: optuna.Study, trial: optuna.Trial) -> bool:
    """False when another host finished the trial meanwhile (this coordinator was paused past the
    heartbeat grace period and the trial was failed and retried there): its result is dropped."""
    return study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING


def start_heartbeat(
    study: optuna.Study, trial_ids: Callable[[], list[int]], stop: threading.Event
) -> threading.Thread:
    """Record Optuna heartbeats of the running trials every :func:`beat_every_s` seconds (10 s by
    default; server databases)."""
    storage = study._storage
    every = beat_every_s()

    def beat() -> None:
        while not stop.wait(every):
            for tid in trial_ids():
                try:
                    storage.record_heartbeat(tid)  # type: ignore[attr-defined]
                except Exception as exc:  # pragma: no cover - network hiccup
                    log.debug("heartbeat failed: %s", exc)

    th = threading.Thread(target=beat, name="heartbeat", daemon=True)
    th.start()
    return th


@contextlib.contextmanager
def heartbeats(study: optuna.Study, trial_ids: Callable[[], list[int]], enabled: bool) -> Iterator[None]:
    """Keep the heartbeats of the running trials while the block runs (``enabled``: server storage)."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    thread = start_heartbeat(study, trial_ids, stop)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def progress_of(run_dir: Path) -> dict[str, Any] | None:
    """The trainer's ``progress.json`` of a run (iteration, total, stage), if readable."""
    import json

    try:
        return json.loads((run_dir / "progress.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


__all__ = [
    "Process",
    "die_with_parent",
    "finish",
    "gpus",
    "heartbeats",
    "job_for",
    "progress_of",
    "spawn",
    "start_heartbeat",
    "stop_all",
    "thread_count",
    "worker_count",
]


def job_for(
    *,
    space: Any,
    opts: Any,
    spec: Any,
    study_name: str,
    trial: optuna.Trial,
    recipe: Any,
    run_dir: Path,
    seeds: list[int],
    threads: int,
    prune: bool,
    first_stage_iterations: int,
    report_data: dict[str, Any] | None = None,
) -> TrialJob:
    """The job of one run of ``trial`` (search trial or race run)."""
    from curriculum_search.curriculum.recipe import recipe_to_dict
    from curriculum_search.search.protocol import StorageRef
    from curriculum_search.utils.config import to_dict

    return TrialJob(
        study=study_name,
        storage=StorageRef.of(spec),
        trial_id=trial._trial_id,
        trial_number=trial.number,
        recipe=recipe_to_dict(recipe),
        space=to_dict(space),
        first_stage_iterations=first_stage_iterations,
        run_dir=str(run_dir),
        seeds=seeds,
        prune=prune,
        cache={**to_dict(opts.cache), "root": str(opts.cache.root) if opts.cache.root else None},
        cache_root=str(opts.studies_root / "_cache"),
        base_dir=str(opts.studies_root),
        source=str(opts.space_file) if opts.space_file else None,
        device=opts.device,
        threads=threads,
        report_data=report_data,
    )
