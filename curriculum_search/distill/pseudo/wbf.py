"""``wbf`` fuser: weighted boxes fusion (Solovyev, Wang & Gabruseva 2019), written in torch.

Per class, boxes of all teachers are visited in order of weighted score ``s = score · w_t``
(descending). Each box joins the cluster whose *current fused box* it overlaps best, if that IoU
is > ``iou_threshold``; otherwise it starts a new cluster. A cluster of ``n`` boxes has

* fused box ``= Σ s_i · box_i / Σ s_i`` (score-weighted average of corners),
* fused score ``= (Σ s_i / n) · min(n, T) / Σ_t w_t`` for ``T`` teachers.

With equal weights the last factor is the paper's ``min(n, T) / T``: a box that only one of two
teachers predicts keeps half its score. ``n`` counts boxes, not distinct teachers, as in the
reference ``ensemble_boxes.weighted_boxes_fusion(conf_type="avg")``, which this matches (it works on
[0, 1] coordinates; IoU and weighted means are invariant to per-axis scaling, so pixel coordinates
give the same clusters and the same boxes up to that scale).
"""

from __future__ import annotations

import torch
from torch import Tensor

from curriculum_search.distill.pseudo._registry import FuseResult, empty_result, prepare, register_fuser


def _iou_one_to_many(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU of one xyxy ``box`` (4,) with each row of ``boxes`` (C, 4)."""
    lt = torch.maximum(boxes[:, :2], box[:2])
    rb = torch.minimum(boxes[:, 2:], box[2:])
    inter = (rb - lt).clamp_min(0).prod(dim=1)
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    area_box = (box[2:] - box[:2]).prod()
    return inter / (area + area_box - inter)


def _fuse_one_class(boxes: Tensor, scores: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Cluster one class' boxes. Returns ``(fused boxes (C, 4), Σ s (C,), n boxes (C,))``."""
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, scores = boxes[order], scores[order]
    n = len(boxes)
    fused = boxes.new_zeros((n, 4))
    weighted_sum = boxes.new_zeros((n, 4))
    score_sum = scores.new_zeros(n)
    count = torch.zeros(n, dtype=torch.int64, device=boxes.device)
    clusters = 0
    for j in range(n):
        box, score = boxes[j], scores[j]
        index = -1
        if clusters:
            ious = _iou_one_to_many(box, fused[:clusters])
            best = int(torch.argmax(ious))
            if float(ious[best]) > iou_threshold:
                index = best
        if index < 0:
            index = clusters
            clusters += 1
        weighted_sum[index] += score * box
        score_sum[index] += score
        count[index] += 1
        fused[index] = weighted_sum[index] / score_sum[index] if score_sum[index] > 0 else box
    return fused[:clusters], score_sum[:clusters], count[:clusters]


@register_fuser("wbf")
def wbf_fuse(
    boxes_list: list[Tensor],
    scores_list: list[Tensor],
    labels_list: list[Tensor],
    iou_threshold: float,
    weights: list[float],
    image_size: tuple[int, int] | None,
) -> FuseResult:
    """Weighted boxes fusion of several teachers' detections (see the module docstring).

    Returns:
        ``(boxes, scores, labels)`` sorted by fused score, descending.
    """
    boxes, scores, labels, _ = prepare(boxes_list, scores_list, labels_list, weights, image_size)
    if boxes.numel() == 0:
        return empty_result(boxes.device)
    n_teachers = len(weights)
    weight_sum = float(sum(weights))
    out_boxes, out_scores, out_labels = [], [], []
    for label in torch.unique(labels):
        sel = labels == label
        fused, score_sum, count = _fuse_one_class(boxes[sel], scores[sel], iou_threshold)
        mean = score_sum / count.to(score_sum.dtype)
        out_boxes.append(fused)
        out_scores.append(mean * count.clamp_max(n_teachers).to(mean.dtype) / weight_sum)
        out_labels.append(torch.full((len(fused),), int(label), dtype=torch.int64, device=boxes.device))
    all_scores = torch.cat(out_scores)
    order = torch.sort(all_scores, descending=True, stable=True).indices
    return torch.cat(out_boxes)[order], all_scores[order], torch.cat(out_labels)[order]
