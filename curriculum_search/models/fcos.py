"""FCOS (anchor-free) on a timm backbone + FPN (P3-P7), torchvision head and loss."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

from torch import Tensor
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSHead, FCOSRegressionHead

from curriculum_search.models._registry import register_arch
from curriculum_search.models.backbone import TimmFPNBackbone, group_norm_layer
from curriculum_search.models.dense import DenseDetector
from curriculum_search.models.spec import DetectorSpec


class FCOSDetector(DenseDetector):
    """FCOS: one point per location, centre sampling, GIoU + centre-ness losses."""

    def match(self, anchors: list[Tensor], targets: list[dict[str, Tensor]], num_per_level: list[int]) -> list[Tensor]:
        captured: list[list[Tensor]] = []
        proxy = SimpleNamespace(
            center_sampling_radius=self.net.center_sampling_radius,
            head=SimpleNamespace(compute_loss=lambda t, h, a, m: captured.append(m) or {}),
        )
        FCOS.compute_loss(proxy, targets, {}, anchors, num_per_level)  # type: ignore[arg-type]
        return captured[0]

    def compute_losses(self, targets, head, anchors, matched_idxs, num_per_level):  # type: ignore[no-untyped-def]
        return self.net.head.compute_loss(targets, head, anchors, matched_idxs)  # type: ignore[union-attr, operator]


@register_arch("fcos")
def build_fcos(spec: DetectorSpec, pretrained_backbone: bool = False) -> FCOSDetector:
    common = dict(
        score_thresh=spec.score_threshold,
        nms_thresh=spec.nms_threshold,
        detections_per_img=spec.detections_per_image,
    )
    if spec.backbone == "torchvision":
        from torchvision.models.detection import fcos_resnet50_fpn

        net = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=spec.num_classes + 1, **common)
        return FCOSDetector(spec, net, [8, 16, 32, 64, 128])
    backbone = TimmFPNBackbone(
        spec.backbone,
        spec.fpn_channels,
        min_stride=8,
        extra="p6p7",
        pretrained=pretrained_backbone,
        image_size=spec.image_size,
        backbone_kwargs=spec.backbone_kwargs,
    )
    strides = backbone.strides
    # FCOS assigns GT to levels by size ranges [4s, 8s] of the "anchor" size, which must equal the stride.
    anchor_gen = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    c, k, n = spec.fpn_channels, spec.num_classes + 1, spec.head_convs
    head = FCOSHead(c, 1, k, num_convs=n)
    head.classification_head = FCOSClassificationHead(c, 1, k, num_convs=n, norm_layer=group_norm_layer(c))
    head.regression_head = FCOSRegressionHead(c, 1, num_convs=n, norm_layer=group_norm_layer(c))
    net = FCOS(backbone, k, anchor_generator=anchor_gen, head=head, **common)
    return FCOSDetector(spec, net, strides)
