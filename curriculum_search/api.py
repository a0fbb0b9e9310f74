"""The Python API: the CLI's verbs as functions (the CLI is a thin layer over these).

Example (a notebook, the embedded default)::

    import curriculum_search as cs

    space = cs.load_space("space/tiny.yaml")
    result = cs.run(space, studies_dir="studies")   # zoo -> search -> selection -> shipped student
    print(result.metrics["final"])                  # held-out AP vs the best baseline and the student alone
    cs.status("tiny")["selection"]                  # the race's decision as JSON values
    cs.list_studies()

Every function resumes what an earlier call (or a killed process) left: finished trials, race runs,
zoo teachers and the teacher-output cache are reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curriculum_search.curriculum.recipe import Recipe
    from curriculum_search.curriculum.trainer import RunResult
    from curriculum_search.search.fullrun import FullResult
    from curriculum_search.search.listing import StudyRow
    from curriculum_search.search.options import SearchOptions, SearchSummary
    from curriculum_search.search.space import SearchSpace

DEFAULT_SPACE = Path("space/default.yaml")


def load_space(path: str | Path) -> SearchSpace:
    """Load and validate a search-space YAML file (errors name the file and the key)."""
    from curriculum_search.search.space import load_space as _load

    return _load(path)


def options(
    studies_dir: str | Path = "studies", *, space_file: str | Path | None = None, **kw: Any
) -> SearchOptions:
    """:class:`~curriculum_search.search.options.SearchOptions` with the teacher cache under
    ``studies_dir`` (``name``, ``storage``, ``trials``, ``workers``, ``device``, ``threads``,
    ``seed``, ``progress``, ``echo`` as keywords)."""
    from curriculum_search.distill.cache import CacheConfig
    from curriculum_search.search.options import SearchOptions

    root = Path(studies_dir)
    kw.setdefault("cache", CacheConfig(root=root / "_cache" / "teachers"))
    return SearchOptions(studies_root=root, space_file=Path(space_file) if space_file else None, **kw)


def _space(space: SearchSpace | str | Path | None) -> tuple[SearchSpace, Path | None]:
    """The space (loaded when a path) after the offline check of its pretrained weights."""
    from curriculum_search.models.pretrained import ensure_pretrained, space_specs

    if space is None:
        space = DEFAULT_SPACE
    src = Path(space) if isinstance(space, str | Path) else None
    sp = load_space(space) if isinstance(space, str | Path) else space
    ensure_pretrained(space_specs(sp), src)  # offline: one line before any training
    return sp, src


def build_zoo(
    space: SearchSpace | str | Path | None = None, studies_dir: str | Path = "studies", **kw: Any
) -> Any:
    """Train the space's missing zoo teachers (and the student-alone reference); their infos."""
    from curriculum_search.search.zoo import build_zoo as _build

    sp, src = _space(space)
    o = options(studies_dir, space_file=src, **kw)
    return _build(
        sp, o.studies_root, cache=o.cache, device=o.device, threads=o.threads, progress=o.progress, source=src
    )


def run_search(
    space: SearchSpace | str | Path | None = None, studies_dir: str | Path = "studies", **kw: Any
) -> SearchSummary:
    """Run or resume the search of ``space`` (zoo teachers first); see :func:`options` for ``kw``.

    (Named ``run_search``: ``curriculum_search.search`` is the search package.)
    """
    from curriculum_search.search.coordinator import run_search as _run

    sp, src = _space(space)
    return _run(sp, options(studies_dir, space_file=src, **kw))


def select(
    space: SearchSpace | str | Path | None = None, studies_dir: str | Path = "studies", **kw: Any
) -> FullResult:
    """Race the search's shortlist against the best baseline and ship the winner (resumable)."""
    from curriculum_search.search.fullrun import run_full

    sp, src = _space(space)
    return run_full(sp, options(studies_dir, space_file=src, **kw))


def run(
    space: SearchSpace | str | Path | None = None, studies_dir: str | Path = "studies", **kw: Any
) -> FullResult:
    """The main job: zoo → search → selection → shipped student in ``<studies_dir>/<name>/full``."""
    from curriculum_search.search.coordinator import run_search
    from curriculum_search.search.fullrun import run_full

    sp, src = _space(space)
    opts = options(studies_dir, space_file=src, **kw)
    run_search(sp, opts)
    return run_full(sp, opts)


def train(
    recipe: Recipe | str | Path, out_dir: str | Path, studies_dir: str | Path = "studies", **kw: Any
) -> RunResult:
    """Train a recipe to the end (resumes from ``out_dir``); ``kw`` go to ``RunOptions``."""
    from curriculum_search.curriculum.recipe import load_recipe
    from curriculum_search.curriculum.trainer import RunOptions, run_recipe

    source = None
    if isinstance(recipe, str | Path):
        source = Path(recipe)
        recipe = load_recipe(recipe)
    root = Path(studies_dir)
    return run_recipe(
        recipe,
        RunOptions(out_dir=Path(out_dir), cache_root=root / "_cache", base_dir=root, source=source, **kw),
    )


def export_recipe(
    study: str,
    studies_dir: str | Path = "studies",
    *,
    trial: int | None = None,
    proxy: bool = False,
    storage: str | None = None,
) -> str:
    """YAML text of a trial's recipe (default: the best finished trial) with provenance."""
    from curriculum_search.search.selection import export_recipe as _export

    return _export(study, storage, Path(studies_dir), trial, proxy=proxy)


def list_studies(studies_dir: str | Path = "studies", storage: str | None = None) -> list[StudyRow]:
    """Every study under ``studies_dir`` (and in ``storage``): state, best proxy AP, counts."""
    from curriculum_search.search.listing import list_studies as _list

    return _list(Path(studies_dir), storage)


def status(name: str, studies_dir: str | Path = "studies", storage: str | None = None) -> dict[str, Any]:
    """One study as JSON values (what ``status NAME --json`` prints)."""
    from curriculum_search.search.listing import status_json

    return status_json(name, Path(studies_dir), storage)


def list_models() -> dict[str, list[str]]:
    """What a space can name: detector archs, feature losses, decays, pseudo-label fusers, samplers, pruners."""
    from curriculum_search.distill.decay import list_decays
    from curriculum_search.distill.feature import list_feature_losses
    from curriculum_search.models._registry import list_archs
    from curriculum_search.search.space import PRUNERS, SAMPLERS

    try:
        from curriculum_search.distill.pseudo import list_fusers

        fusers = list_fusers()
    except ImportError:  # pragma: no cover
        fusers = []
    return {
        "archs": list_archs(),
        "feature_losses": list_feature_losses(),
        "decays": list_decays(),
        "fusers": fusers,
        "samplers": list(SAMPLERS),
        "pruners": list(PRUNERS),
    }


__all__ = [
    "build_zoo",
    "export_recipe",
    "list_models",
    "list_studies",
    "load_space",
    "options",
    "run",
    "run_search",
    "select",
    "status",
    "train",
]
