"""The search package: space files, curriculum encoding, baselines, the Optuna study and its
coordinator, the selection race, results and the full run.

Modules by job (data flows down this list):

* :mod:`.space` — search-space files: loading and hashes; their blocks (validated configs) in
  :mod:`.space_blocks`, their Optuna sampler and pruner in :mod:`.samplers`;
* :mod:`.encoding`, :mod:`.baselines`, :mod:`.heuristic` — curricula as trial parameters; the
  decoded curriculum in :mod:`.choice`, its recipes and costs in :mod:`.recipes`;
* :mod:`.attrs` — the names of the study and trial attributes (the study format);
* :mod:`.storage` — Optuna storages and locks; :mod:`.protocol` — the typed job/result files;
* :mod:`.study` — create/resume a study, recover, enqueue baselines;
* :mod:`.processes`, :mod:`.trial_worker`, :mod:`.coordinator` — run trials in their own processes;
* :mod:`.race`, :mod:`.selection` — the race that decides what ships (by job: :mod:`.arms`,
  :mod:`.race_runs`, :mod:`.race_report`, :mod:`.shipping`);
* :mod:`.results`, :mod:`.fullrun` — best trial, recipes, shipped student;
* :mod:`.reader`, :mod:`.listing` — the one read-only study reader (typed records, one state
  function, one count rule; CLI, dashboard and benchmarks use it) and the ``studies``/``status``
  reports.

:mod:`.service` re-exports the names earlier versions had there.
"""
