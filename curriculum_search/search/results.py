"""Reading results out of a study: the best trial, a summary, a trial's recipe, the exported recipe."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from curriculum_search._version import __version__
from curriculum_search.curriculum.recipe import Recipe, recipe_to_dict
from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search.encoding import build_recipe, choice_from_dict
from curriculum_search.search.options import SearchSummary
from curriculum_search.search.space import SearchSpace
from curriculum_search.search.storage import StorageSpec, load_study_readonly, storage_spec
from curriculum_search.search.study import finished_count, space_of
from curriculum_search.utils.config import to_dict
from curriculum_search.utils.io import dump_yaml, stable_hash


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
        finished_count(study),
        bt.number if bt else None,
        bt.value if bt else None,
        bt.user_attrs.get(A.DESCRIPTION) if bt else None,
    )


def provenance(space: SearchSpace, study_name: str, **extra: object) -> dict[str, object]:
    """What an exported recipe records about where it came from (plus ``extra``)."""
    import torch
    import torchvision

    return {
        "study": study_name,
        **extra,
        "data_hash": stable_hash(to_dict(space.data)),
        "exported": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "curriculum_search": __version__,
            "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "optuna": str(optuna.__version__),
        },
    }


def trial_recipe(
    space: SearchSpace, study: optuna.Study, trial: FrozenTrial, studies_root: Path, *, proxy: bool = False
) -> Recipe:
    """The recipe of ``trial``'s curriculum at proxy or full length, with provenance."""
    choice = choice_from_dict(trial.user_attrs[A.CURRICULUM])
    phase = space.proxy if proxy else space.full
    recipe = build_recipe(
        space, choice, iterations=phase.iterations, proxy=proxy, seed=space.seed, studies_root=studies_root
    )
    prov = dict(recipe.provenance)
    prov.update(
        provenance(
            space,
            study.study_name,
            trial=trial.number,
            baseline=trial.user_attrs.get(A.BASELINE),
            proxy_ap=trial.value,
        )
    )
    return replace(recipe, name=f"{study.study_name}-trial{trial.number}", provenance=prov)


def export_trial_recipe(
    study_name_: str,
    storage: str | None,
    studies_root: Path,
    trial_number: int | None = None,
    proxy: bool = False,
) -> str:
    """YAML text of the best-proxy (or given) trial's recipe."""
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
        if A.CURRICULUM not in trial.user_attrs:
            raise StudyError(
                f"trial {trial_number} of {study_name_!r} has no decoded curriculum (it never started)"
            )
    recipe = trial_recipe(space_of(study), study, trial, studies_root, proxy=proxy)
    return dump_yaml(recipe_to_dict(recipe))
