"""RetinaNet on a timm backbone + FPN (P3-P7), torchvision head and loss."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead

from curriculum_search.models._registry import register_arch
from curriculum_search.models.backbone import anchor_sizes, group_norm_layer, timm_fpn_backbone
from curriculum_search.models.dense import DenseDetector
from curriculum_search.models.spec import DetectorSpec


class RetinaNetDetector(DenseDetector):
    """RetinaNet: 9 anchors per location (3 octaves x 3 aspect ratios), sigmoid focal loss."""

    def match(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]], num_per_level: list[int]
    ) -> list[Tensor]:
        return self.run_matcher(
            RetinaNet.compute_loss, {"proposal_matcher": self.net.proposal_matcher}, targets, {}, anchors
        )

    def compute_losses(self, targets, head, anchors, matched_idxs, num_per_level):  # type: ignore[no-untyped-def]
        return self.net.head.compute_loss(targets, head, anchors, matched_idxs)  # type: ignore[union-attr, operator]


@register_arch("retinanet")
def build_retinanet(spec: DetectorSpec, pretrained_backbone: bool = False) -> RetinaNetDetector:
    common: dict[str, Any] = dict(
        score_thresh=spec.score_threshold,
        nms_thresh=spec.nms_threshold,
        detections_per_img=spec.detections_per_image,
    )
    if spec.backbone == "torchvision":
        from torchvision.models.detection import retinanet_resnet50_fpn_v2

        net = retinanet_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=spec.num_classes + 1, **common
        )
        return RetinaNetDetector(spec, net, [8, 16, 32, 64, 128])
    backbone = timm_fpn_backbone(spec, pretrained=pretrained_backbone, min_stride=8, extra="p6p7")
    strides = backbone.strides
    anchor_gen = AnchorGenerator(
        anchor_sizes(strides, spec.anchor_scale, octaves=3), ((0.5, 1.0, 2.0),) * len(strides)
    )
    head = RetinaNetHead(
        spec.fpn_channels,
        anchor_gen.num_anchors_per_location()[0],
        spec.num_classes + 1,
        norm_layer=group_norm_layer(spec.fpn_channels),
    )
    _trim_head_convs(head, spec.head_convs)
    net = RetinaNet(backbone, spec.num_classes + 1, anchor_generator=anchor_gen, head=head, **common)
    return RetinaNetDetector(spec, net, strides)


def _trim_head_convs(head: RetinaNetHead, n: int) -> None:
    """Keep the first ``n`` conv blocks of each RetinaNet tower (torchvision always builds 4)."""
    for tower in (head.classification_head.conv, head.regression_head.conv):
        while len(tower) > n:
            del tower[len(tower) - 1]
