"""Study set-up: create or resume a study, recover interrupted trials, enqueue the baselines.

Also the zoo check every host does before it searches, and the study's stored search space.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from curriculum_search._version import __version__
from curriculum_search.errors import ConfigError, StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.baselines import baseline_choices, planned_baselines, student_only_params
from curriculum_search.search.encoding import min_stage_iterations
from curriculum_search.search.options import SearchOptions, study_name
from curriculum_search.search.reader import is_counted
from curriculum_search.search.space import (
    SearchSpace,
    make_pruner,
    make_sampler,
    pool_hash,
    space_from_dict,
)
from curriculum_search.search.storage import StorageSpec, heartbeat_grace_s, open_storage
from curriculum_search.utils.config import to_dict
from curriculum_search.utils.io import stable_hash

log = logging.getLogger(__name__)

#: Trial states that count as finished (a re-queued trial is counted by its retry).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


#: What decides a trial's result (a study keeps it: a change would mix incomparable results).
#: Everything else may change between runs: trials, timeout_s, workers, sampler, pruner, selection.
FINGERPRINT_KEYS = ("data", "student", "pool", "proxy", "full", "train", "seed")

#: The study attribute written last when a study is created: a study without it was interrupted
#: while being created (it is set up again) or is not ours (refused if it already has trials).
INITIALISED = A.INITIALISED


def space_fingerprint(space: SearchSpace, seed: int | None = None) -> dict[str, str]:
    """A hash per :data:`FINGERPRINT_KEYS` entry; ``seed`` overrides the space's (``--seed``)."""
    d = to_dict(space)
    fp = {k: stable_hash(d[k]) for k in ("data", "student", "proxy", "full", "train")}
    fp["pool"] = pool_hash(space)
    fp["seed"] = stable_hash(space.seed if seed is None else seed)
    return {k: fp[k] for k in FINGERPRINT_KEYS}


def fingerprint_id(fp: dict[str, str]) -> str:
    """Short id of a fingerprint: part of every trial's run folder (``trials/<curriculum>-<id>-s<seed>``)."""
    return stable_hash(fp, 8)


def stored_fingerprint(study: optuna.Study) -> dict[str, str] | None:
    """The study's fingerprint; for a study from before fingerprints, rebuilt from its stored space
    and pool hash (``None`` if it has neither)."""
    attrs = study.user_attrs
    if isinstance(attrs.get(A.FINGERPRINT), dict):
        return dict(attrs[A.FINGERPRINT])
    if A.SPACE not in attrs:
        return None
    fp = space_fingerprint(space_from_dict(attrs[A.SPACE]))
    if A.POOL_HASH in attrs:
        fp["pool"] = attrs[A.POOL_HASH]
    return fp


def check_fingerprint(
    study: optuna.Study, space: SearchSpace, spec: StorageSpec, seed: int | None = None
) -> None:
    """Refuse to go on with a space whose result-deciding parts differ from the study's.

    Raises:
        StudyError: one line naming the changed keys and suggesting ``--name``.
    """
    stored = stored_fingerprint(study)
    if stored is None:
        return
    now = space_fingerprint(space, seed)
    changed = [k for k in FINGERPRINT_KEYS if stored.get(k) != now[k]]
    if changed:
        raise StudyError(
            f"{spec.display}: study {study.study_name!r} was run with another {', '.join(changed)} "
            f"({'this changes' if len(changed) == 1 else 'these change'} its results; trials, "
            "timeout_s and workers may change): run with --name NEW to start a new study, or "
            "restore the space file"
        )


def open_study(
    space: SearchSpace, opts: SearchOptions, spec: StorageSpec, *, create: bool = True
) -> optuna.Study:
    """Create or resume the study; refuse a changed space (its fingerprint), a foreign study of the
    same name or a direction mismatch."""
    name = study_name(space, opts)
    storage = open_storage(spec)
    first_min = first_stage_min(space)
    sampler = make_sampler(space, source=opts.space_file, seed=opts.seed, enqueued=planned_baselines(space))
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
    if spec.is_server or study.get_trials(deepcopy=False):
        # a seeded sampler's RNG starts from its seed in every process: on a server study each
        # coordinator (one per host) would propose the very same curricula in the same order
        # (duplicate work, twin trials racing for one run folder), and a resumed search would redraw
        # the first session's proposals; neither is reproducible trial by trial anyway
        study.sampler.reseed_rng()
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
    legacy = A.POOL_HASH in attrs and A.SPACE in attrs  # created before the marker existed
    if INITIALISED not in attrs and not legacy:
        if study.get_trials(deepcopy=False):
            raise StudyError(
                f"{spec.display}: a study named {name!r} already exists and was not created by "
                "curriculum_search (it has trials but no search space); use another --name"
            )
        fp = space_fingerprint(space, opts.seed)
        study.set_user_attr(A.POOL_HASH, phash)
        study.set_user_attr(A.SPACE, to_dict(space))
        study.set_user_attr(A.SPACE_FILE, str(opts.space_file) if opts.space_file else None)
        study.set_user_attr(A.FINGERPRINT, fp)
        study.set_user_attr(A.FINGERPRINT_ID, fingerprint_id(fp))
        study.set_user_attr(A.PACKAGE_VERSION, __version__)
        study.set_user_attr(A.CREATED, datetime.now(UTC).isoformat(timespec="seconds"))
        study.set_user_attr(INITIALISED, True)  # last: a study without it is set up again
        return study
    if attrs[A.POOL_HASH] != phash:
        raise StudyError(
            f"{spec.display}: the teacher pool of study {name!r} changed (study {attrs[A.POOL_HASH]}, space {phash}); "
            "a study keeps its pool: run with --name NEW to start a new study"
        )
    check_fingerprint(study, space, spec, opts.seed)
    if legacy and INITIALISED not in attrs:
        fp = stored_fingerprint(study) or space_fingerprint(space, opts.seed)
        study.set_user_attr(A.FINGERPRINT, fp)
        study.set_user_attr(A.FINGERPRINT_ID, fingerprint_id(fp))
        study.set_user_attr(INITIALISED, True)
    return study


def run_folder_id(study: optuna.Study) -> str:
    """The fingerprint id trial run folders carry (``trials/<curriculum>-<id>-s<seed>``)."""
    fid = study.user_attrs.get(A.FINGERPRINT_ID)
    if isinstance(fid, str):
        return fid
    fp = stored_fingerprint(study)
    return fingerprint_id(fp) if fp is not None else "legacy"


def first_stage_min(space: SearchSpace) -> int:
    return min_stage_iterations(
        space.proxy.iterations, space.search.min_stage_fraction, space.search.n_stages[1]
    )


# -- recovery -------------------------------------------------------------------------------------
def recover_interrupted(study: optuna.Study, echo: Callable[[str], None]) -> int:
    """Fail and re-queue trials left RUNNING by a killed coordinator (local storages only)."""
    n = 0
    retried = {t.user_attrs.get(A.RETRY_OF) for t in study.get_trials(deepcopy=False)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number not in retried:  # retry first: killed before the FAIL below, it is not doubled
            enqueue_retry(study, t)
        study._storage.set_trial_user_attr(
            t._trial_id, A.FAILURE_REASON, "interrupted: the process running it stopped"
        )
        study._storage.set_trial_user_attr(t._trial_id, A.REQUEUED, True)
        study.tell(t.number, state=TrialState.FAIL)
        n += 1
    if n:
        echo(f"re-queued {n} interrupted trial(s); they resume from their last checkpoint")
    return n


#: A trial whose host stopped beating is retried at most this many times in a row: a curriculum
#: that brings its host down (out of memory) fails for good instead of downing host after host.
HEARTBEAT_RETRIES = 3


def fail_stale(study: optuna.Study) -> int:
    """Server databases: fail the RUNNING trials whose heartbeat stopped for the grace period (their
    host died, or was paused that long) and re-queue them like interrupted trials: not counted, one
    retry each with its curriculum and baseline label, resuming from its last checkpoint.

    Replaces Optuna's ``fail_stale_trials`` + ``RetryHeartbeatStaleTrialCallback``, whose failed
    trial counted toward the target and whose retry lacked ``retry_of``. Safe with many
    coordinators: the trial is marked before its FAIL, and only the coordinator whose FAIL wins
    (a row lock) re-queues it. Two windows stay, each a few milliseconds after a silence of the
    whole grace period: the original's host coming back between the mark and the FAIL (its result
    is kept but not counted: the study runs one trial more), this coordinator dying between the
    FAIL and the re-queue (no retry: a new trial takes its place)."""
    storage = study._storage
    stale = storage._get_stale_trial_ids(study._study_id)  # type: ignore[attr-defined]
    if not stale:
        return 0
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    n = 0
    for tid in stale:
        trial = storage.get_trial(tid)
        depth, t = 0, trial  # heartbeat retries in a row up to this one
        while t.user_attrs.get(A.RETRY_REASON) == "heartbeat" and t.user_attrs.get(A.RETRY_OF) in by_number:
            depth += 1
            t = by_number[t.user_attrs[A.RETRY_OF]]
        retry = depth < HEARTBEAT_RETRIES
        why = f"heartbeat lost: its host stopped answering for over {heartbeat_grace_s():g} s; " + (
            "re-queued, the retry resumes from its last checkpoint"
            if retry
            else f"its host was lost {depth + 1} times in a row: failed for good"
        )
        try:
            storage.set_trial_user_attr(tid, A.FAILURE_REASON, why)
            if retry:
                storage.set_trial_user_attr(tid, A.REQUEUED, True)
            if not storage.set_trial_state_values(tid, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # finished meanwhile: another coordinator failed it first
        if retry:
            enqueue_retry(study, storage.get_trial(tid), reason="heartbeat")
        n += 1
    return n


def enqueue_retry(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str | None = None) -> None:
    """Queue ``trial``'s curriculum again; its run folder is keyed by the curriculum, so the retry
    resumes from the last checkpoint."""
    keep = {k: v for k, v in trial.user_attrs.items() if k in A.RETRY_KEEPS}
    keep[A.RETRY_OF] = trial.number
    if reason:
        keep[A.RETRY_REASON] = reason
    # an enqueued trial (baseline, retry) killed before it was decoded has no params yet: its
    # enqueued ones are in fixed_params; without them the retry would be a random curriculum
    fixed = study._storage.get_trial_system_attrs(trial._trial_id).get("fixed_params") or {}
    study.enqueue_trial({**fixed, **trial.params}, user_attrs=keep, skip_if_exists=False)


def finished_count(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if is_counted(t.user_attrs))


# -- baselines ------------------------------------------------------------------------------------
def enqueue_baselines(space: SearchSpace, study: optuna.Study, opts: SearchOptions) -> None:
    """Enqueue student-only, direct-strongest, weak->strong and heuristic-order trials (once)."""
    if study.user_attrs.get(A.BASELINES_ENQUEUED):
        return
    from curriculum_search.search.zoo import describe_pool

    infos = describe_pool(
        space, opts.studies_root, device=opts.device, evaluate_missing=True, source=opts.space_file
    )
    study.set_user_attr(A.TEACHER_INFO, [i.as_dict() for i in infos])
    ap = {i.name: float(i.ap or 0.0) for i in infos}
    order: list[str] | None = None
    try:
        order = _heuristic(space, opts, ap)
        study.set_user_attr(A.HEURISTIC_ORDER, order)
    except Exception as exc:  # the heuristic is a warm start, never a blocker
        log.warning("adaptation-cost heuristic failed (%s); skipping that baseline", exc)
    baselines = baseline_choices(space, ap, order)
    have = {t.user_attrs.get(A.BASELINE) for t in study.get_trials(deepcopy=False)}
    for name, params in baselines.items():
        if name in have:  # enqueued by a start that was killed before the end of this loop
            continue
        if params is None:  # student-only: carry a full parameter set (see baselines.py)
            params = student_only_params(space, ap)
        study.enqueue_trial(params, user_attrs={A.BASELINE: name})
    study.set_user_attr(A.BASELINES_ENQUEUED, True)
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


def ensure_zoo(space: SearchSpace, opts: SearchOptions) -> None:
    """Train zoo teachers this host does not have yet (each host of a multi-host study needs them)."""
    from curriculum_search.search.encoding import zoo_checkpoint_path
    from curriculum_search.search.zoo import build_zoo

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


def space_of(study: optuna.Study) -> SearchSpace:
    if A.SPACE not in study.user_attrs:
        raise StudyError(
            f"study {study.study_name!r} was not created by curriculum_search (no space attribute)"
        )
    return space_from_dict(study.user_attrs[A.SPACE])
