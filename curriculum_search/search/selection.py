"""The selection stage: race the search's shortlist against the best baseline, then ship the winner.

A search ranks curricula by short single-seed proxies, far below seed noise. Before anything is
shipped, :func:`run_selection`

1. shortlists ``selection.shortlist`` distinct searched curricula by a noise-aware proxy score
   (:func:`proxy_score`), takes the best baseline as the *incumbent*, optionally the incumbent at
   the best challenger's learning rate (so a curriculum cannot win through its LR alone), and the
   student alone as the *reference*;
2. races them (:mod:`~curriculum_search.search.race`) on common random numbers — the same seeds,
   data order and selection-split images for every arm — at increasing budgets, the last one the
   full length with >= 2 seeds;
3. keeps the incumbent unless a challenger's paired AP difference clears ``selection.margin`` at
   the lower confidence bound.

Every race run is a trial of a sibling Optuna study ``<name>:selection`` in the same storage (value:
AP on the selection split; user attributes: arm, curriculum, budget, seed, AP on the report split),
run in its own process with its own resumable run folder, so a killed race resumes without
repeating a finished run, and the runs show in the dashboard and in Optuna's own tools. The winner's
first full-length run *is* the full run (:func:`ship`): ``full/student.pt`` and
``full/metrics.json`` with the report-split numbers against the best baseline and the student alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from curriculum_search.curriculum.recipe import Recipe, recipe_to_dict, save_recipe
from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.attrs import (  # the study format; re-exported here
    DECISION,
    SELECTION_OF,
    SELECTION_SUFFIX,
    is_selection_study,
    selection_study_name,
)
from curriculum_search.search.baselines import STUDENT_ONLY, student_only_choice
from curriculum_search.search.encoding import CurriculumChoice, build_recipe, choice_from_dict
from curriculum_search.search.failures import race_time_limit
from curriculum_search.search.options import SearchOptions, study_name
from curriculum_search.search.processes import (
    Process,
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
from curriculum_search.search.race import (
    Arm,
    PairedStats,
    RacePlan,
    RaceSettings,
    RunKey,
    kendall_tau,
    paired_stats,
    plan_race,
    pooled_seed_std,
)
from curriculum_search.search.results import export_trial_recipe, provenance
from curriculum_search.search.space import SearchSpace, SelectionConfig
from curriculum_search.search.storage import (
    StorageSpec,
    database_errors,
    load_study_readonly,
    open_storage,
    storage_spec,
    study_lock,
)
from curriculum_search.search.study import check_fingerprint, first_stage_min, space_of
from curriculum_search.utils.config import to_dict
from curriculum_search.utils.io import atomic_write_text, dump_yaml

log = logging.getLogger(__name__)

#: A race run interrupted this often (SIGKILL: OOM killer, operator) counts as failed.
MAX_INTERRUPTIONS = 3
#: Kendall τ at or below which the proxy is said to have carried no information.
TAU_WARNING = 0.2


@dataclass(frozen=True)
class Candidate:
    """An arm of the race and the curriculum it trains."""

    arm: Arm
    choice: CurriculumChoice


# -- the shortlist ---------------------------------------------------------------------------------
def proxy_score(trial: FrozenTrial) -> float:
    """Noise-aware proxy score of a finished trial.

    The mean of its final AP (already the mean over ``proxy.seeds``) and its last evaluation in
    the second half of its last stage, when there is one: two evaluations of nearby student
    states average out part of the evaluation noise, and an evaluation right after a stage switch
    (where AdamW restarts and the curve dips) is never used.
    """
    assert trial.value is not None
    values = [float(trial.value)]
    bounds = trial.user_attrs.get(A.STAGE_BOUNDARIES) or []
    if len(bounds) >= 2 and trial.intermediate_values:
        start, end = bounds[-2], bounds[-1]
        tail = [s for s in trial.intermediate_values if start + (end - start) / 2 <= s < end]
        if tail:
            values.append(float(trial.intermediate_values[max(tail)]))
    return sum(values) / len(values)


def shortlist(space: SearchSpace, study: optuna.Study, cfg: SelectionConfig) -> list[Candidate]:
    """The race's arms, from the finished trials of the search study.

    The incumbent is the baseline with the best proxy score; the challengers the
    ``cfg.shortlist`` best distinct searched curricula (none equal to a baseline); with
    ``cfg.lr_matched`` also the incumbent at the best challenger's learning rate; the references
    are the student alone at the incumbent's learning rate and (``cfg.lr_matched``) at the best
    challenger's.

    Raises:
        StudyError: no baseline has finished yet.
    """
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if A.CURRICULUM in t.user_attrs and t.value is not None
    ]
    by_key: dict[str, FrozenTrial] = {}
    for t in sorted(done, key=lambda t: t.number):
        key = t.user_attrs.get(A.CURRICULUM_KEY) or choice_from_dict(t.user_attrs[A.CURRICULUM]).key
        prev = by_key.get(key)
        if prev is None or (t.user_attrs.get(A.BASELINE) and not prev.user_attrs.get(A.BASELINE)):
            by_key[key] = t  # a baseline keeps its label when a searched trial repeats it
    baselines = {k: t for k, t in by_key.items() if t.user_attrs.get(A.BASELINE)}
    if not baselines:
        raise StudyError(f"study {study.study_name!r}: no baseline has finished; run the search first")
    scores = {k: proxy_score(t) for k, t in by_key.items()}
    inc_key = max(baselines, key=lambda k: (scores[k], -baselines[k].number))
    inc_trial = baselines[inc_key]
    incumbent = Candidate(
        Arm(
            inc_key,
            str(inc_trial.user_attrs[A.BASELINE]),
            "incumbent",
            baseline=str(inc_trial.user_attrs[A.BASELINE]),
            source_trial=inc_trial.number,
            proxy_score=scores[inc_key],
        ),
        choice_from_dict(inc_trial.user_attrs[A.CURRICULUM]),
    )
    searched = sorted(
        (k for k in by_key if k not in baselines), key=lambda k: (-scores[k], by_key[k].number)
    )[: cfg.shortlist]
    out = [incumbent]
    for k in searched:
        t = by_key[k]
        out.append(
            Candidate(
                Arm(k, f"trial #{t.number}", "challenger", source_trial=t.number, proxy_score=scores[k]),
                choice_from_dict(t.user_attrs[A.CURRICULUM]),
            )
        )
    if cfg.lr_matched and searched:
        lr = out[1].choice.lr
        if abs(lr / incumbent.choice.lr - 1) > 1e-3:
            matched = dataclasses.replace(incumbent.choice, lr=lr)
            out.append(
                Candidate(
                    Arm(
                        matched.key,
                        f"{incumbent.arm.label} @ lr {lr:.3g}",
                        "challenger",
                        baseline=incumbent.arm.baseline,
                        source_trial=incumbent.arm.source_trial,
                    ),
                    matched,
                )
            )
    # the student alone at the incumbent's learning rate and (lr_matched) the best challenger's:
    # "what distillation buys" compares the shipped student with the student alone at the shipped
    # student's own learning rate (another challenger that wins is reported with a note)
    sb = next((t for k, t in baselines.items() if t.user_attrs.get(A.BASELINE) == STUDENT_ONLY), None)
    rates = [incumbent.choice.lr] + ([out[1].choice.lr] if cfg.lr_matched and searched else [])
    for lr in dict.fromkeys(rates):
        alone = dataclasses.replace(student_only_choice(space), lr=lr)
        if alone.key in {c.arm.key for c in out}:
            continue  # an arm of the race is that student alone already
        default = abs(lr / student_only_choice(space).lr - 1) <= 1e-3
        out.append(
            Candidate(
                Arm(
                    alone.key,
                    "student alone" if default else f"student alone @ lr {lr:.3g}",
                    "reference",
                    baseline=STUDENT_ONLY,
                    source_trial=sb.number if sb and default else None,
                    proxy_score=scores.get(alone.key),
                ),
                alone,
            )
        )
    return out


def race_settings(space: SearchSpace, base_seed: int) -> RaceSettings:
    """Budgets (iterations) and seeds of each rung; rung ``r`` uses seeds ``base .. base+n_r-1``."""
    cfg = space.selection
    budgets = tuple(max(1, round(f * space.full.iterations)) for f in cfg.rungs)
    seeds = tuple(tuple(base_seed + i for i in range(n)) for n in cfg.seeds)
    return RaceSettings(budgets, seeds, cfg.promote, cfg.margin, cfg.confidence)


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


def _run_dir(spec: StorageSpec, key: RunKey) -> Path:
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
    trial = study.ask()
    run_dir = _run_dir(spec, key)
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
        n_chal = sum(a.role == "challenger" for a in arms)
        opts.echo(
            f"selection: {n_chal} challenger(s) against the best baseline {arms[0].label!r} "
            f"(proxy {arms[0].proxy_score:.4f}), rungs {list(settings.budgets)} iterations, "
            f"seeds {[len(s) for s in settings.seeds]}"
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


# -- the report -------------------------------------------------------------------------------------
def _report_values(
    study: optuna.Study, key: str, iterations: int, seeds: tuple[int, ...]
) -> list[float] | None:
    by_seed: dict[int, float] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if a.get(A.ARM_KEY) == key and a.get(A.ITERATIONS) == iterations and A.REPORT_AP in a:
            by_seed[int(a[A.SEED])] = float(a[A.REPORT_AP])
    vals = [by_seed.get(s) for s in seeds]
    return None if any(v is None for v in vals) else [float(v) for v in vals if v is not None]


def _interval(st: PairedStats | None) -> list[float] | None:
    return (
        [float(st.lo), float(st.hi)] if st is not None and st.lo is not None and st.hi is not None else None
    )


def summary(
    space: SearchSpace, study: optuna.Study, plan: RacePlan, cands: Mapping[str, Candidate]
) -> dict[str, Any]:
    """The decision, the fidelity diagnostics and the report-split comparison, as JSON values."""
    assert plan.winner is not None and plan.incumbent is not None
    cfg = space.selection
    winner, inc = plan.winner, plan.incumbent
    last = plan.rungs[-1]
    sel_split, rep_split = space.split_names()
    if plan.winner_stats is not None:
        delta, interval = plan.winner_stats.mean, _interval(plan.winner_stats)
    else:  # the incumbent stays: it is compared with itself
        delta, interval = 0.0, [0.0, 0.0]
    rivals = [k for k in last.stats if cands[k].arm.role == "challenger"]
    best_rival = max(rivals, key=lambda k: last.stats[k].mean) if rivals else None
    # fidelity: proxy score vs the race's first-rung mean, over the arms that ran there
    first = plan.rungs[0]
    pairs = [
        (cands[k].arm.proxy_score, sum(v) / len(v))
        for k, v in first.values.items()
        if cands[k].arm.proxy_score is not None
    ]
    tau = kendall_tau([p[0] for p in pairs if p[0] is not None], [p[1] for p in pairs if p[0] is not None])
    seed_std = pooled_seed_std(last.values)
    warnings = []
    if tau is None or tau <= TAU_WARNING:
        warnings.append(
            "the proxy carried no information about the race's ranking"
            + (f" (Kendall τ {tau:.2f})" if tau is not None else " (too few raced curricula for τ)")
        )
    if rivals and all(
        not last.stats[k].clears(cfg.margin) and not last.stats[k].clearly_worse() for k in rivals
    ):
        warnings.append("every challenger at the full length was within noise of the best baseline")
    # the report split: the same seeds, paired
    seeds = last.seeds
    rep = {k: _report_values(study, k, last.iterations, seeds) for k in last.values}
    alone_key = _student_alone_key(cands, winner.key, last.values)
    final: dict[str, Any] = {"split": rep_split, "seeds": len(seeds), "ap": None}
    w_rep = rep.get(winner.key)
    if w_rep:
        final.update(ap=w_rep[0], ap_mean=sum(w_rep) / len(w_rep), ap_per_seed=w_rep)

        def versus(key: str | None, name: str) -> None:
            other = rep.get(key) if key else None
            if not other:
                return
            st = paired_stats(w_rep, other, cfg.confidence)
            final[f"{name}_ap"] = sum(other) / len(other)
            final[f"{name}_ap_per_seed"] = other
            final[f"delta_vs_{name}_mean"] = st.mean
            final[f"delta_vs_{name}_interval"] = _interval(st) if key != winner.key else [0.0, 0.0]
            final[f"{name}_words"] = st.words() if key != winner.key else "is"

        final["best_baseline"] = inc.label
        versus(inc.key, "best_baseline")
        versus(alone_key, "student_alone")
        final["lr"] = cands[winner.key].choice.lr
        if alone_key is not None:
            final["student_alone_lr"] = cands[alone_key].choice.lr
    rungs = [
        {
            "iterations": r.iterations,
            "seeds": list(r.seeds),
            "arms": [
                {
                    "key": k,
                    "label": cands[k].arm.label,
                    "role": cands[k].arm.role,
                    "values": r.values.get(k),
                    "mean": (sum(r.values[k]) / len(r.values[k])) if k in r.values else None,
                    "delta_mean": r.stats[k].mean if k in r.stats else None,
                    "delta_interval": _interval(r.stats.get(k)),
                    "fate": r.fate.get(k, "incumbent" if k == inc.key else "reference"),
                }
                for k in sorted(
                    set(r.values) | set(r.fate),
                    key=lambda k: ("incumbent", "challenger", "reference").index(cands[k].arm.role),
                )
            ],
        }
        for r in plan.rungs
    ]
    return {
        "selection": {
            "winner_trial": winner.source_trial,
            "winner_is_baseline": winner.baseline is not None,
            "winner": winner.label,
            "winner_key": winner.key,
            "winner_description": cands[winner.key].choice.describe(),
            "winner_curriculum": cands[winner.key].choice.as_dict(),
            "winner_seed": last.seeds[0],
            "best_baseline": inc.label,
            "delta_ap_mean": delta,
            "delta_ap_interval": interval,
            "best_challenger": cands[best_rival].arm.label if best_rival else None,
            "best_challenger_delta_mean": last.stats[best_rival].mean if best_rival else None,
            "best_challenger_delta_interval": _interval(last.stats[best_rival]) if best_rival else None,
            "seeds": len(seeds),
            "budget_iterations": last.iterations,
            "margin": cfg.margin,
            "confidence": cfg.confidence,
            "reason": plan.reason,
            "split": sel_split,
            "rungs": rungs,
        },
        "fidelity": {
            "kendall_tau": tau,
            "n": len(pairs),
            "seed_std": seed_std,
            "warnings": warnings,
        },
        "final": final,
    }


def _student_alone_key(
    cands: Mapping[str, Candidate], winner: str, raced: Mapping[str, Sequence[float]]
) -> str | None:
    """The raced student-only arm to report the shipped student against: the one at the shipped
    student's learning rate (the winner itself when it distils nothing), else the default one."""
    alone = [k for k in raced if cands[k].choice.is_student_only]
    lr = cands[winner].choice.lr
    same = [k for k in alone if abs(cands[k].choice.lr / lr - 1) <= 1e-3]
    if same:
        return winner if winner in same else same[0]
    refs = [k for k in alone if cands[k].arm.role == "reference"]
    pick = refs or alone
    return pick[0] if pick else None


def decision_lines(s: Mapping[str, Any]) -> list[str]:
    """The decision in plain words (CLI and ``status``): "beats" only outside the noise."""
    sel, fid, fin = s["selection"], s["fidelity"], s["final"]
    lines = []
    iv = sel.get("best_challenger_delta_interval")
    if sel["winner_is_baseline"] and sel["winner"] == sel["best_baseline"]:
        if sel.get("best_challenger"):
            lines.append(
                f"selection: kept the best baseline {sel['best_baseline']!r}: the best challenger "
                f"{sel['best_challenger']} is within noise of it ({_fmt_delta(sel['best_challenger_delta_mean'], iv)}, "
                f"{sel['seeds']} seeds, {sel['budget_iterations']} iterations, {sel['split']} split)"
                if not (iv and iv[1] < 0)
                else f"selection: kept the best baseline {sel['best_baseline']!r}: the best challenger "
                f"{sel['best_challenger']} is worse ({_fmt_delta(sel['best_challenger_delta_mean'], iv)}, {sel['seeds']} seeds)"
            )
        else:
            lines.append(
                f"selection: kept the best baseline {sel['best_baseline']!r} (no challenger reached the full length)"
            )
    else:
        lines.append(
            f"selection: {sel['winner']} beats the best baseline {sel['best_baseline']!r} by "
            f"{_fmt_delta(sel['delta_ap_mean'], sel['delta_ap_interval'])} AP "
            f"({sel['seeds']} seeds, {sel['budget_iterations']} iterations, {sel['split']} split)"
        )
    tau = fid.get("kendall_tau")
    std = fid.get("seed_std")
    lines.append(
        f"fidelity: Kendall τ proxy vs race {'n/a' if tau is None else f'{tau:.2f}'} over {fid['n']} curricula; "
        f"seed-to-seed std {'n/a' if std is None else f'{std:.4f}'} AP"
    )
    for w in fid.get("warnings", []):
        lines.append(f"warning: {w}")
    if fin.get("ap") is not None:
        lines.append(
            f"shipped student: AP {fin['ap']:.4f} on the held-out {fin['split']} split "
            f"(mean {fin['ap_mean']:.4f} over {fin['seeds']} seeds)"
        )
        for name, what in (
            ("best_baseline", f"best baseline {fin.get('best_baseline')!r}"),
            ("student_alone", "student alone"),
        ):
            if f"{name}_ap" not in fin:
                continue
            words = fin[f"{name}_words"]
            if words == "is":
                lines.append(
                    f"  it is the {what} (AP {fin[f'{name}_ap']:.4f})"
                    + (": the shipped curriculum distils nothing" if name == "student_alone" else "")
                )
                continue
            lines.append(
                f"  vs {what} (AP {fin[f'{name}_ap']:.4f}): {_fmt_delta(fin[f'delta_vs_{name}_mean'], fin[f'delta_vs_{name}_interval'])}"
                f" — {_words(words, what)}"
            )
            a_lr, lr = fin.get("student_alone_lr"), fin.get("lr")
            if name == "student_alone" and a_lr and lr and abs(a_lr / lr - 1) > 1e-3:
                lines.append(
                    f"    (the student alone trained at lr {a_lr:.3g}, the shipped student at lr {lr:.3g}: "
                    "the difference is not distillation alone)"
                )
    return lines


def _words(words: str, what: str) -> str:
    return {
        "beats": f"beats the {what}",
        "is worse than": f"worse than the {what}",
        "is within noise of": "within noise",
    }[words]


def _fmt_delta(mean: float | None, interval: list[float] | None) -> str:
    if mean is None:
        return "n/a"
    if not interval:
        return f"{mean:+.4f}"
    return f"{mean:+.4f} [{interval[0]:+.4f}, {interval[1]:+.4f}]"


def load_decision(spec: StorageSpec, name: str) -> dict[str, Any] | None:
    """The stored decision of study ``name``'s selection, if a race has finished."""
    try:
        study = load_study_readonly(spec, selection_study_name(name))
    except StudyError:
        return None
    d = study.user_attrs.get(DECISION)
    return d if isinstance(d, dict) else None


# -- shipping the winner -------------------------------------------------------------------------------
def selected_recipe(
    space: SearchSpace, studies_root: Path, study_name: str, decision: Mapping[str, Any]
) -> Recipe:
    """The shipped curriculum as a full-length recipe: the winner's curriculum and the seed of its
    first full-length race run (training it again reproduces ``full/student.pt``), with the
    decision and the held-out report in its provenance."""
    sel = decision["selection"]
    choice = choice_from_dict(sel["winner_curriculum"])
    recipe = build_recipe(
        space,
        choice,
        iterations=int(sel["budget_iterations"]),
        proxy=False,
        seed=int(sel["winner_seed"]),
        studies_root=studies_root,
    )
    prov = dict(recipe.provenance)
    prov.update(
        provenance(
            space,
            study_name,
            trial=sel.get("winner_trial"),
            baseline=sel["winner"] if sel.get("winner_is_baseline") else None,
            selection={k: v for k, v in sel.items() if k not in ("rungs", "winner_curriculum")},
            report=decision.get("final"),
        )
    )
    return dataclasses.replace(recipe, name=f"{study_name}-selected", provenance=prov)


def export_recipe(
    study_name_: str,
    storage: str | None,
    studies_root: Path,
    trial_number: int | None = None,
    proxy: bool = False,
) -> str:
    """YAML text of the shipped curriculum (once a selection has decided) or of a trial.

    Without ``trial_number``: the selection's winner when a race has finished, else the trial with
    the best proxy value. ``proxy`` exports a trial at the proxy length.
    """
    spec = storage_spec(studies_root, study_name_, storage)
    decision = load_decision(spec, study_name_) if trial_number is None and not proxy else None
    if decision is None or "winner_curriculum" not in decision.get("selection", {}):
        return export_trial_recipe(study_name_, storage, studies_root, trial_number, proxy=proxy)
    space = space_of(load_study_readonly(spec, study_name_))
    return dump_yaml(recipe_to_dict(selected_recipe(space, studies_root, study_name_, decision)))


def ship(space: SearchSpace, opts: SearchOptions, outcome: SelectionOutcome) -> Path:
    """Make the winner's first full-length run the study's full run and export its recipe.

    Writes ``<study>/full/`` (``student.pt``, ``history.jsonl``, ``recipe.yaml``,
    ``metrics.json`` with the report-split metrics and the comparison, ``status.json``) and
    ``<study>/best_recipe.yaml`` (the winner at full length, with the selection in its provenance).
    A previous full run of another curriculum is kept in ``full-previous-<time>/``.
    Returns the path of ``student.pt``.
    """
    spec = storage_spec(opts.studies_root, outcome.study_name, opts.storage)
    plan = outcome.plan
    last = plan.rungs[-1]
    win = outcome.winner
    key = (win.arm.key, last.iterations, last.seeds[0])
    src = _run_dir(spec, key)
    out = spec.study_dir / "full"
    recipe = selected_recipe(space, opts.studies_root, outcome.study_name, outcome.summary)
    recipe = dataclasses.replace(
        recipe, provenance={**recipe.provenance, "race_run": str(src.relative_to(spec.study_dir))}
    )
    old = out / "metrics.json"
    if old.is_file():
        try:
            same = json.loads(old.read_text()).get("race_run") == str(src.relative_to(spec.study_dir))
        except (OSError, ValueError):
            same = False
        if not same:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            out.rename(spec.study_dir / f"full-previous-{stamp}")
            opts.echo(f"the selected curriculum changed: previous full run kept in full-previous-{stamp}/")
    out.mkdir(parents=True, exist_ok=True)
    detections = f"detections_{space.split_names()[1]}.json"  # issue 14: the report split's detections
    for name in ("student.pt", "student.pt.sha256", "history.jsonl", detections):
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    save_recipe(recipe, out / "recipe.yaml")
    save_recipe(recipe, spec.study_dir / "best_recipe.yaml")
    report_file = src / f"metrics-{space.split_names()[1]}.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    run_metrics = json.loads((src / "metrics.json").read_text()) if (src / "metrics.json").is_file() else {}
    metrics = {
        **report,
        "recipe_hash": run_metrics.get("recipe_hash"),
        "selection_ap": run_metrics.get("ap"),
        "split": space.split_names()[1],
        "selection_split": space.split_names()[0],
        "race_run": str(src.relative_to(spec.study_dir)),
        "curriculum": win.choice.describe(),
        **{k: outcome.summary[k] for k in ("selection", "fidelity", "final")},
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(
        out / "status.json",
        json.dumps(
            {
                "state": "done",
                "trial": win.arm.source_trial,
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "error": None,
            }
        ),
    )
    return out / "student.pt"


__all__ = [
    "DECISION",
    "SELECTION_OF",
    "SELECTION_SUFFIX",
    "Candidate",
    "SelectionOutcome",
    "decision_lines",
    "export_recipe",
    "is_selection_study",
    "load_decision",
    "open_selection_study",
    "proxy_score",
    "race_results",
    "race_settings",
    "run_selection",
    "selected_recipe",
    "selection_study_name",
    "ship",
    "shortlist",
    "summary",
]
