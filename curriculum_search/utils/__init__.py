"""Small shared helpers: atomic files, hashing, YAML, typed configs, runtime settings."""

from __future__ import annotations

from curriculum_search.utils.config import from_dict, to_dict
from curriculum_search.utils.io import (
    atomic_write_bytes,
    atomic_write_text,
    dump_yaml,
    load_json,
    load_yaml,
    sha256_bytes,
    sha256_file,
    stable_hash,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "dump_yaml",
    "from_dict",
    "load_json",
    "load_yaml",
    "sha256_bytes",
    "sha256_file",
    "stable_hash",
    "to_dict",
]
