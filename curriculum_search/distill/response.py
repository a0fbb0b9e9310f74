"""Head-level (response) distillation losses and the TADF gates that decide where they apply.

Pure tensor functions: the trainer runs both models, then calls these with their outputs. The
teacher side is always detached (and cast to the student's dtype, so fp16 cached outputs work);
gradients reach the student only.

Conventions (torchvision):

* **Dense heads** (RetinaNet, FCOS): class logits ``(B, A, K)`` read through a sigmoid, one column
  per label (torchvision is built with ``num_classes = C + 1``, so column ``l`` is label ``l`` and
  column 0 is trained to stay low), box regression ``(B, A, 4)``; per image anchors ``(A, 4)`` and
  ``matched_idxs (A,)`` indexing that image's ground-truth boxes, ``-1`` background, ``-2`` ignore.
* **RoI heads** (Faster R-CNN): class logits ``(P, K + 1)`` read through a softmax with column 0 =
  background, class-specific box regression ``(P, (K + 1) * 4)``.
* **Label maps** returned by :func:`gt_labels_from_matches` and read by :func:`cls_gate`: ``l ≥ 1``
  the ground-truth label, ``0`` background, ``-1`` ignore (any negative value is treated as
  ignore, so raw matcher codes ``-2`` work too).

Every loss takes an optional per-element ``weight`` (a TADF gate cast to float, a Gaussian mask,
``None`` = all ones) and returns ``Σ w·ℓ / max(Σ w, 1)``: a weighted mean that does not blow up
when only a handful of elements are switched on, and is exactly 0 when none are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

BoxLoss = Literal["giou", "smooth_l1", "l1"]


def _teacher(teacher: Tensor, student: Tensor) -> Tensor:
    """Detach the teacher tensor and match the student's dtype/device."""
    return teacher.detach().to(dtype=student.dtype, device=student.device)


def _check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}"
        )


def _weights(weight: Tensor | None, shape: torch.Size, like: Tensor, what: str) -> Tensor:
    """Return ``weight`` as a float tensor of ``shape`` (ones when ``None``)."""
    if weight is None:
        return torch.ones(shape, dtype=like.dtype, device=like.device)
    if weight.shape != shape:
        raise ValueError(f"{what}: weight shape {tuple(weight.shape)} != expected {tuple(shape)}")
    return weight.detach().to(dtype=like.dtype, device=like.device)


def _weighted_mean(per_element: Tensor, weight: Tensor) -> Tensor:
    """``Σ w·ℓ / max(Σ w, 1)`` over all elements."""
    return (per_element * weight).sum() / weight.sum().clamp_min(1.0)


def dense_cls_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weight: Tensor | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Sigmoid (per-class Bernoulli) KD for dense heads.

    With ``p = σ(s / T)`` (student) and ``q = σ(t / T)`` (teacher), per anchor::

        ℓ = T² · Σ_k [ BCE(p_k, q_k) − H(q_k) ] = T² · Σ_k KL(Bern(q_k) ‖ Bern(p_k))

    and the result is ``Σ w·ℓ / max(Σ w, 1)``. Subtracting the teacher entropy ``H(q)`` leaves the
    gradient of the binary cross-entropy unchanged and makes the loss 0 when student == teacher.

    Why BCE and not softmax-KL: a sigmoid head (focal loss) models ``K`` independent one-vs-rest
    Bernoullis, and "background" is all of them being low. A softmax over the ``K`` logits would
    renormalise an anchor where the teacher says "nothing here" (all ``q_k`` ≈ 0.01) into a
    confident class distribution, which the student was never trained to produce, and would lose
    exactly the foreground/background signal that matters most for dense detectors.

    Args:
        student_logits: ``(..., K)`` raw class logits (e.g. ``(B, A, K)``).
        teacher_logits: Same shape; detached inside.
        weight: ``(...)`` per-anchor weights (e.g. a TADF gate as float); ``None`` = all ones.
        temperature: ``T`` > 0 (default 1.0, i.e. plain sigmoid outputs).

    Returns:
        A scalar tensor.
    """
    _check_same_shape(student_logits, teacher_logits, "dense_cls_kd")
    if temperature <= 0:
        raise ValueError(f"dense_cls_kd: temperature must be > 0, got {temperature}")
    w = _weights(weight, student_logits.shape[:-1], student_logits, "dense_cls_kd")
    mask = w > 0
    s = student_logits[mask] / temperature
    t = _teacher(teacher_logits, student_logits)[mask] / temperature
    q = torch.sigmoid(t)
    bce = F.binary_cross_entropy_with_logits(s, q, reduction="none")
    entropy = F.binary_cross_entropy_with_logits(t, q, reduction="none")
    per_anchor = (bce - entropy).sum(dim=-1) * temperature**2
    return (per_anchor * w[mask]).sum() / w.sum().clamp_min(1.0)


def _box_loss(student: Tensor, teacher: Tensor, loss: str, beta: float) -> Tensor:
    """Per-element box loss ``(N, 4) × (N, 4) -> (N,)``."""
    if loss == "giou":
        return generalized_box_iou_loss(student, teacher, reduction="none")
    if loss == "smooth_l1":
        return F.smooth_l1_loss(student, teacher, beta=beta, reduction="none").sum(dim=-1)
    if loss == "l1":
        return F.l1_loss(student, teacher, reduction="none").sum(dim=-1)
    raise ValueError(f"unknown box KD loss {loss!r}; choose one of giou, smooth_l1, l1")


def dense_box_kd(
    student_boxes: Tensor,
    teacher_boxes: Tensor,
    weight: Tensor | None = None,
    loss: BoxLoss = "giou",
    beta: float = 1.0 / 9.0,
) -> Tensor:
    """Box-regression KD for dense heads: the student imitates the teacher's boxes.

    Per anchor ``ℓ`` is ``1 − GIoU(s, t)`` (``loss="giou"``, decoded xyxy boxes only),
    ``Σ_4 smoothL1_β(s − t)`` (``"smooth_l1"``) or ``Σ_4 |s − t|`` (``"l1"``); the latter two work on
    decoded boxes or on regression deltas alike. Result: ``Σ w·ℓ / max(Σ w, 1)``. Anchors with zero
    weight are not evaluated at all (so degenerate boxes there cannot produce NaN).

    Args:
        student_boxes: ``(..., 4)``.
        teacher_boxes: Same shape; detached inside.
        weight: ``(...)`` per-anchor weights (a TADF box gate, positives mask...); ``None`` = ones.
        loss: ``"giou"`` (default), ``"smooth_l1"`` or ``"l1"``.
        beta: Smooth-L1 transition point (default 1/9, torchvision's R-CNN value).

    Returns:
        A scalar tensor.
    """
    _check_same_shape(student_boxes, teacher_boxes, "dense_box_kd")
    if student_boxes.shape[-1] != 4:
        raise ValueError(
            f"dense_box_kd: boxes must end in 4 coordinates, got shape {tuple(student_boxes.shape)}"
        )
    w = _weights(weight, student_boxes.shape[:-1], student_boxes, "dense_box_kd")
    mask = w > 0
    per = _box_loss(student_boxes[mask], _teacher(teacher_boxes, student_boxes)[mask], loss, beta)
    return (per * w[mask]).sum() / w.sum().clamp_min(1.0)


def roi_cls_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weight: Tensor | None = None,
    temperature: float = 2.0,
) -> Tensor:
    """Softmax KD for RoI heads (background included as class 0).

    ``ℓ = T² · KL(softmax(t / T) ‖ softmax(s / T))`` per RoI; result ``Σ w·ℓ / max(Σ w, 1)``.
    With proposal sharing (TADF) both heads are run on the same (student) proposals, so rows match.

    Args:
        student_logits: ``(P, K + 1)``.
        teacher_logits: ``(P, K + 1)``; detached inside.
        weight: ``(P,)`` per-RoI weights (e.g. :func:`cls_gate` with ``mode="softmax"``); ``None`` = ones.
        temperature: ``T`` > 0 (default 2.0).

    Returns:
        A scalar tensor.
    """
    _check_same_shape(student_logits, teacher_logits, "roi_cls_kd")
    if temperature <= 0:
        raise ValueError(f"roi_cls_kd: temperature must be > 0, got {temperature}")
    w = _weights(weight, student_logits.shape[:-1], student_logits, "roi_cls_kd")
    log_p = F.log_softmax(student_logits / temperature, dim=-1)
    log_q = F.log_softmax(_teacher(teacher_logits, student_logits) / temperature, dim=-1)
    per_roi = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(dim=-1) * temperature**2
    return _weighted_mean(per_roi, w)


def roi_box_kd(
    student_reg: Tensor,
    teacher_reg: Tensor,
    labels: Tensor,
    weight: Tensor | None = None,
    beta: float = 1.0 / 9.0,
    teacher_labels: Tensor | None = None,
) -> Tensor:
    """Smooth-L1 KD on the class-specific deltas of each positive RoI's label.

    For RoI ``i`` with ``labels[i] = c ≥ 1``: ``ℓ_i = Σ_4 smoothL1_β(s_i[c] − t_i[c'])`` where
    ``s_i[c]`` is columns ``4c:4c+4`` and ``c' = teacher_labels[i]`` (default ``c``); RoIs with
    ``c ≤ 0`` (background, ignore) or ``c' ≤ 0`` (a class the teacher lacks) do not count. Result
    ``Σ_pos w·ℓ / max(Σ_pos w, 1)``.

    Args:
        student_reg: ``(P, (K + 1) * 4)``.
        teacher_reg: Same shape, or ``(P, (K' + 1) * 4)`` with ``teacher_labels``; detached inside.
        labels: ``(P,)`` int ground-truth label of each RoI (0 = background).
        weight: ``(P,)`` per-RoI weights (e.g. :func:`roi_box_gate`); ``None`` = ones.
        beta: Smooth-L1 transition point (default 1/9 as torchvision's ``fastrcnn_loss``).
        teacher_labels: ``(P,)`` the same class in the teacher's label space (another class set).

    Returns:
        A scalar tensor.
    """
    if teacher_labels is None:
        _check_same_shape(student_reg, teacher_reg, "roi_box_kd")
    if student_reg.dim() != 2 or student_reg.shape[1] % 4:
        raise ValueError(f"roi_box_kd: regression must be (P, (K+1)*4), got {tuple(student_reg.shape)}")
    if teacher_reg.dim() != 2 or teacher_reg.shape[0] != student_reg.shape[0] or teacher_reg.shape[1] % 4:
        raise ValueError(
            f"roi_box_kd: teacher regression {tuple(teacher_reg.shape)} does not fit student {tuple(student_reg.shape)}"
        )
    if labels.shape != student_reg.shape[:1]:
        raise ValueError(f"roi_box_kd: labels shape {tuple(labels.shape)} != ({student_reg.shape[0]},)")
    t_labels = labels if teacher_labels is None else teacher_labels
    valid = (labels > 0) & (t_labels > 0)
    w = _weights(weight, labels.shape, student_reg, "roi_box_kd") * valid.to(student_reg.dtype)
    pos = torch.nonzero(w > 0).squeeze(1)
    cls = labels[pos].long()
    s = student_reg.reshape(student_reg.shape[0], -1, 4)[pos, cls]
    t = _teacher(teacher_reg, student_reg).reshape(teacher_reg.shape[0], -1, 4)[pos, t_labels[pos].long()]
    per = F.smooth_l1_loss(s, t, beta=beta, reduction="none").sum(dim=-1)
    return (per * w[pos]).sum() / w.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------- TADF gates


def _true_label_prob(logits: Tensor, labels: Tensor, mode: str) -> Tensor:
    """Probability each row gives its true label (``labels`` clamped ≥ 0; caller masks ignores)."""
    lab = labels.clamp_min(0).long().unsqueeze(-1)
    if mode == "softmax":
        return torch.softmax(logits, dim=-1).gather(-1, lab).squeeze(-1)
    if mode == "sigmoid":
        prob = torch.sigmoid(logits)
        fg = prob.gather(-1, lab).squeeze(-1)
        bg = 1.0 - prob.max(dim=-1).values
        return torch.where(labels > 0, fg, bg)
    raise ValueError(f"unknown cls_gate mode {mode!r}; choose sigmoid or softmax")


@torch.no_grad()
def cls_gate(
    student_logits: Tensor,
    teacher_logits: Tensor,
    gt_labels: Tensor,
    mode: Literal["sigmoid", "softmax"] = "sigmoid",
) -> Tensor:
    """TADF classification gate: distil only where the teacher is at least as right as the student.

    ``gate = p_teacher(true) ≥ p_student(true)`` with, for ``mode="sigmoid"`` (dense heads),
    ``p(true) = σ(logit[l])`` on positives (label ``l ≥ 1``, column ``l``) and
    ``1 − max_k σ(logit[k])`` on background (label 0); for ``mode="softmax"`` (RoI heads)
    ``p(true) = softmax(logits)[l]`` with column 0 = background. Ignored rows (label < 0) are False.

    Args:
        student_logits: ``(..., K)``.
        teacher_logits: Same shape.
        gt_labels: ``(...)`` int labels (``≥ 1`` class, 0 background, < 0 ignore).
        mode: ``"sigmoid"`` (default) or ``"softmax"``.

    Returns:
        Bool tensor of shape ``gt_labels.shape``.
    """
    _check_same_shape(student_logits, teacher_logits, "cls_gate")
    if gt_labels.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"cls_gate: gt_labels shape {tuple(gt_labels.shape)} != logits shape without classes "
            f"{tuple(student_logits.shape[:-1])}"
        )
    if gt_labels.numel() and int(gt_labels.max()) >= student_logits.shape[-1]:
        raise ValueError(
            f"cls_gate: label {int(gt_labels.max())} has no logit column (K={student_logits.shape[-1]})"
        )
    p_s = _true_label_prob(student_logits.float(), gt_labels, mode)
    p_t = _true_label_prob(teacher_logits.to(student_logits.device).float(), gt_labels, mode)
    return (p_t >= p_s) & (gt_labels >= 0)


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of matching rows, ``(..., 4) × (..., 4) -> (...)`` for xyxy boxes, in O(N) memory.

    ``torchvision.ops.box_iou`` is pairwise (``N × M``); its diagonal would cost O(N²) memory for
    thousands of anchors, so the intersection/union is written row by row here. Degenerate pairs
    (zero union) get IoU 0.
    """
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp_min(0).prod(dim=-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp_min(0).prod(dim=-1)
    union = area1 + area2 - inter
    return torch.where(
        union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union)
    )


@torch.no_grad()
def box_gate(student_boxes: Tensor, teacher_boxes: Tensor, gt_boxes: Tensor, positive_mask: Tensor) -> Tensor:
    """TADF box gate: positives where the teacher's decoded box beats the student's.

    ``gate = positive ∧ IoU(teacher_box, gt) > IoU(student_box, gt)`` (strict, so ties are off).

    Args:
        student_boxes: ``(..., 4)`` decoded xyxy boxes of the student.
        teacher_boxes: ``(..., 4)`` decoded xyxy boxes of the teacher (same anchors/RoIs).
        gt_boxes: ``(..., 4)`` matched ground-truth box per element (see :func:`matched_gt_boxes`).
        positive_mask: ``(...)`` bool, True on foreground elements.

    Returns:
        Bool tensor of shape ``positive_mask.shape``.
    """
    if not (student_boxes.shape == teacher_boxes.shape == gt_boxes.shape):
        raise ValueError(
            f"box_gate: shapes differ: student {tuple(student_boxes.shape)}, teacher "
            f"{tuple(teacher_boxes.shape)}, gt {tuple(gt_boxes.shape)}"
        )
    if positive_mask.shape != student_boxes.shape[:-1]:
        raise ValueError(
            f"box_gate: positive_mask shape {tuple(positive_mask.shape)} != {tuple(student_boxes.shape[:-1])}"
        )
    pos = positive_mask.bool()
    gate = torch.zeros_like(pos)
    gt = gt_boxes[pos].float()
    iou_t = elementwise_box_iou(teacher_boxes[pos].to(gt.device).float(), gt)
    iou_s = elementwise_box_iou(student_boxes[pos].float(), gt)
    gate[pos] = iou_t > iou_s
    return gate


def roi_box_gate(
    student_reg: Tensor,
    teacher_reg: Tensor,
    labels: Tensor,
    proposals: Tensor,
    gt_deltas: Tensor,
    *,
    teacher_labels: Tensor | None = None,
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
) -> Tensor:
    """TADF box gate for RoI heads: positive RoIs where the teacher's box beats the student's.

    Both heads regress class-specific deltas on the same (student) proposals (proposal sharing).
    For RoI ``i`` of label ``c ≥ 1`` the student's box is its class-``c`` deltas decoded on the
    proposal, the teacher's its class-``c'`` deltas (``c' = teacher_labels[i]``, default ``c``),
    the ground truth the training regression target decoded on the proposal; then
    :func:`box_gate`: ``IoU(teacher box, gt) > IoU(student box, gt)``. This is the box criterion
    of TADF, not the classification gate.

    Args:
        student_reg: ``(P, (K + 1) * 4)`` student deltas.
        teacher_reg: ``(P, (K' + 1) * 4)`` teacher deltas on the same proposals.
        labels: ``(P,)`` sampled label of each RoI (0 background, < 0 ignore).
        proposals: ``(P, 4)`` xyxy proposals (all images concatenated).
        gt_deltas: ``(P, 4)`` regression targets of the matched ground truth (torchvision's).
        teacher_labels: ``(P,)`` the RoI's class in the teacher's label space (<= 0: lacking).
        box_coder_weights: the RoI head's ``BoxCoder`` weights (torchvision: 10, 10, 5, 5).

    Returns:
        ``(P,)`` bool.
    """
    from torchvision.models.detection._utils import BoxCoder

    p = labels.shape[0]
    if proposals.shape != (p, 4) or gt_deltas.shape != (p, 4):
        raise ValueError(
            f"roi_box_gate: proposals {tuple(proposals.shape)} / gt_deltas {tuple(gt_deltas.shape)} must be ({p}, 4)"
        )
    t_labels = labels if teacher_labels is None else teacher_labels
    positive = (labels > 0) & (t_labels > 0)
    coder = BoxCoder(box_coder_weights)
    rows = torch.arange(p, device=labels.device)
    props = proposals.detach().float()
    s_d = student_reg.detach().reshape(p, -1, 4)[rows, labels.clamp_min(0).long()].float()
    t_d = teacher_reg.detach().reshape(p, -1, 4)[rows, t_labels.clamp_min(0).long()].float()
    s_box = coder.decode_single(s_d, props)
    t_box = coder.decode_single(t_d.to(props.device), props)
    gt = coder.decode_single(gt_deltas.detach().float(), props)
    return box_gate(s_box, t_box, gt, positive)


# ------------------------------------------------------------------------------ matching helpers


def _stack_matches(matched_idxs: Sequence[Tensor] | Tensor) -> Tensor:
    if isinstance(matched_idxs, Tensor):
        return matched_idxs if matched_idxs.dim() == 2 else matched_idxs.unsqueeze(0)
    if len(matched_idxs) == 0:
        raise ValueError("matched_idxs is empty: need one (A,) tensor per image")
    return torch.stack(list(matched_idxs))


def gt_labels_from_matches(
    matched_idxs: Sequence[Tensor] | Tensor, targets: Sequence[Mapping[str, Tensor]]
) -> Tensor:
    """Per-anchor ground-truth labels from torchvision matcher output.

    Args:
        matched_idxs: One ``(A,)`` tensor per image (or a ``(B, A)`` tensor): index into that
            image's ``targets[b]["boxes"]``, ``-1`` background, ``-2`` ignore (between thresholds).
        targets: Per-image target dicts with ``labels`` int64 ``(N,)`` in ``1..C``.

    Returns:
        ``(B, A)`` int64: the matched label (``≥ 1``), ``0`` background, ``-1`` ignore.
    """
    matches = _stack_matches(matched_idxs)
    if matches.shape[0] != len(targets):
        raise ValueError(f"gt_labels_from_matches: {matches.shape[0]} match rows for {len(targets)} targets")
    out = torch.zeros(matches.shape, dtype=torch.int64, device=matches.device)
    for b, target in enumerate(targets):
        m = matches[b]
        labels = target["labels"].to(device=m.device, dtype=torch.int64)
        fg = m >= 0
        if fg.any():
            out[b, fg] = labels[m[fg]]
        out[b, m < -1] = -1
    return out


def matched_gt_boxes(
    matched_idxs: Sequence[Tensor] | Tensor, targets: Sequence[Mapping[str, Tensor]]
) -> Tensor:
    """Per-anchor matched ground-truth box (zeros on background / ignored anchors).

    Use with ``positive_mask = matches >= 0`` for :func:`box_gate`.

    Args:
        matched_idxs: As in :func:`gt_labels_from_matches`.
        targets: Per-image target dicts with ``boxes`` float ``(N, 4)`` xyxy.

    Returns:
        ``(B, A, 4)`` float32 boxes.
    """
    matches = _stack_matches(matched_idxs)
    if matches.shape[0] != len(targets):
        raise ValueError(f"matched_gt_boxes: {matches.shape[0]} match rows for {len(targets)} targets")
    out = torch.zeros((*matches.shape, 4), dtype=torch.float32, device=matches.device)
    for b, target in enumerate(targets):
        m = matches[b]
        fg = m >= 0
        if fg.any():
            out[b, fg] = target["boxes"].to(device=m.device, dtype=torch.float32)[m[fg]]
    return out


__all__ = [
    "BoxLoss",
    "box_gate",
    "cls_gate",
    "dense_box_kd",
    "dense_cls_kd",
    "elementwise_box_iou",
    "gt_labels_from_matches",
    "matched_gt_boxes",
    "roi_box_gate",
    "roi_box_kd",
    "roi_cls_kd",
]
