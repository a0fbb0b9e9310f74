"""Soak test: run a tiny study end to end while SIGKILLing it at random moments, then check that
nothing was lost.

    python benchmarks/soak.py [--kills 20] [--seconds 900] [--seed 0] [--workdir DIR]
    python benchmarks/soak.py --short          # 6 kills, about 4 minutes (run by tests/test_soak.py)
    python benchmarks/soak.py --postgres [--short] [--kills 3] [--grace 12]   # see "PostgreSQL" below

The job is the real command, ``python -m curriculum_search run`` (zoo build, search with a trial
process per trial, selection race whose last rung is the full run, export), started in its own session with one
CPU thread at low priority. Each kill comes only after the job made durable progress since it
(re)started (a checkpoint, a trial result or a teacher's ``info.json`` written), so the job always
advances; then the soak, depending on the kill planned:

* ``group``  — SIGKILL of the whole process group (coordinator and trial process) at a random moment;
* ``write``  — the group is frozen (SIGSTOP) at random moments until it is caught while a checkpoint
  (``*.pt``) is being written, i.e. while its temporary file exists, and killed right there;
* ``worker`` — SIGKILL of the trial process only (what the kernel's OOM killer does); the
  coordinator survives and must record that trial as FAILED and go on;
* ``coordinator`` — SIGKILL of the coordinator only while trials run: its trial processes must
  die with it (no orphan keeps writing), and the restarted job re-queues their trials.

The job runs ``--workers 2`` (two trial processes at once) unless ``--workers`` says otherwise.

The last ``max(2, kills // 5)`` kills wait for the selection race (its last rung is the full run). After a
group kill the job is restarted with the same command (it resumes). After the last kill it runs to
the end, and these invariants are checked (each printed as PASS/FAIL; exit status 1 if any fails):

* ``job_finished``: the last run exited 0 and the full run wrote its metrics;
* ``no_trial_running``: no trial is left RUNNING;
* ``finished_trials_intact``: every trial seen finished after a kill is still there, unchanged
  (state, value, parameters, intermediate values, attributes);
* ``no_trial_counted_twice``: exactly ``trials`` finished trials count (re-queued ones excluded), each
  re-queued trial has exactly one retry, no curriculum was completed twice without reuse;
* ``retries_keep_curriculum``: every retry has its original's baseline label and, when the original
  was decoded, the same curriculum (a retried baseline never turns into a random curriculum);
* ``no_orphan_trials``: every trial process died with its killed coordinator;
* ``killed_workers_failed``: every trial whose process was killed alone ended FAILED (or, when the
  process was killed after it had written its result, finished with that result);
* ``checkpoints_loadable``: every ``*.pt`` of the study and the zoo loads (sha256 verified when its
  sidecar exists) and every teacher-cache entry decodes;
* ``full_run_same_recipe``: ``full/recipe.yaml``, ``best_recipe.yaml``, the full run's metrics and
  the selected curriculum (the race's decision) all have the same recipe hash; no
  ``full-previous-*`` folder appeared;
* ``full_run_matches_uninterrupted``: the shipped recipe trained again without interruption gives
  the same AP (selection split) and weights as the killed-and-resumed race run that shipped
  (mean weight difference ≤ 1e-5: CPU kernels are not bit-exact across processes);
* ``kills_done``: at least ``--kills`` kills, with every mode and at least one during the full run.

Writes ``WORKDIR/soak_report.json`` (``--workdir`` defaults to ``benchmarks/out/soak``).

**PostgreSQL** (``--postgres``; needs the server binaries, ``benchmarks/pgserver.py``): a throwaway
server on loopback holds the study; two "hosts" share it: host ``a`` runs ``python -m
curriculum_search search --space S --storage URL``, host ``b`` joins with ``worker --storage URL
--study soak`` once the baselines are enqueued; each runs one trial process at a time. Both use one
``--studies-dir``, as hosts sharing a network file system do: the zoo is trained once, and it is the
harder case: a retry resumes in the run folder the killed host trained in, so a folder shared by
two live trial processes (the collision of twin curricula) would show. The hosts get a heartbeat
grace period of ``--grace`` seconds (default 12; ``CURRICULUM_SEARCH_HEARTBEAT_GRACE_S``, the
product's default is 120 s) so that a killed host is noticed in seconds. Each kill waits until the
victim (picked by the seed, then alternating) runs a trial that wrote a checkpoint since the soak
first saw it, while the other host runs, and SIGKILLs the victim's whole process group (its
coordinator and trial process: the host is gone). When more kills follow, the victim is restarted
with its same command once the survivor failed its trials. ``--short`` (1 kill, 4 trials, about a
minute, at most 5; run by tests/test_soak.py) does not restart it. Invariants:

* ``hosts_finished``: every host's last process exited 0 (or is the one killed last);
* ``no_trial_running``, ``finished_trials_intact``, ``no_trial_counted_twice`` (the study reached
  exactly its target), ``retries_keep_curriculum``, ``checkpoints_loadable``: as above;
* ``killed_trials_retried``: each trial of a killed host ended FAILED ("heartbeat lost", re-queued,
  told by no host) and has exactly one retry, finished by a live host with the original's baseline
  label, curriculum and run folder, resuming from the killed run's checkpoint;
* ``one_host_per_trial``: trial processes ran on both hosts; no trial was run or told by two host
  processes, and no run folder was held by trial processes of two hosts at one moment;
* ``no_result_lost``: every result a host told (AP, pruned, failed, reused) is in the study as told,
  every finished trial that counts was told by a host, and no host dropped a result;
* ``kills_done``: ``--kills`` host kills, each while a trial with a checkpoint ran.

Writes ``WORKDIR/soak_report.json``, ``host-<host><start>.log`` per host process (``--workdir``
defaults to ``benchmarks/out/soak-postgres``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STUDY = "soak"
MODES = ("group", "write", "worker", "coordinator")
#: Files whose (re)writing means the job made progress that a restart keeps.
PROGRESS_NAMES = ("result.json", "info.json", "metrics.json")


# -- the study -------------------------------------------------------------------------------------
def make_space(short: bool) -> dict[str, Any]:
    """The smoke-test space (``space/tiny.yaml``: 64 px synthetic shapes, two tiny zoo teachers,
    FCOS MobileNetV3 student) with longer trials, so that kills land inside them."""
    space = yaml.safe_load((ROOT / "space" / "tiny.yaml").read_text())
    for entry in space["teachers"].values():
        entry["zoo"]["iterations"] = 8
    space.update(
        name=STUDY,
        proxy={"iterations": 12 if short else 16, "train_subset": 16, "val_subset": 8, "eval_every": 6},
        full={"iterations": 24 if short else 48},
        trials=4 if short else 10,
    )
    return space


@dataclass
class Config:
    """What the soak does (see the module docstring)."""

    kills: int
    seconds: float
    seed: int
    workdir: Path
    short: bool
    extra_delay_s: float
    probe_timeout_s: float
    workers: int = 2
    #: PostgreSQL mode (see the module docstring): two hosts on one server database, hosts killed
    postgres: bool = False
    #: heartbeat grace period of the hosts in PostgreSQL mode (``CURRICULUM_SEARCH_HEARTBEAT_GRACE_S``)
    grace_s: float = 12.0
    #: the study's storage URL (PostgreSQL mode: the throwaway server's, set when it runs)
    storage: str | None = None

    @property
    def studies(self) -> Path:
        return self.workdir / "studies"

    @property
    def study_dir(self) -> Path:
        return self.studies / STUDY

    @property
    def space_file(self) -> Path:
        return self.workdir / "space.yaml"


@dataclass
class Kill:
    """One kill: when, in which phase, how, and what it hit."""

    number: int
    t: float
    phase: str
    mode: str
    detail: str


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    config: dict[str, Any]
    kills: list[Kill] = field(default_factory=list)
    restarts: int = 0
    checks: list[Check] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)  # trial processes that outlived their coordinator
    killed_trials: list[dict[str, Any]] = field(
        default_factory=list
    )  # PostgreSQL mode: trials of killed hosts

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


# -- processes -------------------------------------------------------------------------------------
def spawn(
    cfg: Config, args: list[str], log: Any, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m curriculum_search ARGS`` on the soak's studies folder with one CPU thread at low
    priority, in a new session (its pid is the process group id); output appended to ``log``."""
    cmd = [
        sys.executable,
        "-m",
        "curriculum_search",
        *args,
        "--studies-dir",
        str(cfg.studies),
        "--threads",
        "1",
        "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    log.write(f"\n=== start {time.strftime('%H:%M:%S')} ===\n".encode())
    log.flush()
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: os.nice(10),
    )


def start_job(cfg: Config, log: Any) -> subprocess.Popen[bytes]:
    """``python -m curriculum_search run`` (the job of the SQLite soak)."""
    return spawn(cfg, ["run", "--space", str(cfg.space_file), "--workers", str(cfg.workers)], log)


def children(pid: int) -> list[int]:
    """Child pids of ``pid`` (``/proc/PID/task/PID/children``, else a scan of ``/proc``)."""
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def trial_workers(pid: int) -> list[tuple[int, int, Path]]:
    """``(pid, trial number, run folder)`` of each trial process the coordinator ``pid`` runs."""
    out = []
    for child in children(pid):
        args = cmdline(child)
        if any("trial_worker" in a for a in args):
            job = Path(args[-2] if not args[-1] else args[-1])  # <run folder>/job-<N>.json
            try:
                number = int(job.name.removeprefix("job-").removesuffix(".json"))
            except ValueError:
                number = -1
            out.append((child, number, job.parent))
    return out


def trial_worker(pid: int) -> tuple[int, int, Path] | None:
    """``(pid, trial number, run folder)`` of the coordinator's (first) running trial process, if any."""
    return next(iter(trial_workers(pid)), None)


def wait_stopped(pids: list[int], timeout: float = 0.5) -> None:
    """Wait until every pid is in state ``T`` (stopped) or gone: SIGSTOP is not synchronous."""
    end = time.time() + timeout
    pending = list(pids)
    while pending and time.time() < end:
        still = []
        for pid in pending:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("T", "t", "Z", "X"):
                still.append(pid)
        pending = still
        if pending:
            time.sleep(0.001)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has exited (or is a zombie); returns those still alive at ``timeout``."""
    end = time.time() + timeout
    alive = list(pids)
    while alive and time.time() < end:
        still = []
        for pid in alive:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in ("Z", "X"):
                still.append(pid)
        alive = still
        if alive:
            time.sleep(0.05)
    return alive


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# -- what is on disk -----------------------------------------------------------------------------------
def phase(cfg: Config, proc: subprocess.Popen[bytes] | None) -> str:
    """``full`` (the selection race, whose last rung is the full run, started), ``trial`` (a trial
    process runs), ``setup`` (zoo, baselines, between)."""
    if (cfg.study_dir / "selection").is_dir() or (cfg.study_dir / "full" / "status.json").is_file():
        return "full"
    if proc is not None and proc.poll() is None and trial_worker(proc.pid) is not None:
        return "trial"
    return "setup"


def _has_checkpoint(run_dir: Path) -> bool:
    return any(p.suffix == ".pt" for p in _walk([run_dir]))


def _walk(roots: list[Path]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            for dirpath, _dirs, files in os.walk(root):
                out.extend(Path(dirpath) / f for f in files)
    return out


def progress_since(roots: list[Path], t: float) -> bool:
    """Whether a checkpoint / result / info / metrics file under ``roots`` was written after ``t``."""
    for p in _walk(roots):
        if p.name.startswith("."):
            continue
        if p.suffix == ".pt" or p.name in PROGRESS_NAMES:
            try:
                if p.stat().st_mtime > t:
                    return True
            except OSError:
                continue
    return False


def checkpoint_temps(roots: list[Path]) -> set[str]:
    """Temporary files of checkpoint writes in progress (or left by a killed write)."""
    return {
        str(p)
        for p in _walk(roots)
        if p.name.startswith(".") and ".pt." in p.name and p.name.endswith(".tmp")
    }


def roots_for(cfg: Config, full: bool) -> list[Path]:
    return (
        [cfg.study_dir / "selection", cfg.study_dir / "full"]
        if full
        else [cfg.study_dir, cfg.studies / "_zoo"]
    )


# -- reading the study ---------------------------------------------------------------------------------
@contextlib.contextmanager
def study_readonly(cfg: Config) -> Iterator[Any]:
    """The study, opened through the read-only path (never writes it)."""
    import optuna

    from curriculum_search.search.storage import open_readonly, storage_spec

    storage = open_readonly(storage_spec(cfg.studies, STUDY, cfg.storage))
    try:
        yield optuna.load_study(study_name=STUDY, storage=storage)
    finally:
        storage.engine.dispose()  # type: ignore[attr-defined]


def read_trials(cfg: Config) -> list[Any]:
    """All trials, read through the read-only path (never writes the study)."""
    with study_readonly(cfg) as study:
        return list(study.get_trials(deepcopy=True))


def fingerprint(t: Any) -> str:
    """Everything that must never change once a trial is finished."""
    keep = ("curriculum_key", "baseline", "failure_reason", "requeued", "retry_of", "reused_from", "metrics")
    return json.dumps(
        {
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "attrs": {k: t.user_attrs.get(k) for k in keep},
        },
        sort_keys=True,
        default=str,
    )


def snapshot(cfg: Config, seen: dict[int, str], violations: list[str]) -> None:
    """Record finished trials; any trial that changed since it was last seen is a violation."""
    if cfg.storage is None and not (cfg.study_dir / "study.db").is_file():
        return
    try:
        trials = read_trials(cfg)
    except Exception as exc:  # study not created yet
        if "no study" not in str(exc).lower() and not isinstance(exc, KeyError):
            violations.append(f"cannot read the study: {type(exc).__name__}: {exc}")
        return
    for t in trials:
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL"):
            fp = fingerprint(t)
            if t.number in seen and seen[t.number] != fp:
                violations.append(f"trial #{t.number} changed after it finished: {seen[t.number]} -> {fp}")
            seen[t.number] = fp
    present = {t.number for t in trials}
    for n in seen:
        if n not in present:
            violations.append(f"finished trial #{n} disappeared")


# -- the kill loop ------------------------------------------------------------------------------------------
def plan(cfg: Config, rng: random.Random) -> list[str]:
    """Modes of the kills in order; the last ``full_quota`` are during the full run (never ``worker``)."""
    full_quota = max(2, cfg.kills // 5)
    n_search = max(0, cfg.kills - full_quota)
    base = list(MODES) * (n_search // len(MODES) + 1)
    search = base[:n_search]
    rng.shuffle(search)
    full = [("write", "group")[i % 2] for i in range(cfg.kills - n_search)]
    return search + full


def wait_until(
    cond: Callable[[], bool], proc: subprocess.Popen[bytes] | None, deadline: float, poll: float = 0.2
) -> bool:
    """Poll ``cond`` until true (True), or until the job ``proc`` (if any) exits or the deadline
    passes (False)."""
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if cond():
            return True
        time.sleep(poll)
    return False


def probe_write_kill(
    proc: subprocess.Popen[bytes], roots: list[Path], stale: set[str], rng: random.Random, timeout: float
) -> str | None:
    """Freeze the job at random moments until one catches a checkpoint write; kill it there.

    Returns the temporary file(s) caught, or None when no write was caught within ``timeout``
    (the job is left running).
    """
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        time.sleep(rng.uniform(0.002, 0.02))
        pids = [proc.pid, *children(proc.pid)]
        try:
            os.killpg(proc.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return None
        killed = False
        try:
            wait_stopped(pids)
            fresh = checkpoint_temps(roots) - stale
            if fresh:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                proc.wait()
                return ", ".join(sorted(Path(f).name for f in fresh))
        finally:
            if not killed:
                os.killpg(proc.pid, signal.SIGCONT)
    return None


def _say(kill: Kill, total: int) -> None:
    print(
        f"kill {kill.number:>2}/{total} at {kill.t:6.1f}s  {kill.phase:<6} {kill.mode:<6} {kill.detail}",
        flush=True,
    )


def begin(cfg: Config) -> tuple[random.Random, float, Report]:
    """The kill schedule's random generator, the start time and an empty report; writes the space."""
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    cfg.space_file.write_text(yaml.safe_dump(make_space(cfg.short), sort_keys=False))
    return random.Random(cfg.seed), time.time(), Report(config={k: str(v) for k, v in asdict(cfg).items()})


def run_soak(cfg: Config) -> Report:
    """Run the job under kills, then check the invariants."""
    rng, t0, report = begin(cfg)
    deadline = t0 + cfg.seconds
    modes = plan(cfg, rng)
    full_start = len(modes) - max(2, cfg.kills // 5)
    seen: dict[int, str] = {}
    violations: list[str] = []
    worker_kills: list[tuple[int, bool]] = []
    stale: set[str] = set()
    log = open(cfg.workdir / "job.log", "ab")  # noqa: SIM115 - closed below
    proc: subprocess.Popen[bytes] | None = None
    since = time.time()
    try:
        while len(report.kills) < len(modes) and time.time() < deadline:
            if proc is None or proc.poll() is not None:
                if proc is not None and proc.returncode >= 0:  # exited by itself
                    report.notes.append(
                        f"the job exited with status {proc.returncode} before kill {len(report.kills) + 1}"
                    )
                    break
                if proc is not None:
                    report.restarts += 1
                proc = start_job(cfg, log)
                since = time.time()
            k = len(report.kills)
            mode = modes[k]
            full = k >= full_start
            roots = roots_for(cfg, full)

            def ready(full: bool = full, roots: list[Path] = roots, since: float = since) -> bool:
                return (not full or phase(cfg, None) == "full") and progress_since(roots, since)

            if not wait_until(ready, proc, deadline):
                continue
            where = phase(cfg, proc)
            if mode in ("worker", "coordinator"):
                job = proc

                def worker_or_full(job: subprocess.Popen[bytes] = job) -> bool:
                    return trial_worker(job.pid) is not None or phase(cfg, None) == "full"

                if not wait_until(worker_or_full, proc, deadline, poll=0.1):
                    continue
                if phase(cfg, None) == "full":  # the search ended first: no trial process to kill
                    modes[k] = mode = "group"
            if mode == "coordinator":
                time.sleep(rng.uniform(0, cfg.extra_delay_s))
                found = trial_worker(proc.pid)
                if found is None or proc.poll() is not None:
                    continue
                orphans = [c for c in children(proc.pid) if any("trial_worker" in a for a in cmdline(c))]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)  # the coordinator alone
                proc.wait()
                survivors = wait_gone(orphans, timeout=15.0)
                for pid in survivors:  # an orphan would keep writing into its run folder
                    report.orphans.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                what = f"coordinator while trial #{found[1]} ran ({len(orphans)} trial process(es))"
                report.kills.append(Kill(k + 1, round(time.time() - t0, 1), where, "coordinator", what))
                _say(report.kills[-1], len(modes))
                snapshot(cfg, seen, violations)
                continue
            if mode == "worker":
                time.sleep(rng.uniform(0, cfg.extra_delay_s))
                found = trial_worker(proc.pid)
                if found is None or proc.poll() is not None:
                    continue
                pid, number, run_dir = found
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                # the coordinator deletes result.json before it starts a trial process: if it is
                # there, this process had finished its work and was exiting (its result counts)
                wrote = (run_dir / "result.json").is_file()
                worker_kills.append((number, wrote))
                what = f"trial #{number}" + (" (after it wrote its result)" if wrote else "")
                report.kills.append(Kill(k + 1, round(time.time() - t0, 1), "trial", "worker", what))
                _say(report.kills[-1], len(modes))
                since = time.time()
                continue
            if mode == "write":
                stale |= checkpoint_temps(roots)
                caught = probe_write_kill(proc, roots, stale, rng, cfg.probe_timeout_s)
                if caught is None:
                    if proc.poll() is not None:
                        continue
                    kill_group(proc)
                    detail = "no checkpoint write caught in time: killed anyway"
                else:
                    detail = f"during the write of {caught}"
                stale |= checkpoint_temps(roots_for(cfg, False))
            else:
                time.sleep(rng.uniform(0, cfg.extra_delay_s))
                if proc.poll() is not None:
                    continue
                kill_group(proc)
                detail = "random moment"
            report.kills.append(
                Kill(k + 1, round(time.time() - t0, 1), "full" if full else where, mode, detail)
            )
            _say(report.kills[-1], len(modes))
            snapshot(cfg, seen, violations)
        # let it finish (restart if the last kill stopped it)
        finish_by = max(deadline, time.time()) + (240 if cfg.short else 600)
        while True:
            if proc is None or (proc.poll() is not None and proc.returncode < 0):
                proc = start_job(cfg, log)
                report.restarts += 1
            try:
                proc.wait(timeout=max(1.0, finish_by - time.time()))
            except subprocess.TimeoutExpired:
                kill_group(proc)
                report.notes.append("the job did not finish in time after the kills")
                break
            if proc.returncode >= 0:
                break
    finally:
        if proc is not None and proc.poll() is None:
            kill_group(proc)
        log.close()
    snapshot(cfg, seen, violations)
    report.checks = check_invariants(cfg, proc, seen, violations, worker_kills, report)
    report.wall_s = round(time.time() - t0, 1)
    return report


# -- invariants ------------------------------------------------------------------------------------------------
def check_invariants(
    cfg: Config,
    proc: subprocess.Popen[bytes] | None,
    seen: dict[int, str],
    violations: list[str],
    worker_kills: list[tuple[int, bool]],
    report: Report,
) -> list[Check]:
    """Check every invariant of the module docstring on the finished study."""
    checks: list[Check] = []
    metrics_path = cfg.study_dir / "full" / "metrics.json"
    rc = proc.returncode if proc is not None else None
    checks.append(
        Check(
            "job_finished",
            rc == 0 and metrics_path.is_file(),
            f"last exit status {rc}, full metrics {metrics_path.is_file()}",
        )
    )
    trials, shared = study_checks(cfg, seen, violations)
    checks += shared
    if trials is None:
        return checks
    n_coord = sum(1 for k in report.kills if k.mode == "coordinator")
    checks.append(
        Check(
            "no_orphan_trials",
            not report.orphans,
            f"orphaned trial processes {report.orphans}"
            if report.orphans
            else f"every trial process died with its coordinator ({n_coord} coordinator kill(s))",
        )
    )
    by_number = {t.number: t for t in trials}
    states = {n: by_number[n].state.name if n in by_number else "missing" for n, _ in worker_kills}
    bad = [
        n
        for n, wrote in worker_kills
        if states[n] != "FAIL" and not (wrote and states[n] in ("COMPLETE", "PRUNED"))
    ]
    reasons = sorted(
        {
            str(by_number[n].user_attrs.get("failure_reason", ""))[:45]
            for n, _ in worker_kills
            if n in by_number
        }
        - {""}
    )
    checks.append(
        Check(
            "killed_workers_failed",
            not bad,
            f"trial: end state {states} ({'; '.join(reasons)}); wrong: {bad}",
        )
    )
    checks.append(checkpoints_loadable(cfg))
    checks.extend(full_run_checks(cfg, trials))
    modes = {k.mode for k in report.kills}
    caught = sum(1 for k in report.kills if k.mode == "write" and k.detail.startswith("during"))
    in_full = sum(1 for k in report.kills if k.phase == "full")
    checks.append(
        Check(
            "kills_done",
            len(report.kills) >= cfg.kills and set(MODES) <= modes and caught >= 1 and in_full >= 1,
            f"{len(report.kills)} kills (wanted {cfg.kills}): "
            + ", ".join(f"{m} {sum(1 for k in report.kills if k.mode == m)}" for m in MODES)
            + f"; {caught} during a checkpoint write, {in_full} during the full run, {report.restarts} restarts",
        )
    )
    return checks


def study_checks(
    cfg: Config, seen: dict[int, str], violations: list[str]
) -> tuple[list[Any] | None, list[Check]]:
    """The study's trials and the invariants both modes check on them (none running, finished ones
    intact, exactly the target counted, retries keep their curriculum); ``None`` and a failed
    ``study_readable`` when the study cannot be read."""
    try:
        trials = read_trials(cfg)
    except Exception as exc:
        return None, [Check("study_readable", False, f"{type(exc).__name__}: {exc}")]
    return trials, [
        no_trial_running(trials),
        finished_trials_intact(seen, violations),
        counted_once(cfg, trials),
        retries_keep_curriculum(trials),
    ]


def no_trial_running(trials: list[Any]) -> Check:
    running = [t.number for t in trials if t.state.name == "RUNNING"]
    waiting = [t.number for t in trials if t.state.name == "WAITING"]
    return Check(
        "no_trial_running", not running, f"running {running}; waiting (queued, never started) {waiting}"
    )


def finished_trials_intact(seen: dict[int, str], violations: list[str]) -> Check:
    return Check(
        "finished_trials_intact",
        not violations,
        "; ".join(violations[:5])
        or f"{len(seen)} finished trials seen after kills, all unchanged at the end",
    )


def retries_keep_curriculum(trials: list[Any]) -> Check:
    """A retry carries its original's label and (once the original was decoded) its curriculum."""
    by_number = {t.number: t for t in trials}
    problems, n = [], 0
    for t in trials:
        o = by_number.get(retry_of(t))
        if o is None:
            continue
        n += 1
        if t.user_attrs.get("baseline") != o.user_attrs.get("baseline"):
            problems.append(
                f"#{t.number} retries #{o.number} ({o.user_attrs.get('baseline')}) as {t.user_attrs.get('baseline')}"
            )
        key, okey = t.user_attrs.get("curriculum_key"), o.user_attrs.get("curriculum_key")
        if key is not None and okey is not None and key != okey:
            problems.append(f"#{t.number} retries #{o.number} with another curriculum ({key} != {okey})")
    detail = (
        "; ".join(problems[:5])
        or f"{n} retr{'y' if n == 1 else 'ies'}, each with its original's label and curriculum"
    )
    return Check("retries_keep_curriculum", not problems, detail)


def counted_once(cfg: Config, trials: list[Any]) -> Check:
    finished = [
        t
        for t in trials
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL") and not t.user_attrs.get("requeued")
    ]
    target = int(make_space(cfg.short)["trials"])
    problems = []
    if len(finished) != target:
        problems.append(f"{len(finished)} finished trials count, expected exactly {target}")
    requeued = [t for t in trials if t.user_attrs.get("requeued")]
    for t in requeued:
        retries = [r.number for r in trials if r.user_attrs.get("retry_of") == t.number]
        if len(retries) != 1:
            problems.append(f"re-queued trial #{t.number} has {len(retries)} retries {retries}")
    keys: dict[str, int] = {}
    for t in trials:
        if t.state.name == "COMPLETE" and "reused_from" not in t.user_attrs:
            key = t.user_attrs.get("curriculum_key")
            if key in keys:
                problems.append(
                    f"curriculum {key} trained to completion twice (#{keys[key]} and #{t.number})"
                )
            keys[str(key)] = t.number
    detail = "; ".join(problems) or (
        f"{len(finished)} finished = target; {len(requeued)} re-queued trial(s), one retry each; "
        f"{len(keys)} distinct completed curricula"
    )
    return Check("no_trial_counted_twice", not problems, detail)


def checkpoints_loadable(cfg: Config) -> Check:
    import torch

    from curriculum_search.distill.cache import decode_entry
    from curriculum_search.errors import CheckpointError
    from curriculum_search.models import load_checkpoint

    files = [
        p
        for p in _walk([cfg.study_dir, cfg.studies / "_zoo"])
        if p.suffix == ".pt" and not p.name.startswith(".")
    ]
    bad, no_sidecar = [], 0
    for p in files:
        try:
            load_checkpoint(p)
        except CheckpointError as exc:
            bad.append(str(exc))
        if not p.with_name(p.name + ".sha256").is_file():
            no_sidecar += 1
    entries = [
        p
        for p in _walk([cfg.studies / "_cache" / "teachers"])
        if p.suffix == ".pt" and not p.name.startswith(".")
    ]
    for p in entries:
        try:
            ok = decode_entry(torch.load(p, map_location="cpu", weights_only=True)) is not None
        except Exception:
            ok = False
        if not ok:
            bad.append(f"{p}: teacher-cache entry does not decode")
    temps = checkpoint_temps([cfg.studies])
    detail = (
        f"{len(files)} checkpoints ({no_sidecar} without a .sha256 sidecar), {len(entries)} cache entries; "
        f"{len(temps)} temporary file(s) left by killed writes"
    )
    return Check("checkpoints_loadable", not bad, "; ".join(bad[:5]) or detail)


def full_run_checks(cfg: Config, trials: list[Any]) -> list[Check]:
    from curriculum_search.curriculum.recipe import load_recipe
    from curriculum_search.curriculum.trainer import RunOptions, recipe_hash, run_recipe
    from curriculum_search.distill.cache import CacheConfig
    from curriculum_search.models import load_checkpoint
    from curriculum_search.search.selection import load_decision, selected_recipe
    from curriculum_search.search.service import space_of
    from curriculum_search.search.storage import load_study_readonly, storage_spec

    full = cfg.study_dir / "full"
    try:
        spec = storage_spec(cfg.studies, STUDY, None)
        study = load_study_readonly(spec, STUDY)
        decision = load_decision(spec, STUDY)
        assert decision is not None, "no selection decision"
        winner = decision["selection"]["winner"]
        expected = recipe_hash(selected_recipe(space_of(study), cfg.studies, STUDY, decision))
        hashes = {
            "selected curriculum": expected,
            "full/recipe.yaml": recipe_hash(load_recipe(full / "recipe.yaml")),
            "best_recipe.yaml": recipe_hash(load_recipe(cfg.study_dir / "best_recipe.yaml")),
            "full/metrics.json": json.loads((full / "metrics.json").read_text())["recipe_hash"],
        }
        status = json.loads((full / "status.json").read_text())
    except Exception as exc:
        return [Check("full_run_same_recipe", False, f"{type(exc).__name__}: {exc}")]
    previous = sorted(p.name for p in cfg.study_dir.glob("full-previous-*"))
    same = len(set(hashes.values())) == 1 and not previous and status.get("state") == "done"
    checks = [
        Check(
            "full_run_same_recipe",
            same,
            f"recipe hash {expected} everywhere (selected: {winner}), status {status.get('state')}"
            if same
            else f"hashes {hashes}, previous full runs {previous}, status {status}",
        )
    ]
    ref_dir = cfg.workdir / "reference"
    shutil.rmtree(ref_dir, ignore_errors=True)
    recipe = load_recipe(full / "recipe.yaml")
    ref = run_recipe(
        recipe,
        RunOptions(
            out_dir=ref_dir,
            cache_root=cfg.studies / "_cache",
            base_dir=cfg.studies,
            source=cfg.space_file,
            cache=CacheConfig(root=cfg.studies / "_cache" / "teachers"),
            progress=False,
            threads=1,
        ),
    )
    got = json.loads((full / "metrics.json").read_text())
    a = load_checkpoint(full / "student.pt")["state_dict"]
    b = load_checkpoint(ref.student_path)["state_dict"]
    diffs = {k: (a[k].float() - b[k].float()).abs() for k in a if a[k].numel() and a[k].is_floating_point()}
    max_diff = max(float(d.max()) for d in diffs.values())
    mean_diff = float(sum(float(d.sum()) for d in diffs.values()) / sum(d.numel() for d in diffs.values()))
    # A resumed run replays the same data order, optimizer state and schedule, so it is the same
    # run; bit-equality is not guaranteed across processes on CPU (oneDNN kernels may sum in another
    # order), and AdamW turns a last-bit difference in a near-zero gradient into a step of about
    # the learning rate on that one weight (seen once in CI: max 1.06e-3, AP equal to 6 digits).
    # A resume bug (other data order, a lost optimizer state, a restarted schedule) moves every
    # weight: the mean difference tells the two apart.
    equal = abs(got["selection_ap"] - ref.metrics.ap) <= 1e-4 and mean_diff <= 1e-5
    checks.append(
        Check(
            "full_run_matches_uninterrupted",
            equal,
            f"AP resumed {got['selection_ap']:.6f} vs uninterrupted {ref.metrics.ap:.6f} (selection split); "
            f"weight difference max {max_diff:.2e}, mean {mean_diff:.2e}",
        )
    )
    return checks


# -- PostgreSQL: two hosts on one server database, one killed ---------------------------------------------------
#: A trial told by a coordinator (its output): ``#12  search  AP 0.123 (best ...)``, ``#3  ... pruned at ...``.
TOLD = re.compile(r"^#(\d+)\s+(\S+)\s+(.*)$")


@dataclass
class Host:
    """A "host": its coordinator command (``search`` or ``worker``) and the process of its current
    incarnation (``a1``; ``a2`` once restarted), whose output goes to ``host-<incarnation>.log``."""

    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    killed: bool = False  # the current incarnation was killed
    log: Any = None

    @property
    def label(self) -> str:
        return f"{self.name}{self.starts}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def trials(self) -> list[tuple[int, int, Path]]:
        return trial_workers(self.proc.pid) if self.proc is not None and self.alive() else []

    def start(self, cfg: Config) -> None:
        from curriculum_search.search.storage import GRACE_ENV

        self.close()
        self.starts += 1
        self.killed = False
        self.log = open(cfg.workdir / f"host-{self.label}.log", "ab")  # noqa: SIM115 - closed by close()
        self.proc = spawn(cfg, self.args, self.log, env={GRACE_ENV: str(cfg.grace_s)})

    def kill(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)
            self.killed = True

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


@dataclass
class Watch:
    """What the soak sees while the hosts run: the incarnations whose trial processes ran each
    trial, run folders held by trial processes of two hosts at one moment, finished trials (see
    :func:`snapshot`)."""

    ran_on: dict[int, set[str]] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)
    seen: dict[int, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    next_snapshot: float = 0.0

    def sample(self, cfg: Config, hosts: list[Host]) -> None:
        holders: dict[Path, set[str]] = {}
        for h in hosts:
            for _pid, number, run_dir in h.trials():
                self.ran_on.setdefault(number, set()).add(h.label)
                holders.setdefault(run_dir, set()).add(h.label)
        self.shared += [f"{d.name} by {sorted(who)}" for d, who in holders.items() if len(who) > 1]
        if time.time() >= self.next_snapshot:
            snapshot(cfg, self.seen, self.violations)
            self.next_snapshot = time.time() + 2.0


def study_attr(cfg: Config, key: str) -> Any:
    """A user attribute of the study (None while the study does not exist)."""
    try:
        with study_readonly(cfg) as study:
            return study.user_attrs.get(key)
    except Exception:
        return None


def run_postgres_soak(cfg: Config) -> Report:
    """Two hosts on one study in a throwaway PostgreSQL server, hosts killed; then the invariants."""
    from benchmarks import pgserver
    from curriculum_search.search import attrs as A

    rng, t0, report = begin(cfg)
    deadline = t0 + cfg.seconds
    with pgserver.postgres_server("cs-soak-", "--auth=trust") as url:
        cfg.storage = url
        hosts = [
            Host("a", ["search", "--space", str(cfg.space_file), "--storage", url]),
            Host("b", ["worker", "--storage", url, "--study", STUDY]),
        ]
        watch = Watch()
        try:
            hosts[0].start(cfg)
            # a `worker` needs the study and its space: host b joins once host a enqueued the baselines
            if wait_until(lambda: bool(study_attr(cfg, A.BASELINES_ENQUEUED)), hosts[0].proc, deadline, 1.0):
                hosts[1].start(cfg)
            victim = rng.randrange(len(hosts))
            while hosts[1].proc is not None and len(report.kills) < cfg.kills and time.time() < deadline:
                v, s = hosts[victim], hosts[1 - victim]
                first_seen: dict[int, float] = {}

                def ready(v: Host = v, s: Host = s, first_seen: dict[int, float] = first_seen) -> bool:
                    """Host ``v`` runs a trial that wrote a checkpoint since the soak first saw it."""
                    watch.sample(cfg, hosts)
                    if not (v.alive() and s.alive()):
                        return True  # nothing left to kill (told below)
                    for _pid, number, run_dir in v.trials():
                        if progress_since([run_dir], first_seen.setdefault(number, time.time())):
                            return True
                    return False

                if not wait_until(ready, None, deadline) or not (v.alive() and s.alive()):
                    report.notes.append(
                        f"kill {len(report.kills) + 1}: no trial of host {v.label} wrote a checkpoint while "
                        f"host {s.label} ran (host ends: {v.label} {v.proc and v.proc.poll()}, "
                        f"{s.label} {s.proc and s.proc.poll()})"
                    )
                    break
                time.sleep(rng.uniform(0, cfg.extra_delay_s))
                running = v.trials()
                if not running or not s.alive():
                    continue
                if not any(_has_checkpoint(run_dir) for _pid, _number, run_dir in running):
                    continue  # the trial seen writing finished during the delay: wait for the next one
                watch.sample(cfg, hosts)
                v.kill()
                for pid in wait_gone([r[0] for r in running], timeout=15.0):  # would write on
                    report.orphans.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                for _pid, number, run_dir in running:
                    report.killed_trials.append(
                        {
                            "number": number,
                            "host": v.label,
                            "run_dir": str(run_dir),
                            "checkpoint": _has_checkpoint(run_dir),
                        }
                    )
                what = (
                    f"host {v.label} ({v.args[0]}) while trial #{', #'.join(str(r[1]) for r in running)} ran"
                )
                report.kills.append(
                    Kill(len(report.kills) + 1, round(time.time() - t0, 1), "trial", "host", what)
                )
                _say(report.kills[-1], cfg.kills)
                if len(report.kills) < cfg.kills:
                    # re-run the same command once the survivor's heartbeat check failed its trials
                    numbers = {r[1] for r in running}

                    def failed(numbers: set[int] = numbers) -> bool:
                        watch.sample(cfg, hosts)
                        states = {t.number: t.state.name for t in read_trials(cfg) if t.number in numbers}
                        return all(states.get(n) == "FAIL" for n in numbers)

                    if not wait_until(failed, None, deadline, poll=1.0):
                        report.notes.append(
                            f"the trials {sorted(numbers)} of killed host {v.label} were not failed in time"
                        )
                        break
                    v.start(cfg)
                    report.restarts += 1
                    victim = 1 - victim

            def all_done() -> bool:
                watch.sample(cfg, hosts)
                return not any(h.alive() for h in hosts)

            finish_by = max(deadline, time.time()) + (150 if cfg.short else 900)
            if not wait_until(all_done, None, finish_by, poll=0.5):
                report.notes.append("the hosts did not finish in time after the kills")
        finally:
            for h in hosts:
                if h.alive() and h.proc is not None:
                    kill_group(h.proc)
                h.close()
        snapshot(cfg, watch.seen, watch.violations)
        report.checks = check_postgres_invariants(cfg, hosts, watch, report)
    report.wall_s = round(time.time() - t0, 1)
    return report


def told_trials(cfg: Config) -> dict[str, dict[int, str]]:
    """``{incarnation: {trial number: what its coordinator told}}`` from the hosts' outputs."""
    out: dict[str, dict[int, str]] = {}
    for log in sorted(cfg.workdir.glob("host-*.log")):
        told = out.setdefault(log.stem.removeprefix("host-"), {})
        for line in log.read_text(errors="replace").splitlines():
            m = TOLD.match(line.strip())
            if m:
                told[int(m.group(1))] = m.group(3)
    return out


def check_postgres_invariants(cfg: Config, hosts: list[Host], watch: Watch, report: Report) -> list[Check]:
    """Check the invariants of the PostgreSQL mode (module docstring) on the finished study."""
    ends = {
        h.label: "killed" if h.killed else (h.proc.returncode if h.proc else "never started") for h in hosts
    }
    checks = [
        Check(
            "hosts_finished",
            all(e in (0, "killed") for e in ends.values()) and 0 in ends.values(),
            f"last incarnation of each host: {ends}",
        )
    ]
    trials, shared = study_checks(cfg, watch.seen, watch.violations)
    checks += shared
    if trials is None:
        return checks
    told = told_trials(cfg)
    checks.append(killed_trials_retried(report.killed_trials, trials, told))
    checks.append(one_host_per_trial(told, watch, report.orphans))
    checks.append(no_result_lost(trials, told))
    checks.append(checkpoints_loadable(cfg))
    hit = [k for k in report.killed_trials if k["checkpoint"]]
    checks.append(
        Check(
            "kills_done",
            len(report.kills) >= cfg.kills and len(hit) >= cfg.kills,
            f"{len(report.kills)} host kill(s) (wanted {cfg.kills}), {len(report.killed_trials)} trial(s) "
            f"killed with them ({len(hit)} after a checkpoint), {report.restarts} restart(s)",
        )
    )
    return checks


def retry_of(t: Any) -> int | None:
    """The trial ``t`` retries: ours (``retry_of``) or Optuna's heartbeat callback's (``failed_trial``)."""
    n = t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))
    return int(n) if n is not None else None


def killed_trials_retried(
    killed: list[dict[str, Any]], trials: list[Any], told: dict[str, dict[int, str]]
) -> Check:
    """Each trial of a killed host was failed by the heartbeat check (told by no host, re-queued)
    and retried once on a live host, which finished it with the original's label and curriculum,
    in the original's run folder, resuming from its checkpoint (unless it reused a twin's result)."""
    by_number = {t.number: t for t in trials}
    problems, lines = [], []
    for k in killed:
        n, host = int(k["number"]), str(k["host"])
        o = by_number.get(n)
        if o is None:
            problems.append(f"killed trial #{n} is not in the study")
            continue
        tellers = sorted(label for label, t in told.items() if n in t)
        reason = str(o.user_attrs.get("failure_reason", ""))
        if o.state.name != "FAIL" or tellers or not reason.startswith("heartbeat lost"):
            problems.append(
                f"killed trial #{n} is {o.state.name} ({reason!r}), told by {tellers or 'no host'}"
            )
        retries = [t for t in trials if retry_of(t) == n]
        if len(retries) != 1:
            problems.append(f"killed trial #{n} has {len(retries)} retries {[t.number for t in retries]}")
            continue
        r = retries[0]
        by = sorted(label for label, t in told.items() if r.number in t)
        if r.state.name not in ("COMPLETE", "PRUNED") or len(by) != 1 or host in by:
            problems.append(
                f"retry #{r.number} of killed trial #{n} is {r.state.name}, told by {by or 'no host'}"
            )
        reused = "reused_from" in r.user_attrs
        keys = ("baseline", "curriculum_key") if reused else ("baseline", "curriculum_key", "run_dir")
        differ = [key for key in keys if r.user_attrs.get(key) != o.user_attrs.get(key)]
        if differ:
            problems.append(f"retry #{r.number} of #{n} differs in {differ}")
        if reused:
            where = f"reused #{r.user_attrs['reused_from']}"
        else:  # the killed run's progress is kept: the retry resumed from its checkpoint
            log = Path(str(k["run_dir"])) / "trial.log"
            text = log.read_text(errors="replace") if log.is_file() else ""
            m = re.search(r"resuming .* at (stage \d+, iteration \d+)", text)
            where = f"same run folder, resumed at {m.group(1)}" if m else "same run folder, not resumed"
            if k["checkpoint"] and not m:
                problems.append(f"retry #{r.number} of #{n} did not resume from its checkpoint ({log})")
        lines.append(
            f"#{n} ({o.user_attrs.get('baseline') or 'search'}, {host}) -> #{r.number} on {'/'.join(by)} "
            f"{r.state.name}, {where}"
        )
    detail = "; ".join(problems[:5]) or (
        f"{len(killed)} trial(s) of killed hosts failed by the heartbeat check (heartbeat lost) and "
        "retried once on a live host with their label and curriculum: " + "; ".join(lines)
    )
    return Check("killed_trials_retried", bool(killed) and not problems, detail)


def one_host_per_trial(told: dict[str, dict[int, str]], watch: Watch, orphans: list[int]) -> Check:
    """No trial told by two hosts, run by two hosts' trial processes or told by another host than
    the one that ran it; no run folder held by trial processes of two hosts at one moment; no trial
    process outlived its killed host (it would write on in the folder its retry resumes in)."""
    problems = [f"run folder {s} at one moment" for s in sorted(set(watch.shared))]
    problems += [f"trial process {pid} outlived its killed host" for pid in orphans]
    tellers: dict[int, list[str]] = {}
    for label, t in told.items():
        for n in t:
            tellers.setdefault(n, []).append(label)
    problems += [f"#{n} told by {who}" for n, who in sorted(tellers.items()) if len(who) > 1]
    problems += [f"#{n} run on {sorted(on)}" for n, on in sorted(watch.ran_on.items()) if len(on) > 1]
    problems += [
        f"#{n} run on {sorted(on)} but told by {tellers[n]}"
        for n, on in sorted(watch.ran_on.items())
        if n in tellers and not set(tellers[n]) <= on
    ]
    ran = sorted(set().union(*watch.ran_on.values())) if watch.ran_on else []
    if len({label.rstrip("0123456789") for label in ran}) < 2:
        problems.append(f"trial processes seen on {ran} only: not on two hosts")
    per_host = ", ".join(f"{label} {len(t)}" for label, t in sorted(told.items()))
    detail = "; ".join(problems[:5]) or (
        f"trials told per host incarnation: {per_host}; {len(watch.ran_on)} trials seen running, each "
        f"on one host ({', '.join(ran)}); no run folder held by two hosts at one moment"
    )
    return Check("one_host_per_trial", not problems, detail)


def no_result_lost(trials: list[Any], told: dict[str, dict[int, str]]) -> Check:
    """What each host told is in the study (AP value, pruned, failed, reused) and every finished
    trial that counts was told by a host; no host dropped a result (a live trial taken over)."""
    by_number = {t.number: t for t in trials}
    problems = []
    told_any: set[int] = set()
    for label, lines in told.items():
        for n, text in lines.items():
            told_any.add(n)
            t = by_number.get(n)
            state = t.state.name if t is not None else "missing"
            m = re.match(r"AP ([0-9.]+) ", text)
            if m and not (state == "COMPLETE" and abs(float(t.value) - float(m.group(1))) < 6e-4):
                problems.append(f"{label} told #{n} AP {m.group(1)}; the study has {state} {t and t.value}")
            elif "pruned at iteration" in text and state != "PRUNED":
                problems.append(f"{label} told #{n} pruned; the study has {state}")
            elif "result reused" in text and not (
                state == "COMPLETE" and t is not None and "reused_from" in t.user_attrs
            ):
                problems.append(f"{label} told #{n} reused; the study has {state}")
            elif text.startswith("FAILED") and state != "FAIL":
                problems.append(f"{label} told #{n} failed; the study has {state}")
            elif "result dropped" in text:
                problems.append(
                    f"{label} dropped the result of #{n} (its live trial was taken over by another host)"
                )
    counted = [
        t
        for t in trials
        if t.state.name in ("COMPLETE", "PRUNED", "FAIL") and not t.user_attrs.get("requeued")
    ]
    problems += [
        f"#{t.number} {t.state.name} but told by no host" for t in counted if t.number not in told_any
    ]
    problems += [
        f"#{t.number} COMPLETE without metrics"
        for t in trials
        if t.state.name == "COMPLETE" and not t.user_attrs.get("metrics")
    ]
    detail = "; ".join(problems[:5]) or (
        f"{len(told_any)} trials told, each as the study has it; {len(counted)} counted finished trials, all told"
    )
    return Check("no_result_lost", not problems, detail)


# -- command line ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--kills",
        type=int,
        default=None,
        help="kills to do (default 20; --short: 6; --postgres: 3, --short 1)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="time budget of the kill phase; the job then runs to its end (default 900; --short: 240, "
        "with --postgres 150)",
    )
    p.add_argument("--short", action="store_true", help="CI version: 6 kills, 4 trials, about 4 minutes")
    p.add_argument(
        "--workers", type=int, default=2, help="trial processes at once (default 2; not --postgres)"
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="two hosts (`search` and `worker`) on one study in a throwaway PostgreSQL server; "
        "a host's process group is killed while it runs a trial (needs the server binaries)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=12.0,
        help="--postgres: the hosts' heartbeat grace period in seconds (default 12; the product's is 120)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default 0)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the study, the job logs and soak_report.json (emptied first; default "
        "benchmarks/out/soak, --postgres: benchmarks/out/soak-postgres)",
    )
    a = p.parse_args(argv)
    if a.postgres:
        from curriculum_search.errors import StudyError
        from curriculum_search.search.storage import GRACE_ENV, heartbeat_grace_s

        try:
            heartbeat_grace_s({GRACE_ENV: str(a.grace)})
        except StudyError as exc:
            p.error(f"--grace {a.grace:g}: {exc}")
        kills = a.kills if a.kills is not None else (1 if a.short else 3)
        if kills < 1:
            p.error("--kills must be >= 1")
    else:
        kills = a.kills if a.kills is not None else (6 if a.short else 20)
        if kills < len(MODES) + 2:
            p.error(f"--kills must be >= {len(MODES) + 2} (one per mode, two in the full run)")
    out = ROOT / "benchmarks" / "out"
    return Config(
        kills=kills,
        seconds=a.seconds
        if a.seconds is not None
        else (900.0 if not a.short else 150.0 if a.postgres else 240.0),
        seed=a.seed,
        workdir=a.workdir or (out / ("soak-postgres" if a.postgres else "soak")),
        short=a.short,
        extra_delay_s=1.5 if a.short else 4.0,
        probe_timeout_s=20.0,
        workers=a.workers,
        postgres=a.postgres,
        grace_s=a.grace,
    )


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.postgres:
        from benchmarks import pgserver

        if pgserver.server_binaries() is None:
            print(f"soak --postgres: {pgserver.MISSING}", file=sys.stderr)
            return 2
    if cfg.workdir.exists():
        shutil.rmtree(cfg.workdir)
    import logging

    logging.basicConfig(level=logging.WARNING)
    if cfg.postgres:
        print(
            f"soak --postgres: {cfg.kills} host kill(s) within {cfg.seconds:.0f}s, heartbeat grace "
            f"{cfg.grace_s:g}s, study files in {cfg.study_dir}",
            flush=True,
        )
        report = run_postgres_soak(cfg)
        what = f"{len(report.kills)} host kill(s)"
    else:
        print(f"soak: {cfg.kills} kills within {cfg.seconds:.0f}s, study in {cfg.study_dir}", flush=True)
        report = run_soak(cfg)
        what = f"{len(report.kills)} kills"
    print(f"\ninvariants after {what}, {report.restarts} restarts, {report.wall_s:.0f}s:")
    for c in report.checks:
        print(f"  {'PASS' if c.ok else 'FAIL'}  {c.name:<32} {c.detail}")
    for note in report.notes:
        print(f"  note: {note}")
    out = cfg.workdir / "soak_report.json"
    out.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2, default=str))
    print(f"report: {out}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
