"""curriculum_search: search and train multi-teacher distillation curricula for object detectors."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
