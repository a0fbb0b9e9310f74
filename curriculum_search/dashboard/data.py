"""Read-only loading of studies, trial run files and full runs into pandas / dataclasses.

Nothing here writes: SQLite studies are opened through a read-only URI, so the dashboard never
takes a write lock, never blocks the search that is writing the study, and never creates a file
in the studies folder (see :func:`readonly_sqlite_url`). Every function is plain Python (no
Streamlit) so tests and the benchmark call them directly; :mod:`.pages` caches them.

Studies are read by the package's one study reader (:mod:`curriculum_search.search.reader`:
Optuna's storage API, the same records, count rule and state words as the ``studies`` command);
:mod:`.study_frames` turns its records into frames. :mod:`.pages` keeps one reader per storage
(:func:`open_reader`, :func:`reader_key`) so that a refresh reads only new and unfinished trials.

By job: :mod:`.sources` (where studies live, read-only storages and readers, cache keys),
:mod:`.study_frames` (one study as frames: :class:`StudyData`, :func:`load_study`, parameter
importances), :mod:`.run_files` (trial runs, the full run, the race, recipe stages); this module
holds the study table and the recipe download, and re-exports the names of the other three (the
pages use them as ``dd.<name>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curriculum_search.dashboard.run_files import (
    LOG_TAIL_BYTES,
    RACE_COLUMNS,
    FullRun,
    Race,
    TrialRun,
    load_full_run,
    load_race,
    load_trial_run,
    read_json,
    read_jsonl,
    recipe_stages,
    stage_metrics,
    tail_text,
    trial_run_dir,
    trial_run_files,
)
from curriculum_search.dashboard.sources import (
    RESERVED_DIRS,
    SERVER_TTL_S,
    Discovery,
    Problem,
    StudySource,
    change_token,
    close_storage,
    discover,
    files_token,
    first_line,
    open_reader,
    open_readonly_storage,
    reader_key,
    redact_url,
    sqlite_path,
)
from curriculum_search.dashboard.study_frames import (
    BASELINE_LABELS,
    BASELINE_ORDER,
    STATES,
    Importances,
    ParamInfo,
    StudyData,
    as_mapping,
    build_study_data,
    load_study,
    param_importances,
    to_float,
)
from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search import reader as R
from curriculum_search.search.reader import StudyReader
from curriculum_search.search.storage import readonly_sqlite_url
from curriculum_search.utils.io import dump_yaml

# -- study table ----------------------------------------------------------------------------------


def study_state(data: StudyData, full: FullRun | None) -> str:
    """One word for where a study stands: the reader's
    :func:`~curriculum_search.search.reader.study_state` (the ``studies`` command shows the same).

    ``empty`` (no trial), ``full run`` / ``done`` / ``full run failed`` / ``full run interrupted``
    (full-length run state), ``searching`` (a trial is running), ``selecting`` (a race run is
    running), ``selected`` (the race decided), ``searched`` (target reached) or ``stopped`` (fewer
    finished trials than targeted and nothing running: re-run the command to resume).
    """
    return R.study_state(
        data.tally,
        data.target_trials,
        full=full.state if full is not None else None,
        race_running=data.race_running,
        decided=data.decision is not None,
    )


def summary_row(data: StudyData, full: FullRun | None) -> dict[str, Any]:
    """The study-table row of a study (counts by the reader's count rule)."""
    tally = data.tally
    best = data.best()
    target = data.target_trials
    full_ap = to_float((full.metrics or {}).get("ap")) if full is not None else math.nan
    return {
        "study": data.source.name,
        "state": study_state(data, full),
        "best AP": float(best["value"]) if best is not None else math.nan,
        "best trial": int(best["number"]) if best is not None else None,
        "progress": tally.finished / target if target else math.nan,
        "finished": tally.finished,
        "target": target,
        "complete": tally.complete,
        "pruned": tally.pruned,
        "failed": tally.failed,
        "running": tally.running,
        "compute (h)": float(data.trials["wall_time_s"].sum(skipna=True)) / 3600.0
        if len(data.trials)
        else 0.0,
        "proxy cost": float(data.trials["proxy_cost"].sum(skipna=True)) if len(data.trials) else 0.0,
        "full-run AP": full_ap,
        "last update": data.last_update,
        "location": data.source.location,
    }


def error_row(source: StudySource, message: str) -> dict[str, Any]:
    """The study-table row of a study that could not be read."""
    return {"study": source.name, "state": R.UNREADABLE, "location": source.location, "error": message}


# -- recipes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeText:
    """A recipe YAML to download; ``exact`` is False for the curriculum-dict fallback."""

    text: str
    file_name: str
    exact: bool
    note: str = ""


def recipe_yaml(
    source: StudySource, studies_dir: Path, trial_number: int | None, data: StudyData | None = None
) -> RecipeText:
    """The recipe YAML of a trial (the best one when ``trial_number`` is None).

    Uses ``curriculum_search.search.service.export_recipe`` (the same text as the ``export``
    command). If it is unavailable or fails, falls back to the trial's decoded curriculum as YAML
    (``exact=False`` and a ``note`` saying why).
    """
    label = "best" if trial_number is None else f"trial{trial_number}"
    file_name = f"{source.name}-{label}.yaml"
    storage = None if source.folder / "study.db" == sqlite_path(source.url) else source.url
    note = ""
    try:
        from curriculum_search.search.service import export_recipe

        text = export_recipe(source.name, storage, studies_dir, trial_number=trial_number, proxy=False)
        return RecipeText(str(text), file_name, True)
    except ImportError:
        note = "the recipe exporter (curriculum_search.search.service) is not available"
    except Exception as exc:
        note = f"the recipe exporter failed ({first_line(exc)})"
    if data is None:
        data = load_study(source)
    if trial_number is None:
        best = data.best()
        if best is None:
            raise StudyError(f"{source.location}: no finished trial to export yet")
        trial_number = int(best["number"])
    attrs = data.trial_attrs.get(trial_number)
    if attrs is None:
        raise StudyError(f"{source.location}: no trial {trial_number}")
    payload = {
        "study": source.name,
        "trial": trial_number,
        "description": attrs.get(A.DESCRIPTION, ""),
        "curriculum": attrs.get(A.CURRICULUM, {}),
        "params": data.trial_params.get(trial_number, {}),
        "note": f"curriculum only: {note}",
    }
    return RecipeText(dump_yaml(payload), file_name, False, note)


__all__ = [
    "BASELINE_LABELS",
    "BASELINE_ORDER",
    "LOG_TAIL_BYTES",
    "RACE_COLUMNS",
    "RESERVED_DIRS",
    "SERVER_TTL_S",
    "STATES",
    "Discovery",
    "FullRun",
    "Importances",
    "ParamInfo",
    "Problem",
    "Race",
    "RecipeText",
    "StudyData",
    "StudyError",
    "StudyReader",
    "StudySource",
    "TrialRun",
    "as_mapping",
    "build_study_data",
    "change_token",
    "close_storage",
    "discover",
    "error_row",
    "files_token",
    "load_full_run",
    "load_race",
    "load_study",
    "load_trial_run",
    "open_reader",
    "open_readonly_storage",
    "param_importances",
    "read_json",
    "read_jsonl",
    "reader_key",
    "readonly_sqlite_url",
    "recipe_stages",
    "recipe_yaml",
    "redact_url",
    "sqlite_path",
    "stage_metrics",
    "study_state",
    "summary_row",
    "tail_text",
    "to_float",
    "trial_run_dir",
    "trial_run_files",
]
