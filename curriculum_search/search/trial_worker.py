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
from pathlib import Path
from typing import Any

import optuna

from curriculum_search.curriculum.recipe import Recipe
from curriculum_search.curriculum.trainer import RunOptions, run_recipe
from curriculum_search.distill.cache import CacheConfig
from curriculum_search.engine.evaluate import EvalResult
from curriculum_search.errors import TrialFailure, UserError
from curriculum_search.search.space import make_pruner, space_from_dict
from curriculum_search.search.storage import StorageSpec, open_storage
from curriculum_search.utils.config import from_dict
from curriculum_search.utils.io import atomic_write_text

RESULT_FILE = "result.json"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run the trial described by ``job``; returns the result dict (also written to disk)."""
    t0 = time.time()
    run_dir = Path(job["run_dir"])
    recipe = from_dict(Recipe, job["recipe"])
    space = space_from_dict(job["space"])

    st = job["storage"]
    spec = StorageSpec(st["url"], Path(st["study_dir"]), _p(st["sqlite_path"]), _p(st["journal_path"]))
    storage = open_storage(spec, heartbeat=False)
    study = optuna.load_study(
        study_name=job["study"], storage=storage, pruner=make_pruner(space, job["first_stage_iterations"])
    )
    trial = optuna.trial.Trial(study, job["trial_id"])
    total = recipe.total_iterations
    first_stage_end = recipe.stages[0].iterations if len(recipe.stages) > 1 else 0
    last: dict[str, float] = {}

    def report(iteration: int, res: EvalResult) -> None:
        last["ap"], last["iteration"] = res.ap, iteration
        trial.report(res.ap, step=iteration)
        # never judge a curriculum before its first stage is over (a weak start is by design)
        if job["prune"] and first_stage_end <= iteration < total and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {iteration}")

    cache = CacheConfig(**{**job["cache"], "root": _p(job["cache"]["root"])})
    values, metrics, forwards = [], {}, 0
    try:
        for i, seed in enumerate(job["seeds"]):
            out = run_dir if len(job["seeds"]) == 1 else run_dir / f"seed{seed}"
            res = run_recipe(
                recipe.replace(seed=seed),
                RunOptions(
                    out_dir=out,
                    cache_root=Path(job["cache_root"]),
                    base_dir=Path(job["base_dir"]),
                    source=job.get("source"),
                    cache=cache,
                    progress=job.get("progress", False),
                    callbacks=[report] if i == 0 else [],
                    device=job.get("device"),
                    threads=job.get("threads"),
                ),
            )
            values.append(res.metrics.ap)
            forwards += res.teacher_forwards
            if i == 0:
                metrics = res.metrics.as_dict()
        result: dict[str, Any] = {
            "state": "complete",
            "value": sum(values) / len(values),
            "seed_values": values,
            "metrics": metrics,
            "teacher_forwards": forwards,
        }
    except optuna.TrialPruned:
        result = {"state": "pruned", "pruned_at": last.get("iteration"), "value": last.get("ap")}
    except (TrialFailure, UserError) as exc:
        result = {"state": "fail", "reason": str(exc)}
    result["wall_time_s"] = round(time.time() - t0, 2)
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=2))
    return result


def _p(value: str | None) -> Path | None:
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    job = json.loads(Path(argv[0]).read_text())
    try:
        run_job(job)
    except Exception as exc:
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        atomic_write_text(Path(job["run_dir"]) / RESULT_FILE, json.dumps({"state": "fail", "reason": reason}))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
