"""One trial in its own process: ``python -m curriculum_search.search.trial_worker JOB.json``.

The coordinator claims the trial (``study.ask``) and writes the job file; this process trains the
proxy curriculum, reports AP at fixed global iterations to the study (``trial.report``), asks the
pruner, and writes ``result.json`` for the coordinator, which alone finishes the trial
(``study.tell``). Running each trial in a fresh process frees all (GPU) memory and lets the
coordinator survive crashes, out-of-memory kills and segfaults of a trial.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import optuna

from curriculum_search.curriculum.recipe import DataConfig, Recipe
from curriculum_search.curriculum.trainer import RunOptions, RunResult, run_recipe
from curriculum_search.distill.cache import CacheConfig
from curriculum_search.engine.evaluate import EvalResult
from curriculum_search.errors import StudyError, TrialFailure, UserError
from curriculum_search.search.failures import environment_cause
from curriculum_search.search.protocol import RESULT_FILE, TrialJob, TrialResult
from curriculum_search.search.space import make_pruner, pruning_allowed, space_from_dict
from curriculum_search.search.storage import RUN_LOCK, file_lock, open_storage
from curriculum_search.utils.config import from_dict
from curriculum_search.utils.io import atomic_write_text

__all__ = ["RESULT_FILE", "main", "run_job"]


def run_job(job: TrialJob) -> TrialResult:
    """Run the trial described by ``job``; returns the result (also written to its run folder)."""
    t0 = time.time()
    run_dir = Path(job.run_dir)
    recipe = from_dict(Recipe, job.recipe)
    space = space_from_dict(job.space)

    storage = open_storage(job.storage.spec(), heartbeat=False)
    study = optuna.load_study(
        study_name=job.study, storage=storage, pruner=make_pruner(space, job.first_stage_iterations)
    )
    trial = optuna.trial.Trial(study, job.trial_id)
    stage_its = [s.iterations for s in recipe.stages]
    last: dict[str, float] = {}

    def report(iteration: int, res: EvalResult) -> None:
        last["ap"], last["iteration"] = res.ap, iteration
        trial.report(res.ap, step=iteration)
        # not in the first stage, nor in the dip right after a stage switch (see pruning_allowed)
        if (
            job.prune
            and pruning_allowed(iteration, stage_its, recipe.train.eval_every)
            and trial.should_prune()
        ):
            raise optuna.TrialPruned(f"pruned at iteration {iteration}")

    cache = CacheConfig(**{**job.cache, "root": _p(job.cache["root"])})
    options = RunOptions(
        out_dir=run_dir,
        cache_root=Path(job.cache_root),
        base_dir=Path(job.base_dir),
        source=job.source,
        cache=cache,
        progress=job.progress,
        device=job.device,
        threads=job.threads,
    )
    result = TrialResult("complete")
    try:
        for i, seed in enumerate(job.seeds):
            out = run_dir if len(job.seeds) == 1 else run_dir / f"seed{seed}"
            res = run_recipe(
                recipe.replace(seed=seed),
                replace(options, out_dir=out, callbacks=[report] if i == 0 else []),
            )
            result.seed_values.append(res.metrics.ap)
            result.teacher_forwards += res.teacher_forwards
            if i == 0:
                result.metrics = res.metrics.as_dict()
            if job.report_data is not None:
                rep = evaluate_on(res, recipe, from_dict(DataConfig, job.report_data), options)
                result.report_values.append(rep.ap)
                if i == 0:
                    result.report_metrics = rep.as_dict()
        result.value = sum(result.seed_values) / len(result.seed_values)
    except optuna.TrialPruned:
        result = TrialResult("pruned", value=last.get("ap"), pruned_at=_int(last.get("iteration")))
    except (TrialFailure, UserError) as exc:
        result = TrialResult("fail", reason=str(exc), environment=environment_cause(exc))
    result.wall_time_s = round(time.time() - t0, 2)
    result.write(run_dir)
    return result


def evaluate_on(res: RunResult, recipe: Recipe, data: DataConfig, options: RunOptions) -> EvalResult:
    """Evaluate a finished run's student on another split (``data``'s evaluation images).

    The result is kept next to the run (``metrics-<split>.json``), so a resumed job does not
    evaluate twice.
    """
    from curriculum_search.curriculum.datasets import build_datasets
    from curriculum_search.curriculum.trainer import loader_workers
    from curriculum_search.engine.evaluate import write_detections
    from curriculum_search.models import load_detector
    from curriculum_search.utils.runtime import pick_device

    path = res.student_path.parent / f"metrics-{data.eval_split}.json"
    if path.is_file():
        return EvalResult(**json.loads(path.read_text()))
    model, _ = load_detector(res.student_path)
    ds = build_datasets(
        data,
        class_names=recipe.student.class_names if data.kind == "coco" else None,
        cache_root=options.cache_root,
        base_dir=options.base_dir,
        source=options.source,
        seed=recipe.seed,
    )
    device = pick_device(options.device or recipe.train.device)
    # issue 14: the split's detections as COCO results (original px, dataset category ids), next to
    # its metrics; ship() copies them to full/detections_<split>.json
    out = write_detections(
        model.to(device),
        ds.val,
        path.with_name(f"detections_{data.eval_split}.json"),
        batch_size=recipe.train.batch_size,
        device=str(device),
        num_workers=loader_workers(recipe),
    )
    atomic_write_text(path, json.dumps(out.as_dict(), indent=2))
    return out


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _p(value: str | None) -> Path | None:
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job = TrialJob.read(Path(argv[0]))
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # held while training: a retry never trains in the folder of a still-running original
        with file_lock(
            run_dir / RUN_LOCK, what=f"run folder {run_dir}", hint="another trial process trains here"
        ):
            return _run_and_report(job)
    except StudyError as exc:  # only the lock raises here; the folder (and result) are the other run's
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run_and_report(job: TrialJob) -> int:
    try:
        run_job(job)
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        TrialResult("fail", reason=reason, environment=environment_cause(exc)).write(Path(job.run_dir))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
