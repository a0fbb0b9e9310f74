"""Declarative detector specification: everything needed to rebuild a model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from curriculum_search.utils.config import check


@dataclass(frozen=True)
class DetectorSpec:
    """A detector = arch + backbone + FPN + classes + input size + where its weights come from.

    Attributes:
        arch: registered detector family (``retinanet``, ``fcos``, ``faster_rcnn``).
        backbone: a timm model name used with ``features_only=True`` (CNNs and transformers), or
            ``torchvision`` to use torchvision's own ResNet-50-FPN detector of that arch (needed for
            ``torchvision:`` COCO weights).
        num_classes: number of foreground classes (labels ``1..num_classes``).
        class_names: names of the classes, label ``i + 1`` is ``class_names[i]``; used to map
            teachers trained on other class sets. Empty: ``class_1 ... class_N``.
        fpn_channels: FPN width.
        image_size: square input side in pixels (images are letterboxed to it).
        weights: ``None`` (random init); ``timm`` (ImageNet-pretrained timm backbone, downloads);
            ``torchvision:DEFAULT`` or ``torchvision:<WeightsEnum member>`` (full COCO detector,
            downloads); or a path to a checkpoint file written by this package.
        backbone_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. a tiny Swin).
        anchor_scale: dense/RPN anchor base size as a multiple of the level stride.
        head_convs: number of 3x3 convs in dense heads (torchvision default 4).
        score_threshold / nms_threshold / detections_per_image: post-processing.
    """

    arch: str
    backbone: str
    num_classes: int
    class_names: tuple[str, ...] = ()
    fpn_channels: int = 64
    image_size: int = 128
    weights: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    anchor_scale: float = 4.0
    head_convs: int = 4
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        check(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        check(
            not self.class_names or len(self.class_names) == self.num_classes,
            "class_names",
            f"has {len(self.class_names)} names but num_classes is {self.num_classes}",
        )
        check(self.fpn_channels >= 8, "fpn_channels", f"must be >= 8, got {self.fpn_channels}")
        check(self.image_size >= 32, "image_size", f"must be >= 32, got {self.image_size}")
        check(self.image_size % 32 == 0, "image_size", f"must be a multiple of 32, got {self.image_size}")
        check(self.anchor_scale > 0, "anchor_scale", "must be > 0")
        check(0 <= self.head_convs <= 8, "head_convs", "must be in 0..8")
        check(0.0 <= self.score_threshold < 1.0, "score_threshold", "must be in [0, 1)")
        if not self.class_names:
            object.__setattr__(self, "class_names", tuple(f"class_{i + 1}" for i in range(self.num_classes)))

    def with_updates(self, **changes: Any) -> DetectorSpec:
        return replace(self, **changes)

    @property
    def label(self) -> str:
        """Short human label, e.g. ``fcos/resnet18@128``."""
        return f"{self.arch}/{self.backbone}@{self.image_size}"
