"""Registry of pseudo-label fusers: merge several teachers' detections on one image.

A fuser is ``fn(boxes_list, scores_list, labels_list, iou_threshold, weights, image_size)
-> (boxes, scores, labels)`` where the lists hold one entry per teacher (``(N_t, 4)`` xyxy
input-pixel boxes, ``(N_t,)`` scores, ``(N_t,)`` int labels already in the student's label space)
and ``weights`` is one non-negative float per teacher. Output boxes are float32 ``(M, 4)``, scores
float32 ``(M,)``, labels int64 ``(M,)``, sorted by score (descending). Adding a fuser is one file
with ``@register_fuser("name")`` imported from ``pseudo/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

FuseResult = tuple[Tensor, Tensor, Tensor]
ImageSize = int | tuple[int, int]
FuserFn = Callable[
    [list[Tensor], list[Tensor], list[Tensor], float, list[float], "tuple[int, int] | None"], FuseResult
]

_FUSERS: dict[str, FuserFn] = {}


def register_fuser(name: str) -> Callable[[FuserFn], FuserFn]:
    """Register a fuser under ``name`` (decorator).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: FuserFn) -> FuserFn:
        if name in _FUSERS:
            raise ValueError(f"pseudo-label fuser {name!r} is already registered")
        _FUSERS[name] = fn
        return fn

    return decorator


def list_fusers() -> list[str]:
    """Return the registered fuser names, sorted."""
    return sorted(_FUSERS)


def _size(image_size: ImageSize | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


def fuse(
    name: str,
    boxes_list: Sequence[Tensor],
    scores_list: Sequence[Tensor],
    labels_list: Sequence[Tensor],
    iou_threshold: float = 0.55,
    weights: Sequence[float] | None = None,
    image_size: ImageSize | None = None,
) -> FuseResult:
    """Fuse several teachers' detections on one image with the fuser ``name``.

    Args:
        name: Registered fuser (``"wbf"``, ``"nms"``; see :func:`list_fusers`).
        boxes_list: Per teacher ``(N_t, 4)`` xyxy boxes in input pixels.
        scores_list: Per teacher ``(N_t,)`` scores in ``[0, 1]``.
        labels_list: Per teacher ``(N_t,)`` int labels (student label space).
        iou_threshold: Boxes of one class overlapping more than this are merged (default 0.55).
        weights: One non-negative weight per teacher (default all 1); it multiplies the scores.
        image_size: ``S`` or ``(h, w)``: boxes are clipped to the image and zero-area boxes dropped;
            ``None`` = no clipping.

    Returns:
        ``(boxes float32 (M, 4), scores float32 (M,), labels int64 (M,))`` sorted by score.

    Raises:
        ValueError: Unknown fuser, lists of different lengths or shapes, or bad weights (one line).
    """
    try:
        fn = _FUSERS[name]
    except KeyError:
        raise ValueError(
            f"unknown pseudo-label fuser {name!r}; choose one of {', '.join(list_fusers())}"
        ) from None
    n = len(boxes_list)
    if n == 0:
        raise ValueError("fuse: need detections from at least one teacher")
    if len(scores_list) != n or len(labels_list) != n:
        raise ValueError(
            f"fuse: got {n} box sets, {len(scores_list)} score sets and {len(labels_list)} label sets"
        )
    for t, (b, s, lab) in enumerate(zip(boxes_list, scores_list, labels_list)):
        if b.dim() != 2 or b.shape[1] != 4 or s.shape != b.shape[:1] or lab.shape != b.shape[:1]:
            raise ValueError(
                f"fuse: teacher {t}: boxes {tuple(b.shape)}, scores {tuple(s.shape)}, labels "
                f"{tuple(lab.shape)} do not describe (N, 4) / (N,) / (N,)"
            )
    if weights is None:
        w = [1.0] * n
    else:
        w = [float(x) for x in weights]
        if len(w) != n:
            raise ValueError(f"fuse: got {len(w)} weights for {n} teachers")
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"fuse: weights must be >= 0 with a positive sum, got {w}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"fuse: iou_threshold must be in [0, 1], got {iou_threshold}")
    device = boxes_list[0].device
    return fn(
        [b.detach().to(device=device, dtype=torch.float32) for b in boxes_list],
        [s.detach().to(device=device, dtype=torch.float32) for s in scores_list],
        [lab.detach().to(device=device, dtype=torch.int64) for lab in labels_list],
        float(iou_threshold),
        w,
        _size(image_size),
    )


def prepare(
    boxes_list: list[Tensor],
    scores_list: list[Tensor],
    labels_list: list[Tensor],
    weights: list[float],
    image_size: tuple[int, int] | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Concatenate teachers, clip to the image, drop zero-area boxes; shared by the fusers.

    Returns:
        ``(boxes (N, 4), weighted_scores (N,), labels (N,), teacher_index (N,))`` where
        ``weighted_scores = score · weights[teacher]``.
    """
    device = boxes_list[0].device
    boxes = torch.cat(boxes_list).reshape(-1, 4)
    # Orient corners (x1 <= x2, y1 <= y2) as ensemble-boxes does.
    boxes = torch.cat(
        [torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1
    )
    if image_size is not None:
        h, w = image_size
        limit = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=device)
        boxes = torch.minimum(boxes.clamp_min(0), limit)
    w_t = torch.tensor(weights, dtype=torch.float32, device=device)
    teacher = torch.cat(
        [torch.full((len(b),), t, dtype=torch.int64, device=device) for t, b in enumerate(boxes_list)]
    )
    scores = torch.cat(scores_list) * w_t[teacher]
    labels = torch.cat(labels_list)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep], labels[keep], teacher[keep]


def empty_result(device: torch.device) -> FuseResult:
    """Zero detections."""
    return (
        torch.zeros((0, 4), dtype=torch.float32, device=device),
        torch.zeros((0,), dtype=torch.float32, device=device),
        torch.zeros((0,), dtype=torch.int64, device=device),
    )
