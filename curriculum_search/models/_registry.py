"""Detector-arch registry: one file per arch, registered with :func:`register_arch`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curriculum_search.models.detector import Detector
    from curriculum_search.models.spec import DetectorSpec

_ARCHS: dict[str, Callable[[DetectorSpec], Detector]] = {}


def register_arch(
    name: str,
) -> Callable[[Callable[[DetectorSpec], Detector]], Callable[[DetectorSpec], Detector]]:
    """Class/function decorator registering a builder ``spec -> Detector`` under ``name``."""

    def deco(builder: Callable[[DetectorSpec], Detector]) -> Callable[[DetectorSpec], Detector]:
        if name in _ARCHS:
            raise ValueError(f"detector arch {name!r} registered twice")
        _ARCHS[name] = builder
        return builder

    return deco


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def arch_builder(name: str) -> Callable[[DetectorSpec], Detector]:
    try:
        return _ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown detector arch {name!r} (known: {', '.join(list_archs())})") from None
