"""The teacher zoo moved to :mod:`curriculum_search.search.zoo` (it reads search spaces); this
module keeps the old import path working."""

from __future__ import annotations

from curriculum_search.search import zoo as _zoo
from curriculum_search.search.zoo import *  # noqa: F403

__all__ = list(_zoo.__all__)
