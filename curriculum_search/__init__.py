"""curriculum_search: search and train multi-teacher distillation curricula for object detectors.

The public API (imported lazily, so ``import curriculum_search`` stays light)::

    import curriculum_search as cs
    result = cs.run("space/tiny.yaml")          # zoo -> search -> selection -> shipped student
    cs.status("tiny")["final"]                 # held-out report

See :mod:`curriculum_search.api`.
"""

from __future__ import annotations

from typing import Any

from curriculum_search import api as _api  # light: the API imports its dependencies lazily
from curriculum_search._version import __version__

__all__ = ["__version__", *_api.__all__]


def __getattr__(name: str) -> Any:
    if name in _api.__all__:
        return getattr(_api, name)
    raise AttributeError(f"module 'curriculum_search' has no attribute {name!r}")
