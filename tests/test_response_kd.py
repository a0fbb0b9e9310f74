"""Response (head-level) KD losses and TADF gates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from curriculum_search.distill.response import (
    BoxLoss,
    box_gate,
    cls_gate,
    dense_box_kd,
    dense_cls_kd,
    elementwise_box_iou,
    gt_labels_from_matches,
    matched_gt_boxes,
    roi_box_kd,
    roi_cls_kd,
)

torch.set_num_threads(1)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ------------------------------------------------------------------------------------- dense cls


def test_dense_cls_kd_zero_when_equal_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 3, generator=g)
    assert dense_cls_kd(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert dense_cls_kd(s, s + 0.5 * torch.randn(2, 5, 3, generator=g)).item() > 1e-3


def test_dense_cls_kd_hand_value_weight_normalisation_and_temperature() -> None:
    # Anchor 0: p = 0.5, q = 0.8; anchor 1 differs too but has weight 0.
    s = torch.tensor([[[0.0], [3.0]]])
    t = torch.tensor([[[_logit(0.8)], [-3.0]]])
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert dense_cls_kd(s, t, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(kl, rel=1e-5)
    # Weights sum to 0.5 < 1: the denominator is clamped to 1.
    assert dense_cls_kd(s, t, torch.tensor([[0.5, 0.0]])).item() == pytest.approx(0.5 * kl, rel=1e-5)
    # Weights 2 and 2 on the same two anchors: plain mean.
    s2 = torch.tensor([[[0.0], [0.0]]])
    t2 = torch.tensor([[[_logit(0.8)], [_logit(0.8)]]])
    assert dense_cls_kd(s2, t2, torch.tensor([[2.0, 2.0]])).item() == pytest.approx(kl, rel=1e-5)
    # Temperature 2: probabilities at logit / 2, times T².
    p, q = 0.5, 1 / (1 + math.exp(-_logit(0.8) / 2))
    kl_t = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    assert dense_cls_kd(s, t, torch.tensor([[1.0, 0.0]]), temperature=2.0).item() == pytest.approx(
        4 * kl_t, rel=1e-5
    )


def test_dense_cls_kd_gradient_reaches_student_only_and_equals_bce_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(1, 4, 3, generator=g, requires_grad=True)
    t = torch.randn(1, 4, 3, generator=g, requires_grad=True)
    w = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    dense_cls_kd(s, t, w).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert torch.all(s.grad[0, 1] == 0)  # zero-weight anchor gets no gradient
    s_ref = s.detach().clone().requires_grad_(True)
    bce = F.binary_cross_entropy_with_logits(s_ref, torch.sigmoid(t.detach()), reduction="none").sum(-1)
    ((bce * w).sum() / 3).backward()
    assert s_ref.grad is not None
    assert torch.allclose(s.grad, s_ref.grad, atol=1e-6)


def test_dense_cls_kd_accepts_fp16_teacher_and_no_positive_weight() -> None:
    s = torch.zeros(1, 3, 2, requires_grad=True)
    t = torch.ones(1, 3, 2, dtype=torch.float16)
    assert dense_cls_kd(s, t).dtype == torch.float32
    zero = dense_cls_kd(s, t, torch.zeros(1, 3))
    assert zero.item() == 0.0
    zero.backward()  # still differentiable when nothing is switched on
    with pytest.raises(ValueError, match="weight shape"):
        dense_cls_kd(s, t, torch.ones(3))
    with pytest.raises(ValueError, match="student shape"):
        dense_cls_kd(s, torch.zeros(1, 3, 3))


# ------------------------------------------------------------------------------------- dense box


@pytest.mark.parametrize("loss", ["giou", "smooth_l1", "l1"])
def test_dense_box_kd_zero_when_equal_positive_otherwise_student_grad_only(loss: BoxLoss) -> None:
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 30.0]]])
    s = boxes.clone().requires_grad_(True)
    t = boxes.clone().requires_grad_(True)
    assert dense_box_kd(s, t, loss=loss).item() == pytest.approx(0.0, abs=1e-6)
    shifted = (boxes + torch.tensor([1.0, 0.0, 1.0, 0.0])).requires_grad_(True)
    out = dense_box_kd(s, shifted, loss=loss)
    assert out.item() > 0
    out.backward()
    assert shifted.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_dense_box_kd_hand_values() -> None:
    s = torch.zeros(1, 2, 4)
    t = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.05, 0.0, 0.0, 0.0]]])
    # smooth-L1 with beta 1/9: |1| -> 1 - 0.5/9 ; |0.05| -> 0.5 * 0.05² * 9
    expected = (1 - 0.5 / 9 + 0.5 * 0.05**2 * 9) / 2
    assert dense_box_kd(s, t, loss="smooth_l1").item() == pytest.approx(expected, rel=1e-5)
    assert dense_box_kd(s, t, loss="l1").item() == pytest.approx(1.05 / 2, rel=1e-6)
    # GIoU: [0,0,10,10] vs [0,0,5,10]: IoU 0.5, enclosing box = union -> loss 0.5.
    sb = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    tb = torch.tensor([[[0.0, 0.0, 5.0, 10.0]]])
    assert dense_box_kd(sb, tb, loss="giou").item() == pytest.approx(0.5, rel=1e-5)


def test_dense_box_kd_ignores_degenerate_zero_weight_anchors_and_unknown_loss() -> None:
    s = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [float("nan")] * 4]])
    t = torch.tensor([[[0.0, 0.0, 5.0, 10.0], [0.0, 0.0, 0.0, 0.0]]])
    out = dense_box_kd(s, t, torch.tensor([[1.0, 0.0]]), loss="giou")
    assert out.item() == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(ValueError, match="unknown box KD loss 'iou'"):
        dense_box_kd(s, t, loss="iou")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- RoI KD


def test_roi_cls_kd_hand_value_zero_when_equal_and_grad() -> None:
    s = torch.tensor([[0.0, 0.0], [1.0, 2.0]], requires_grad=True)
    t = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]], requires_grad=True)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    out = roi_cls_kd(s, t, torch.tensor([1.0, 1.0]), temperature=1.0)
    assert out.item() == pytest.approx(kl / 2, rel=1e-5)  # second RoI agrees: 0
    out.backward()
    assert t.grad is None and s.grad is not None and s.grad[0].abs().sum() > 0
    assert roi_cls_kd(s.detach(), s.detach()).item() == pytest.approx(0.0, abs=1e-7)


def test_roi_cls_kd_temperature_scaling() -> None:
    s = torch.tensor([[0.0, 1.0, -1.0]])
    t = torch.tensor([[2.0, 0.0, 0.5]])
    ref = F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="sum") * 4
    assert roi_cls_kd(s, t).item() == pytest.approx(ref.item(), rel=1e-5)


def test_roi_box_kd_uses_the_label_columns_of_positives_only() -> None:
    # 3 RoIs, K + 1 = 3 classes -> 12 columns. Labels: class 2, background, class 1.
    s = torch.zeros(3, 12, requires_grad=True)
    t = torch.full((3, 12), 7.0)  # garbage everywhere except the label columns
    t[0, 8:12] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    t[2, 4:8] = torch.tensor([0.05, 0.0, 0.0, 0.0])
    labels = torch.tensor([2, 0, 1])
    expected = (1 - 0.5 / 9 + 0.5 * 0.05**2 * 9) / 2
    out = roi_box_kd(s, t, labels)
    assert out.item() == pytest.approx(expected, rel=1e-5)
    out.backward()
    assert s.grad is not None
    nonzero_cols = {(int(i), int(j)) for i, j in torch.nonzero(s.grad)}
    assert nonzero_cols == {(0, 8), (2, 4)}
    # Weight switches RoI 2 off; RoI 1 being background never counts.
    assert roi_box_kd(s, t, labels, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(1 - 0.5 / 9)
    assert roi_box_kd(s, t.clone(), torch.tensor([0, 0, 0])).item() == 0.0
    t_same = s.detach().clone()
    assert roi_box_kd(s, t_same, labels).item() == 0.0


# ------------------------------------------------------------------------------------- TADF gates


def _four_anchor_logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1, 4, 3) sigmoid logits; column 0 unused (torchvision num_classes = C + 1)."""
    lo = -6.0
    student = torch.full((1, 4, 3), lo)
    teacher = torch.full((1, 4, 3), lo)
    # a0: label 2, teacher surer of the true class (0.88 vs 0.5)             -> True
    student[0, 0, 2], teacher[0, 0, 2] = 0.0, 2.0
    # a1: background, teacher fires on class 1 (1 - 0.73 < 1 - 0.047)       -> False
    student[0, 1, :] = -3.0
    teacher[0, 1, 1] = 1.0
    # a2: label 1, teacher less sure (0.27 vs 0.73)                          -> False
    student[0, 2, 1], teacher[0, 2, 1] = 1.0, -1.0
    # a3: ignored (-2) although the teacher is better                        -> False
    student[0, 3, 1], teacher[0, 3, 1] = -1.0, 3.0
    labels = torch.tensor([[2, 0, 1, -2]])
    return student, teacher, labels


def test_cls_gate_sigmoid_picks_the_expected_anchors() -> None:
    student, teacher, labels = _four_anchor_logits()
    assert cls_gate(student, teacher, labels).tolist() == [[True, False, False, False]]
    # Swapping the models flips every non-ignored decision.
    assert cls_gate(teacher, student, labels).tolist() == [[False, True, True, False]]
    # Ties count (>=): identical models pass everywhere except ignored anchors; -1 is ignore too.
    assert cls_gate(student, student, torch.tensor([[2, 0, 1, -1]])).tolist() == [[True, True, True, False]]


def test_cls_gate_softmax_uses_background_column_zero() -> None:
    student = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    # RoI 0 is background: student p(bg) high, teacher low -> False; RoI 1 teacher surer -> True;
    # RoI 2 teacher less sure of class 2 -> False.
    assert cls_gate(student, teacher, labels, mode="softmax").tolist() == [False, True, False]
    with pytest.raises(ValueError, match="unknown cls_gate mode"):
        cls_gate(student, teacher, labels, mode="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label 3 has no logit column"):
        cls_gate(student, teacher, torch.tensor([0, 1, 3]), mode="softmax")


def test_box_gate_picks_positives_where_teacher_iou_is_higher() -> None:
    gt = torch.tensor([0.0, 0.0, 10.0, 10.0]).expand(1, 4, 4).clone()
    half = torch.tensor([0.0, 0.0, 5.0, 10.0])
    teacher = torch.stack([gt[0, 0], half, gt[0, 0], half]).unsqueeze(0)
    student = torch.stack([half, gt[0, 0], half, half]).unsqueeze(0)
    positive = torch.tensor([[True, True, False, True]])
    # a0 teacher 1.0 > 0.5 -> True; a1 0.5 < 1.0 -> False; a2 negative -> False; a3 tie -> False.
    assert box_gate(student, teacher, gt, positive).tolist() == [[True, False, False, False]]


def test_elementwise_iou_matches_box_iou_diagonal() -> None:
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(3)
    xy = torch.rand(50, 2, generator=g) * 50
    a = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 30], 1)
    b = a + torch.randn(50, 4, generator=g) * 5
    b = torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:]) + 0.1], 1)
    assert torch.allclose(elementwise_box_iou(a, b), box_iou(a, b).diagonal(), atol=1e-6)
    assert elementwise_box_iou(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0


def test_labels_and_boxes_from_matches() -> None:
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3, 1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    matches = [torch.tensor([1, -1, 0, -2]), torch.tensor([-1, -2, -1, -1])]
    assert gt_labels_from_matches(matches, targets).tolist() == [[1, 0, 3, -1], [0, -1, 0, 0]]
    boxes = matched_gt_boxes(matches, targets)
    assert boxes.shape == (2, 4, 4)
    assert boxes[0, 0].tolist() == [1.0, 1.0, 9.0, 9.0]
    assert boxes[0, 2].tolist() == [0.0, 0.0, 4.0, 4.0]
    assert boxes[0, 1].abs().sum() == 0 and boxes[1].abs().sum() == 0
    with pytest.raises(ValueError, match="2 match rows for 1 targets"):
        gt_labels_from_matches(matches, targets[:1])


def test_gated_pipeline_distils_only_where_teacher_is_right() -> None:
    student, teacher, _ = _four_anchor_logits()
    targets = [{"boxes": torch.zeros(2, 4), "labels": torch.tensor([1, 2])}]
    matches = [torch.tensor([1, -1, 0, -2])]  # -> labels [2, 0, 1, -1], as in the 4-anchor example
    labels = gt_labels_from_matches(matches, targets)
    gate = cls_gate(student, teacher, labels)
    s = student.clone().requires_grad_(True)
    loss = dense_cls_kd(s, teacher, gate.float())
    loss.backward()
    assert s.grad is not None
    assert s.grad[0, 0].abs().sum() > 0 and s.grad[0, 1:].abs().sum() == 0
    assert loss.item() == pytest.approx(dense_cls_kd(student[:, :1], teacher[:, :1]).item(), rel=1e-6)
