"""Match teacher FPN levels to student levels when strides or level counts differ.

A transformer teacher may output strides 4/8/16/32 while a RetinaNet student has 8..128: each
student level takes the teacher level whose stride is nearest in log scale and resizes it to the
student's map size. Channels are left alone (the losses' adapters handle them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def nearest_levels(student_strides: Sequence[float], teacher_strides: Sequence[float]) -> list[int]:
    """Index of the teacher level used for each student level.

    The teacher stride nearest in log2 scale wins; on a tie the finer (smaller) stride wins, since
    pooling a finer map loses less than upsampling a coarser one.

    Raises:
        ValueError: on an empty or non-positive stride list.
    """
    for label, strides in (("student", student_strides), ("teacher", teacher_strides)):
        if len(strides) == 0 or any(not s > 0 for s in strides):
            raise ValueError(
                f"{label} strides must be a non-empty list of positive numbers, got {list(strides)}"
            )
    out = []
    for s in student_strides:
        dist = [round(abs(math.log2(s) - math.log2(t)), 9) for t in teacher_strides]
        out.append(min(range(len(teacher_strides)), key=lambda j: (dist[j], teacher_strides[j])))
    return out


def resize_map(feat: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``(B, C, h, w)`` to ``size = (H, W)``.

    Identity when sizes match; average pooling over ``h/H × w/W`` blocks when both are integer
    downsampling factors; bilinear interpolation (``align_corners=False``) otherwise.
    """
    h, w = feat.shape[-2:]
    H, W = int(size[0]), int(size[1])
    if (h, w) == (H, W):
        return feat
    if h >= H and w >= W and h % H == 0 and w % W == 0:
        return F.adaptive_avg_pool2d(feat, (H, W))
    return F.interpolate(feat, size=(H, W), mode="bilinear", align_corners=False)


def align_features(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    student_strides: Sequence[float],
    teacher_strides: Sequence[float],
) -> list[Tensor]:
    """Teacher maps aligned to the student's levels (one per student level, student's ``H × W``).

    Args:
        student_feats: Student maps ``(B, Cs, H_i, W_i)``; only their spatial sizes are used.
        teacher_feats: Teacher maps ``(B, Ct, h_j, w_j)`` (any dtype; kept as is).
        student_strides: Stride of each student level in input pixels.
        teacher_strides: Stride of each teacher level in input pixels.

    Returns:
        For each student level ``i``, teacher level ``nearest_levels(...)[i]`` resized to
        ``(H_i, W_i)`` with :func:`resize_map`; channels and dtype unchanged.

    Raises:
        ValueError: if a feature list and its stride list differ in length.
    """
    if len(student_feats) != len(student_strides):
        raise ValueError(f"{len(student_feats)} student maps but {len(student_strides)} student strides")
    if len(teacher_feats) != len(teacher_strides):
        raise ValueError(f"{len(teacher_feats)} teacher maps but {len(teacher_strides)} teacher strides")
    picks = nearest_levels(student_strides, teacher_strides)
    return [
        resize_map(teacher_feats[j], (int(s.shape[-2]), int(s.shape[-1])))
        for s, j in zip(student_feats, picks)
    ]


__all__ = ["align_features", "nearest_levels", "resize_map"]
