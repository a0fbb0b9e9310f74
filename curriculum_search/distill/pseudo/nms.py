"""``nms`` fuser: pool every teacher's boxes and keep the best of each overlapping group per class."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from curriculum_search.distill.pseudo._registry import FuseResult, empty_result, prepare, register_fuser


@register_fuser("nms")
def nms_fuse(
    boxes_list: list[Tensor],
    scores_list: list[Tensor],
    labels_list: list[Tensor],
    iou_threshold: float,
    weights: list[float],
    image_size: tuple[int, int] | None,
) -> FuseResult:
    """Concatenate all teachers and run class-wise NMS (``torchvision.ops.batched_nms``).

    Boxes are ranked by ``score · w_t``; a box is suppressed by a higher-ranked box of the same
    label with IoU > ``iou_threshold``. The kept box's score is reported as ``score · w_t / max_t w_t``
    so that with equal weights (the default) scores are the teachers' own.

    Returns:
        ``(boxes, scores, labels)`` sorted by score, descending.
    """
    boxes, scores, labels, _ = prepare(boxes_list, scores_list, labels_list, weights, image_size)
    if boxes.numel() == 0:
        return empty_result(boxes.device)
    keep = batched_nms(boxes, scores, labels, iou_threshold)  # sorted by score, descending
    return boxes[keep], scores[keep] / max(weights), labels[keep].to(torch.int64)
