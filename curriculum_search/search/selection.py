"""The selection stage: race the search's shortlist against the baselines, then ship the winner.

A search ranks curricula by short single-seed proxies, far below seed noise. Before anything is
shipped, :func:`run_selection`

1. shortlists ``selection.shortlist`` distinct searched curricula by a noise-aware proxy score
   (:func:`proxy_score`), takes the baseline with the best proxy score as the *incumbent*, every
   other distinct distilling baseline as a challenger too (the proxy ranks baselines no better than
   anything else), optionally the incumbent at the best challenger's learning rate (so a curriculum
   cannot win through its LR alone), and the student alone as the *reference*;
2. races them (:mod:`~curriculum_search.search.race`) on common random numbers — the same seeds,
   data order and selection-split images for every arm — at increasing budgets, the last one the
   full length with >= 2 seeds;
3. ships the best baseline — the baseline with the best mean over the last rung's common seeds —
   unless a searched challenger's paired AP difference against it clears ``selection.margin`` at
   the lower confidence bound.

Every race run is a trial of a sibling Optuna study ``<name>:selection`` in the same storage (value:
AP on the selection split; user attributes: arm, curriculum, budget, seed, AP on the report split),
run in its own process with its own resumable run folder, so a killed race resumes without
repeating a finished run, and the runs show in the dashboard and in Optuna's own tools. The winner's
first full-length run *is* the full run (:func:`ship`): ``full/student.pt`` and
``full/metrics.json`` with the report-split numbers against the best baseline and the student alone.

The stage by job: the arms (:mod:`~curriculum_search.search.arms`), running the race
(:mod:`~curriculum_search.search.race_runs`), its decision as JSON and words
(:mod:`~curriculum_search.search.race_report`), shipping the winner
(:mod:`~curriculum_search.search.shipping`); the race's pure statistics and decisions are
:mod:`~curriculum_search.search.race`. This module re-exports their public names.
"""

from __future__ import annotations

from curriculum_search.search.arms import Candidate, proxy_score, race_settings, shortlist
from curriculum_search.search.attrs import (  # the study format; re-exported here
    DECISION,
    SELECTION_OF,
    SELECTION_SUFFIX,
    is_selection_study,
    selection_study_name,
)
from curriculum_search.search.race_report import TAU_WARNING, decision_lines, load_decision, summary
from curriculum_search.search.race_runs import (
    MAX_INTERRUPTIONS,
    SelectionOutcome,
    open_selection_study,
    race_results,
    run_selection,
)
from curriculum_search.search.shipping import export_recipe, selected_recipe, ship

__all__ = [
    "DECISION",
    "MAX_INTERRUPTIONS",
    "SELECTION_OF",
    "SELECTION_SUFFIX",
    "TAU_WARNING",
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
