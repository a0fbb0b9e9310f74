"""The papers' reference setting, to which MGD and FGD normalise their sums.

MGD and FGD sum squared errors over channels and positions (``Σ_{c,y,x}``), so with the papers'
coefficients the term's size relative to the detection loss (which does not grow with the image)
depends on the resolution and the FPN width: at 128 px with 64 channels MGD's sum has ~260× fewer
elements than at the papers' COCO setting, and "MGD × 1" is almost no feature KD. Both losses
therefore rescale each sum by ``reference count / actual count`` (the count of what it sums:
elements, channels or positions). At the reference the factor is 1 and the papers' values are
reproduced exactly; elsewhere the same weight gives the same loss per element, hence the same
ratio to the detection loss. The factor is computed from tensor shapes: O(1) extra work.

The reference: **COCO at a 1333×800 input** (mmdetection's default resize, as in both papers'
configs), **256 FPN channels**, FPN levels **P3–P7 (strides 8–128) for one-stage detectors**
(RetinaNet) and **P2–P6 (strides 4–64) for two-stage detectors** (Faster/Mask R-CNN); a level of
stride ``s`` has ``ceil(1333/s) × ceil(800/s)`` positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

#: Reference input ``(width, height)`` in pixels.
REFERENCE_INPUT = (1333, 800)
#: Reference FPN width.
REFERENCE_CHANNELS = 256
#: Detector types with their own paper defaults (one-stage: RetinaNet; two-stage: Faster R-CNN).
DETECTOR_TYPES = ("one_stage", "two_stage")
#: Reference FPN strides per detector type.
REFERENCE_STRIDES = {"one_stage": (8, 16, 32, 64, 128), "two_stage": (4, 8, 16, 32, 64)}


def reference_positions(detector: str) -> int:
    """Spatial positions summed over the reference FPN levels of ``detector``."""
    w, h = REFERENCE_INPUT
    return sum(math.ceil(w / s) * math.ceil(h / s) for s in REFERENCE_STRIDES[detector])


def reference_levels(detector: str) -> int:
    """Number of reference FPN levels of ``detector``."""
    return len(REFERENCE_STRIDES[detector])


def positions(maps: Sequence[Tensor]) -> int:
    """Spatial positions summed over ``(B, C, H, W)`` maps (one per level)."""
    return sum(int(m.shape[-2]) * int(m.shape[-1]) for m in maps)


def channels(maps: Sequence[Tensor]) -> int:
    """Channels summed over ``(B, C, H, W)`` maps (one per level)."""
    return sum(int(m.shape[1]) for m in maps)


def elements(maps: Sequence[Tensor]) -> int:
    """Elements per image summed over ``(B, C, H, W)`` maps (one per level)."""
    return sum(int(m.shape[1]) * int(m.shape[-2]) * int(m.shape[-1]) for m in maps)


def element_scale(maps: Sequence[Tensor], detector: str) -> float:
    """``reference elements / elements of maps`` (reference: 256 channels × reference positions)."""
    return REFERENCE_CHANNELS * reference_positions(detector) / max(1, elements(maps))


def position_scale(maps: Sequence[Tensor], detector: str) -> float:
    """``reference positions / positions of maps``."""
    return reference_positions(detector) / max(1, positions(maps))


def channel_scale(maps: Sequence[Tensor], detector: str) -> float:
    """``reference channels summed over levels / channels summed over the levels of maps``."""
    return REFERENCE_CHANNELS * reference_levels(detector) / max(1, channels(maps))


def detector_type(kind: str) -> str:
    """The reference type of a detector ``kind`` (``"two_stage"`` or anything dense)."""
    return "two_stage" if kind == "two_stage" else "one_stage"


__all__ = [
    "DETECTOR_TYPES",
    "REFERENCE_CHANNELS",
    "REFERENCE_INPUT",
    "REFERENCE_STRIDES",
    "channel_scale",
    "channels",
    "detector_type",
    "element_scale",
    "elements",
    "position_scale",
    "positions",
    "reference_levels",
    "reference_positions",
]
