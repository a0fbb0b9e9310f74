"""Faster R-CNN on a timm backbone + FPN (P2-P5 + pool), torchvision RPN and RoI heads."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign

from curriculum_search.models._registry import register_arch
from curriculum_search.models.backbone import anchor_sizes, timm_fpn_backbone
from curriculum_search.models.detector import Detector, DetOutput, RoiOutput, Target, check_targets
from curriculum_search.models.spec import DetectorSpec


class FasterRCNNDetector(Detector):
    """Two-stage detector. ``forward(..., proposals=...)`` runs the RoI head on given boxes
    (TADF "proposal sharing": a teacher's RoI head on the student's proposals)."""

    kind = "two_stage"

    def _feature_dict(self, features: list[Tensor]) -> OrderedDict[str, Tensor]:
        names = self._level_names
        return OrderedDict(zip(names, features))

    @property
    def _level_names(self) -> list[str]:
        return [str(i) for i in range(len(self.strides) - 1)] + ["pool"]

    def roi_outputs(
        self, features: list[Tensor], proposals: list[Tensor], image_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Class logits ``(P, K+1)`` and box deltas ``(P, (K+1)*4)`` for the given proposals."""
        heads = self.net.roi_heads
        fdict = self._feature_dict(features)
        box_feats = heads.box_roi_pool(fdict, proposals, [image_size] * len(proposals))  # type: ignore[operator]
        box_feats = heads.box_head(box_feats)  # type: ignore[operator]
        return heads.box_predictor(box_feats)  # type: ignore[operator, no-any-return]

    def forward(
        self,
        images: Tensor,
        targets: list[Target] | None = None,
        *,
        detections: bool = False,
        proposals: list[Tensor] | None = None,
    ) -> DetOutput:
        features = self.features(images)
        out = DetOutput(features=features)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if proposals is not None:  # proposal sharing: only the RoI head, on the given boxes
            logits, reg = self.roi_outputs(features, proposals, size)
            out.roi = RoiOutput(proposals=proposals, class_logits=logits, box_regression=reg)
            return out
        fdict = self._feature_dict(features)
        image_list = self.image_list(images)
        rpn = self.net.rpn
        heads = self.net.roi_heads
        if targets is not None:
            check_targets(targets)
            # torchvision's RPN/RoI heads pick their training behaviour from .training
            rpn_training, heads_training = rpn.training, heads.training
            rpn.training = heads.training = True
            try:
                props, rpn_losses = rpn(image_list, fdict, targets)  # type: ignore[operator]
                sampled, _, labels, reg_targets = heads.select_training_samples(props, targets)  # type: ignore[operator]
            finally:
                rpn.training, heads.training = rpn_training, heads_training
            logits, reg = self.roi_outputs(features, sampled, size)
            loss_cls, loss_box = fastrcnn_loss(logits, reg, labels, reg_targets)
            out.losses = {**rpn_losses, "loss_classifier": loss_cls, "loss_box_reg": loss_box}
            out.roi = RoiOutput(sampled, logits, reg, labels, reg_targets)
            if detections:
                out.detections = self._detect(features, fdict, image_list, size)
            return out
        if detections:
            out.detections = self._detect(features, fdict, image_list, size)
        return out

    def _detect(self, features, fdict, image_list, size):  # type: ignore[no-untyped-def]
        rpn, heads = self.net.rpn, self.net.roi_heads
        rpn_training = rpn.training
        rpn.training = False
        try:
            with torch.no_grad():
                props, _ = rpn(image_list, {k: v.detach() for k, v in fdict.items()})
                logits, reg = self.roi_outputs([f.detach() for f in features], props, size)
                boxes, scores, labels = heads.postprocess_detections(logits, reg, props, [size] * len(props))
        finally:
            rpn.training = rpn_training
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]


@register_arch("faster_rcnn")
def build_faster_rcnn(spec: DetectorSpec, pretrained_backbone: bool = False) -> FasterRCNNDetector:
    common = dict(
        box_score_thresh=spec.score_threshold,
        box_nms_thresh=spec.nms_threshold,
        box_detections_per_img=spec.detections_per_image,
    )
    if spec.backbone == "torchvision":
        from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2

        net = fasterrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=spec.num_classes + 1, **common
        )
        return FasterRCNNDetector(spec, net, [4, 8, 16, 32, 64])
    backbone = timm_fpn_backbone(spec, pretrained=pretrained_backbone, min_stride=4, extra="pool")
    strides = backbone.strides
    names = [str(i) for i in range(len(strides) - 1)]
    anchor_gen = AnchorGenerator(anchor_sizes(strides, spec.anchor_scale), ((0.5, 1.0, 2.0),) * len(strides))
    roi_pool = MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2)
    rep = max(128, 4 * spec.fpn_channels)
    net = FasterRCNN(
        backbone,
        None,
        rpn_anchor_generator=anchor_gen,
        box_roi_pool=roi_pool,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        box_batch_size_per_image=128,
        box_head=TwoMLPHead(spec.fpn_channels * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, spec.num_classes + 1),
        **common,
    )
    return FasterRCNNDetector(spec, net, strides)
