"""FCOS (anchor-free) on a timm backbone + FPN (P3-P7), torchvision head and loss."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSHead, FCOSRegressionHead

from curriculum_search.models._registry import register_arch
from curriculum_search.models.backbone import group_norm_layer, timm_fpn_backbone
from curriculum_search.models.dense import DenseDetector
from curriculum_search.models.spec import DetectorSpec


class FCOSDetector(DenseDetector):
    """FCOS: one point per location, centre sampling, GIoU + centre-ness losses."""

    def match(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]], num_per_level: list[int]
    ) -> list[Tensor]:
        return self.run_matcher(
            FCOS.compute_loss,
            {"center_sampling_radius": self.net.center_sampling_radius},
            targets,
            {},
            anchors,
            num_per_level,
        )

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

        net = fcos_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=spec.num_classes + 1, **common
        )
        return FCOSDetector(spec, net, [8, 16, 32, 64, 128])
    backbone = timm_fpn_backbone(spec, pretrained=pretrained_backbone, min_stride=8, extra="p6p7")
    strides = backbone.strides
    # FCOS assigns GT to levels by size ranges [4s, 8s] of the "anchor" size, which must equal the stride.
    anchor_gen = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    c, k, n = spec.fpn_channels, spec.num_classes + 1, spec.head_convs
    head = _fcos_head(c, k, n)
    net = FCOS(backbone, k, anchor_generator=anchor_gen, head=head, **common)
    return FCOSDetector(spec, net, strides)


class _FCOSHead(FCOSHead):
    """torchvision's FCOS head with a GroupNorm that fits any FPN width (upstream hard-codes 32 groups)."""

    def __init__(self, channels: int, num_classes: int, num_convs: int) -> None:
        nn.Module.__init__(self)
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        norm = group_norm_layer(channels)
        self.classification_head = FCOSClassificationHead(
            channels, 1, num_classes, num_convs=num_convs, norm_layer=norm
        )
        self.regression_head = FCOSRegressionHead(channels, 1, num_convs=num_convs, norm_layer=norm)


def _fcos_head(channels: int, num_classes: int, num_convs: int) -> FCOSHead:
    return _FCOSHead(channels, num_classes, num_convs)
