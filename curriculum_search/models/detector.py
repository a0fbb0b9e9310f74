"""The uniform detector interface the trainer and the distillation engine rely on.

Every arch wraps a torchvision detection model but bypasses its ``GeneralizedRCNNTransform``:
inputs are already letterboxed and normalised ``(B, 3, S, S)`` tensors (see docs/ARCHITECTURE.md),
so the same input can be cached and fed to several models. One forward returns everything the
distillation losses need: FPN maps, raw head outputs, anchors and their ground-truth matches, the
detection losses and (on request) post-processed detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from curriculum_search.models.spec import DetectorSpec

Target = dict[str, Tensor]
Detection = dict[str, Tensor]


@dataclass
class RoiOutput:
    """Second-stage outputs of a two-stage detector on a set of proposals.

    ``class_logits`` ``(P, K+1)`` (softmax, index 0 = background) and ``box_regression``
    ``(P, (K+1)*4)`` for the concatenated ``proposals`` of all images; ``labels`` and
    ``regression_targets`` are the sampled training targets (only when targets were given).
    """

    proposals: list[Tensor]
    class_logits: Tensor
    box_regression: Tensor
    labels: list[Tensor] | None = None
    regression_targets: list[Tensor] | None = None


@dataclass
class DetOutput:
    """Everything one forward pass of a :class:`Detector` produced."""

    features: list[Tensor]
    losses: dict[str, Tensor] = field(default_factory=dict)
    dense: dict[str, Tensor] | None = None
    anchors: list[Tensor] | None = None
    matched_idxs: list[Tensor] | None = None
    num_anchors_per_level: list[int] | None = None
    roi: RoiOutput | None = None
    detections: list[Detection] | None = None

    @property
    def loss(self) -> Tensor:
        return sum(self.losses.values(), torch.zeros((), device=self.features[0].device))


class Detector(nn.Module):
    """Base class: a torchvision detector (``self.net``) with a uniform, transform-free forward."""

    kind: ClassVar[str] = "dense"  # "dense" (one-stage) or "two_stage"

    def __init__(self, spec: DetectorSpec, net: nn.Module, strides: list[int]) -> None:
        super().__init__()
        self.spec = spec
        # torchvision's detectors are untyped containers of submodules: keep them Any for mypy
        self.net: Any = net
        self.strides = list(strides)
        # Our inputs are already normalised and resized: disable torchvision's transform entirely.
        self.net.transform = nn.Identity()  # type: ignore[assignment]

    # -- common -----------------------------------------------------------------------------
    @property
    def fpn_channels(self) -> int:
        return int(self.net.backbone.out_channels)  # type: ignore[union-attr, arg-type]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def image_list(self, images: Tensor) -> ImageList:
        h, w = images.shape[-2:]
        return ImageList(images, [(int(h), int(w))] * images.shape[0])

    def features(self, images: Tensor) -> list[Tensor]:
        """FPN maps, finest first; strides in ``self.strides``."""
        return list(self.net.backbone(images).values())  # type: ignore[operator]

    def forward(
        self,
        images: Tensor,
        targets: list[Target] | None = None,
        *,
        detections: bool = False,
        proposals: list[Tensor] | None = None,
    ) -> DetOutput:
        """Run the model.

        Args:
            images: ``(B, 3, S, S)`` normalised input.
            targets: ground truth (or pseudo labels); when given, ``losses`` are computed.
            detections: also post-process detections.
            proposals: two-stage only: run the RoI head on these boxes (proposal sharing) instead
                of the model's own RPN proposals.
        """
        raise NotImplementedError

    @torch.no_grad()
    def detect(self, images: Tensor) -> list[Detection]:
        """Post-processed detections (boxes in input pixels, labels ``1..C``)."""
        return self.forward(images, detections=True).detections or []

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.net.backbone.body.parameters())  # type: ignore[union-attr]


def check_targets(targets: list[Target]) -> None:
    """Reject boxes with non-positive size early, with a readable message."""
    for i, t in enumerate(targets):
        b = t["boxes"]
        if b.numel() and bool(((b[:, 2:] - b[:, :2]) <= 0).any()):
            raise ValueError(f"target {i} (image_id {t.get('image_id')}) has a box with non-positive size")
