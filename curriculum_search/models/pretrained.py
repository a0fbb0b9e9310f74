"""Pretrained weights a space or recipe asks for: present, downloadable now, or a one-line error.

``weights: "torchvision:..."`` (a COCO detector) and ``weights: timm`` (an ImageNet backbone) are
downloaded on first use. On a machine without internet that used to fail deep inside a zoo build
or a trial, after minutes of work, with a long retry log. :func:`ensure_pretrained` runs before any
training: each file is looked up in its cache (torch hub: ``$TORCH_HOME/hub/checkpoints``; timm:
the Hugging Face cache, or the torch hub cache for timm weights served by URL); a missing one is
downloaded right away when its server answers, and otherwise stops the command with one line
naming the weights, the file and how to provide them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from curriculum_search.errors import ConfigError
from curriculum_search.models.spec import DetectorSpec

#: Seconds to wait for a weights server before declaring the machine offline.
PROBE_TIMEOUT_S = 5.0
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file: what asks for it, where it comes from and where it is cached."""

    field: str  # e.g. "teachers.tv.spec.weights"
    what: str  # e.g. "torchvision FCOS_ResNet50_FPN_Weights.COCO_V1"
    url: str | None  # direct URL (torch hub cache) ...
    hf_repo: str | None  # ... or a Hugging Face repository (HF cache)


def _reachable(url: str) -> bool:
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _hub_path(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _hf_cached(repo: str) -> bool:
    import huggingface_hub

    cache = huggingface_hub.constants.HF_HUB_CACHE
    return any(
        isinstance(huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=cache), str)
        for name in _HF_FILES
    )


def weights_files(
    specs: Iterable[tuple[str, DetectorSpec]], source: str | Path | None = None
) -> list[WeightsFile]:
    """The downloadable files the ``(field, spec)`` pairs need (checkpoint paths and None need none)."""
    out: list[WeightsFile] = []
    for field, spec in specs:
        w = spec.weights
        if w is None:
            continue
        if w.startswith("torchvision:"):
            import torchvision.models.detection as tvd

            from curriculum_search.models.factory import _TORCHVISION_WEIGHTS

            if spec.arch not in _TORCHVISION_WEIGHTS:
                raise ConfigError(
                    source, f"{field}.weights", f"no torchvision weights for arch {spec.arch!r}"
                )
            enum = getattr(tvd, _TORCHVISION_WEIGHTS[spec.arch])
            member = w.split(":", 1)[1]
            try:
                tw = enum.DEFAULT if member in ("", "DEFAULT") else enum[member]
            except KeyError:
                names = ", ".join(m.name for m in enum)
                raise ConfigError(
                    source, f"{field}.weights", f"unknown torchvision weights {member!r} (known: {names})"
                ) from None
            out.append(WeightsFile(f"{field}.weights", f"torchvision {tw}", tw.url, None))
        elif w == "timm":
            import timm

            cfg = timm.models.get_pretrained_cfg(spec.backbone)
            if cfg is None:
                raise ConfigError(
                    source, f"{field}.backbone", f"timm has no pretrained weights for {spec.backbone!r}"
                )
            repo = getattr(cfg, "hf_hub_id", None) or None
            url = None if repo else (getattr(cfg, "url", None) or None)
            if repo is None and url is None:
                raise ConfigError(
                    source, f"{field}.backbone", f"timm has no pretrained weights for {spec.backbone!r}"
                )
            out.append(WeightsFile(f"{field}.weights", f"timm {spec.backbone} (ImageNet)", url, repo))
    return out


def _fetch(wf: WeightsFile) -> None:
    if wf.hf_repo is not None:
        import huggingface_hub

        last: Exception | None = None
        for name in _HF_FILES:
            try:
                huggingface_hub.hf_hub_download(wf.hf_repo, name)
                return
            except Exception as exc:  # not found under this name, or the network failed
                last = exc
        raise OSError(str(last).splitlines()[0] if last else "download failed")
    assert wf.url is not None
    import torch

    dst = _hub_path(wf.url)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(wf.url, str(dst), progress=True)


def _how(wf: WeightsFile) -> str:
    if wf.hf_repo is not None:
        import huggingface_hub

        where = (
            f"the Hugging Face cache {huggingface_hub.constants.HF_HUB_CACHE} (download repository {wf.hf_repo} "
            "there on a machine with internet, e.g. `huggingface-cli download "
            f"{wf.hf_repo}`, and copy the folder; set HF_HOME to use another cache)"
        )
    else:
        assert wf.url is not None
        where = f"{_hub_path(wf.url)} (download {wf.url} there, or set TORCH_HOME to a folder holding hub/checkpoints/)"
    return (
        f"provide the file in {where}, or replace the weights by a local checkpoint "
        "(`checkpoint: path/model.pt`, `weights: path/model.pt`) or a `zoo:` teacher trained here"
    )


def ensure_pretrained(specs: Iterable[tuple[str, DetectorSpec]], source: str | Path | None = None) -> int:
    """Make sure every pretrained file the specs need is on this machine; returns how many were fetched.

    Raises:
        ConfigError: one line naming the field, the weights, where the file is expected and how
            to provide it, when a file is missing and its server cannot be reached or the download fails.
    """
    fetched = 0
    for wf in weights_files(specs, source):
        if wf.hf_repo is not None and _hf_cached(wf.hf_repo):
            continue
        if wf.url is not None and _hub_path(wf.url).is_file():
            continue
        probe = wf.url or "https://huggingface.co"
        if not _reachable(probe):
            raise ConfigError(
                source,
                wf.field,
                f"{wf.what} weights are not on this machine and {urlparse(probe).hostname} cannot be reached; "
                + _how(wf),
            )
        try:
            _fetch(wf)
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise ConfigError(
                source, wf.field, f"{wf.what} weights could not be downloaded ({first}); " + _how(wf)
            ) from None
        fetched += 1
    return fetched


def space_specs(space: Any) -> list[tuple[str, DetectorSpec]]:
    """``(field, spec)`` of a search space's student and teachers (zoo teachers included).

    Duck-typed (a ``SearchSpace``: ``student``, ``teachers`` with ``spec``/``zoo``), so this module
    needs nothing from the layers above it.
    """
    pairs = [("student", space.student)]
    for name, entry in space.teachers.items():
        if entry.spec is not None:
            pairs.append((f"teachers.{name}.spec", entry.spec))
        elif entry.zoo is not None:
            pairs.append((f"teachers.{name}.zoo.spec", entry.zoo.spec))
    return pairs


def recipe_specs(recipe: Any) -> list[tuple[str, DetectorSpec]]:
    """``(field, spec)`` of a recipe's student and spec teachers (duck-typed like :func:`space_specs`)."""
    pairs = [("student", recipe.student)]
    pairs += [(f"teachers.{n}.spec", t.spec) for n, t in recipe.teachers.items() if t.spec is not None]
    return pairs


__all__ = [
    "PROBE_TIMEOUT_S",
    "WeightsFile",
    "ensure_pretrained",
    "recipe_specs",
    "space_specs",
    "weights_files",
]
