"""What a search run is told (options) and what it answers (summary); shared by every search module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from curriculum_search.distill.cache import CacheConfig
from curriculum_search.search.space import SearchSpace


@dataclass
class SearchOptions:
    """How to run a search (what is not in the space file)."""

    studies_root: Path
    name: str | None = None
    storage: str | None = None
    trials: int | None = None
    timeout_s: float | None = None
    workers: int | None = None  # None: one per GPU, or per core on a CPU (processes.worker_count)
    device: str | None = None
    threads: int | None = None
    cache: CacheConfig = field(default_factory=CacheConfig)
    progress: bool = True
    seed: int | None = None
    space_file: Path | None = None
    echo: Callable[[str], None] = print
    wait: bool = False  # wait for another run of the study to finish instead of refusing


@dataclass
class SearchSummary:
    study_name: str
    storage: str
    finished: int
    best_trial: int | None
    best_value: float | None
    best_description: str | None


def study_name(space: SearchSpace, opts: SearchOptions) -> str:
    """The study's name: ``--name`` or the space's ``name``."""
    return opts.name or space.name


def run_seeds(space: SearchSpace, opts: SearchOptions, n: int) -> list[int]:
    """The ``n`` seeds of a run: the space's seed (or ``--seed``) and the next ones."""
    base = space.seed if opts.seed is None else opts.seed
    return [base + i for i in range(n)]
