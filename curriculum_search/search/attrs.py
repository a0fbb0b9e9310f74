"""Names of the user attributes a study and its trials carry (the study format).

Writers (study set-up, coordinator, selection) and readers (:mod:`~curriculum_search.search.reader`,
CLI, dashboard, benchmarks) use these names instead of string literals, so a key is spelled once.
The values are the stored keys: changing one breaks existing studies.
"""

from __future__ import annotations

# -- study attributes ------------------------------------------------------------------------------
#: The search space as a dict (``space_from_dict`` rebuilds it).
SPACE = "space"
#: The space file the study was created from (``None`` for the embedded default).
SPACE_FILE = "space_file"
#: Hash of the teacher pool; a study keeps its pool.
POOL_HASH = "pool_hash"
#: ``curriculum_search`` version that created the study.
PACKAGE_VERSION = "package_version"
#: Creation time (UTC, ISO 8601).
CREATED = "created"
#: Number of trials the search aims for (``--trials`` or the space's ``trials``).
TARGET_TRIALS = "target_trials"
#: Teachers of the pool: name, AP, GFLOPs (a list of dicts).
TEACHER_INFO = "teacher_info"
#: Teacher order of the adaptation-cost heuristic.
HEURISTIC_ORDER = "heuristic_order"
#: The baselines were enqueued (once per study).
BASELINES_ENQUEUED = "baselines_enqueued"
#: Student GFLOPs and cost summary (proxy-cost model).
STUDENT_GFLOPS = "student_gflops"
STUDENT_COST = "student_cost"
#: A student-only result kept as a study attribute (``{"ap": ...}``) instead of a trial.
STUDENT_ONLY_RESULT = "student_only"
#: Hash per part of the space that decides results (``study.FINGERPRINT_KEYS``): a study keeps it.
FINGERPRINT = "fingerprint"
#: Short id of the fingerprint: part of every trial run folder name.
FINGERPRINT_ID = "fingerprint_id"
#: Written last when a study is created: a study without it was interrupted while being set up.
INITIALISED = "initialised"

# -- the selection study (``<name>:selection``, same storage) ---------------------------------------
#: Suffix of the sibling study that holds a study's race runs.
SELECTION_SUFFIX = ":selection"


def selection_study_name(name: str) -> str:
    """The name of the study holding the race runs of study ``name``."""
    return f"{name}{SELECTION_SUFFIX}"


def is_selection_study(name: str) -> bool:
    """True for a study holding another study's race runs (not a study of its own)."""
    return name.endswith(SELECTION_SUFFIX)


#: Name of the search study a selection study selects for.
SELECTION_OF = "selection_of"
#: The race's decision and report.
DECISION = "decision"

# -- trial attributes (search trials) ---------------------------------------------------------------
#: The decoded curriculum (``CurriculumChoice.as_dict``).
CURRICULUM = "curriculum"
#: Key of the curriculum (same key = same run folder, result reused).
CURRICULUM_KEY = "curriculum_key"
#: One-line description of the curriculum.
DESCRIPTION = "description"
#: Baseline name (``student_only``, ``direct_strongest``, ...); absent for searched trials.
BASELINE = "baseline"
#: Start iteration of each stage plus the total.
STAGE_BOUNDARIES = "stage_boundaries"
#: Proxy cost of the curriculum (teacher + student GFLOPs x iterations).
PROXY_COST = "proxy_cost"
#: Run folder, relative to the study folder.
RUN_DIR = "run_dir"
#: Final metrics of the proxy run (``ap``, ``ap50``, ...).
METRICS = "metrics"
#: Final AP of each seed of a multi-seed trial.
SEED_VALUES = "seed_values"
#: Teacher forward passes the run needed (cache misses).
TEACHER_FORWARDS = "teacher_forwards"
#: Wall time of the trial process (s).
WALL_TIME_S = "wall_time_s"
#: Iteration at which the trial was pruned.
PRUNED_AT = "pruned_at"
#: Why the trial failed.
FAILURE_REASON = "failure_reason"
#: Number of the trial whose result this one reuses (same curriculum).
REUSED_FROM = "reused_from"
#: The trial was failed and queued again: it is counted by its retry, never itself.
REQUEUED = "requeued"
#: Number of the trial this one retries.
RETRY_OF = "retry_of"
#: Why it was retried (``killed``: a SIGKILLed process is retried once; ``environment``;
#: ``timeout``; ``heartbeat``: its host stopped beating, on a server database).
RETRY_REASON = "retry_reason"
#: Cause of a failure that was the environment's (``disk full``, ``CUDA error``...): not counted.
ENVIRONMENT_FAILURE = "environment_failure"

#: Attributes a retry carries over from the trial it retries.
RETRY_KEEPS = (BASELINE, CURRICULUM, CURRICULUM_KEY, DESCRIPTION)
#: Attributes a reused result copies from its twin.
REUSE_COPIES = (METRICS, SEED_VALUES, RUN_DIR)

# -- trial attributes (race runs of the selection study) --------------------------------------------
ARM = "arm"
ARM_KEY = "arm_key"
ROLE = "role"
SOURCE_TRIAL = "source_trial"
ITERATIONS = "iterations"
SEED = "seed"
RUNG = "rung"
#: AP of the race run on the report split.
REPORT_AP = "report_ap"
REPORT_METRICS = "report_metrics"
#: A race run stopped by a killed coordinator: never counted as a result.
INTERRUPTED = "interrupted"
#: ``coordinator`` when the race run stopped with its coordinator (never counts as a failure).
INTERRUPTED_BY = "interrupted_by"
