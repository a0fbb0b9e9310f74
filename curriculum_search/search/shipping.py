"""Shipping the race's winner: its first full-length race run becomes the study's ``full/`` and its
curriculum ``best_recipe.yaml``; ``export`` writes the shipped curriculum (or a trial) as a recipe.
See :mod:`curriculum_search.search.selection` for the whole stage."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curriculum_search.curriculum.recipe import Recipe, recipe_to_dict, save_recipe
from curriculum_search.search.encoding import build_recipe, choice_from_dict
from curriculum_search.search.options import SearchOptions
from curriculum_search.search.race_report import load_decision
from curriculum_search.search.race_runs import SelectionOutcome, race_run_dir
from curriculum_search.search.results import export_trial_recipe, provenance
from curriculum_search.search.space import SearchSpace
from curriculum_search.search.storage import load_study_readonly, storage_spec
from curriculum_search.search.study import space_of
from curriculum_search.utils.io import atomic_write_text, dump_yaml


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
    src = race_run_dir(spec, key)
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
