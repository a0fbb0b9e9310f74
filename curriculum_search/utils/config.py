"""Typed, frozen dataclass configs built from plain dicts (YAML) with one-line errors.

``from_dict(Cls, data, path=...)`` walks the dataclass' type hints, so the types written on the
dataclass are the only schema. Unknown keys, missing required keys, wrong types and values that
a ``__post_init__`` rejects (via :func:`check`) all raise :class:`ConfigError` naming the file
and the dotted key, e.g. ``space/x.yaml: search.n_stages: expected an integer, got 'two'``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from curriculum_search.errors import ConfigError

T = TypeVar("T")


class FieldError(ValueError):
    """Raised inside ``__post_init__`` to reject a field; :func:`from_dict` adds file and prefix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check(condition: bool, field: str, message: str) -> None:
    """Validation helper for ``__post_init__``: raise :class:`FieldError` unless ``condition``."""
    if not condition:
        raise FieldError(field, message)


def _join(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(tp: Any, value: Any, path: str | Path | None, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(path, key, "must not be empty")
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, path, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                path, key, f"must be one of {', '.join(map(repr, allowed))}, got {_describe(value)}"
            )
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, path=path, prefix=key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, key, f"expected true/false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, key, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, key, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, key, f"expected a string, got {_describe(value)}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(path, key, f"expected a path, got {_describe(value)}")
        return Path(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, key, f"expected a list, got {_describe(value)}")
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(path, key, f"expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, path, _join(key, i)) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, path, _join(key, i)) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, key, f"expected a mapping, got {_describe(value)}")
        args = get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(path, key, f"keys must be strings, got {_describe(k)}")
            out[k] = _convert(vt, v, path, _join(key, k))
        return out
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(path, key, f"expected {tp.__name__}, got {_describe(value)}")
        return value
    return value


def from_dict(cls: type[T], data: Any, path: str | Path | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, validating every field recursively."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(path, prefix or None, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            path, _join(prefix, str(unknown[0])), f"unknown key (allowed: {', '.join(sorted(fields))})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(path, key, "missing required key")
            continue
        kwargs[name] = _convert(hints[name], data[name], path, key)
    try:
        return cls(**kwargs)
    except FieldError as exc:
        raise ConfigError(path, _join(prefix, exc.field), exc.message) from None


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: dataclasses/tuples/paths to plain YAML-safe values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


__all__ = ["FieldError", "check", "from_dict", "to_dict"]
