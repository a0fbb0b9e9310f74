"""Build detectors from specs and load their weights (random, timm, torchvision, checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from curriculum_search.errors import CheckpointError, ConfigError
from curriculum_search.models._registry import arch_builder
from curriculum_search.models.checkpoint import (
    load_checkpoint,
    load_detector_weights,
    load_state_checked,
    read_spec,
)
from curriculum_search.models.detector import Detector
from curriculum_search.models.spec import DetectorSpec

# Importing the arch modules registers them.
from curriculum_search.models import faster_rcnn, fcos, retinanet  # noqa: F401  isort: skip

_TORCHVISION_WEIGHTS = {
    "retinanet": "RetinaNet_ResNet50_FPN_V2_Weights",
    "fcos": "FCOS_ResNet50_FPN_Weights",
    "faster_rcnn": "FasterRCNN_ResNet50_FPN_V2_Weights",
}


def build_detector(
    spec: DetectorSpec, *, load_weights: bool = True, source: str | Path | None = None
) -> Detector:
    """Build the detector described by ``spec`` and load ``spec.weights``.

    Args:
        spec: the detector specification.
        load_weights: False builds the architecture only (e.g. before loading a training checkpoint).
        source: file the spec came from, named in error messages.
    """
    try:
        builder = arch_builder(spec.arch)
    except ValueError as exc:
        raise ConfigError(source, "arch", str(exc)) from None
    weights = spec.weights if load_weights else None
    pretrained_backbone = weights == "timm"
    try:
        model = builder(spec, pretrained_backbone=pretrained_backbone)  # type: ignore[call-arg]
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "unknown model" in str(exc).lower():
            raise ConfigError(source, "backbone", f"unknown timm model {spec.backbone!r}") from None
        raise
    if weights and weights.startswith("torchvision:"):
        _load_torchvision(model, spec, weights.split(":", 1)[1], source)
    elif weights and weights != "timm":
        load_detector_weights(model, Path(weights))
    return model


def _load_torchvision(model: Detector, spec: DetectorSpec, member: str, source: str | Path | None) -> None:
    """Load full COCO-pretrained torchvision detector weights (needs internet on first use)."""
    import torchvision.models.detection as tvd

    if spec.backbone != "torchvision":
        raise ConfigError(source, "weights", "torchvision: weights need backbone: torchvision")
    enum = getattr(tvd, _TORCHVISION_WEIGHTS[spec.arch])
    try:
        w = enum.DEFAULT if member in ("", "DEFAULT") else enum[member]
    except KeyError:
        names = ", ".join(m.name for m in enum)
        raise ConfigError(
            source, "weights", f"unknown torchvision weights {member!r} (known: {names})"
        ) from None
    categories = list(w.meta["categories"])
    if len(categories) != spec.num_classes + 1:
        raise ConfigError(
            source,
            "num_classes",
            f"{w} predicts {len(categories) - 1} classes (with N/A slots); set num_classes: {len(categories) - 1}",
        )
    state = w.get_state_dict(progress=True, check_hash=True)  # downloads once into the torch hub cache
    missing, unexpected = model.net.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("transform")]:
        raise CheckpointError(
            str(w), f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def torchvision_class_names(arch: str) -> tuple[str, ...]:
    """COCO category names of torchvision's pretrained detector for ``arch`` (91 slots incl. N/A)."""
    import torchvision.models.detection as tvd

    enum = getattr(tvd, _TORCHVISION_WEIGHTS[arch])
    return tuple(enum.DEFAULT.meta["categories"][1:])


def load_detector(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Detector, dict[str, Any]]:
    """Rebuild a detector from a model checkpoint; returns ``(model, checkpoint dict)``."""
    ckpt = load_checkpoint(path, map_location)
    spec = read_spec(ckpt, path)
    model = build_detector(spec.with_updates(weights=None), load_weights=False, source=path)
    load_state_checked(model, ckpt["state_dict"], path)
    model.spec = spec.with_updates(weights=str(path))
    return model, ckpt


__all__ = ["build_detector", "load_detector", "torchvision_class_names"]
