"""Helpers shared by test modules (instead of test files importing each other)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from curriculum_search.distill.cache import CacheConfig
from curriculum_search.search.options import SearchOptions

REPO = Path(__file__).resolve().parent.parent
#: The smoke-test space shipped with the product (space/tiny.yaml): 64 px, two tiny teachers.
TINY: dict[str, Any] = yaml.safe_load((REPO / "space" / "tiny.yaml").read_text())


def write_space(tmp: Path, **changes: Any) -> Path:
    """``space/tiny.yaml`` with top-level blocks replaced, written to ``tmp/tiny.yaml``."""
    data = json.loads(json.dumps(TINY))
    data.update(changes)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def opts(studies: Path, space_file: Path, **kw: Any) -> SearchOptions:
    """Quiet single-threaded search options for a tiny study under ``studies``."""
    return SearchOptions(
        studies_root=studies,
        cache=CacheConfig(root=studies / "_cache" / "teachers"),
        progress=False,
        threads=1,
        space_file=space_file,
        echo=lambda s: None,
        **kw,
    )
