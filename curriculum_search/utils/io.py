"""Atomic writes, content hashes and safe YAML/JSON loading with one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from curriculum_search.errors import ConfigError


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader sees either the old file or the complete new one, never a partial write, even if
    the process is killed mid-way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode())  # mkstemp makes 0600: give the file the usual umask mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc  # name the file (e.g. ENOSPC)
        raise
    return path


def _default_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open(path, "w")`` would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def sweep_temp_files(folder: str | Path, min_age_s: float = 300.0) -> int:
    """Delete the temporary files :func:`atomic_write_bytes` leaves behind when its process is
    killed mid-write (``.<name>.<random>.tmp``) in ``folder``; files younger than ``min_age_s``
    may belong to a write in progress and are kept. Returns how many were deleted."""
    now, n = time.time(), 0
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            if tmp.is_file() and now - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                n += 1
        except OSError:  # gone already (another sweeper) or not ours to delete
            continue
    return n


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class _DuplicateKey(Exception):
    def __init__(self, key: object, where: str) -> None:
        super().__init__(key)
        self.key, self.where = key, where


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last
    silently: a second ``teachers: {a: ...}`` entry would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if duplicate and key != "<<":
                mark = key_node.start_mark
                raise _DuplicateKey(key, f"line {mark.line + 1}, column {mark.column + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping safely; any problem becomes a one-line :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        data = _safe_load_unique(path.read_text(encoding="utf-8"))
    except _DuplicateKey as exc:
        raise ConfigError(
            path, exc.where, f"duplicate key {exc.key!r} (the first one would be lost)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(path, where, f"malformed YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not a UTF-8 text file") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, None, f"expected a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def dump_yaml(data: Mapping[str, Any], path: str | Path | None = None) -> str:
    text = yaml.safe_dump(
        dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True, width=100
    )
    if path is not None:
        atomic_write_text(path, text)
    return text


def load_json(path: str | Path) -> Any:
    """Load JSON; a missing or malformed file becomes a one-line :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            path, f"line {exc.lineno}, column {exc.colno}", f"malformed JSON ({exc.msg})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not a UTF-8 text file") from None
