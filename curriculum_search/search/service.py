"""The search service's public names, re-exported from the modules that do each job.

* :mod:`~curriculum_search.search.study` — create/resume a study, recover interrupted trials,
  enqueue the baselines;
* :mod:`~curriculum_search.search.coordinator` — claim trials and run each in its own process;
* :mod:`~curriculum_search.search.selection` — race the shortlist against the best baseline;
* :mod:`~curriculum_search.search.results` / :mod:`~curriculum_search.search.fullrun` — the best
  trial, recipes, the full run;
* :mod:`~curriculum_search.search.listing` — the ``studies`` and ``status`` reports.
"""

from __future__ import annotations

from curriculum_search.search.coordinator import run_search
from curriculum_search.search.fullrun import run_full
from curriculum_search.search.listing import StudyRow, format_studies, list_studies, study_status
from curriculum_search.search.options import SearchOptions, SearchSummary, study_name
from curriculum_search.search.results import best_trial, summarize, trial_recipe
from curriculum_search.search.selection import export_recipe
from curriculum_search.search.study import (
    FINISHED,
    enqueue_baselines,
    finished_count,
    open_study,
    recover_interrupted,
    space_of,
)

__all__ = [
    "FINISHED",
    "SearchOptions",
    "SearchSummary",
    "StudyRow",
    "best_trial",
    "enqueue_baselines",
    "export_recipe",
    "finished_count",
    "format_studies",
    "list_studies",
    "open_study",
    "recover_interrupted",
    "run_full",
    "run_search",
    "space_of",
    "study_name",
    "study_status",
    "summarize",
    "trial_recipe",
]
