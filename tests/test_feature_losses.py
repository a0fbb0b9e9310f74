"""Tests of the feature-level distillation losses, parametrised over the registry."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curriculum_search.distill.feature import (
    FeatureLoss,
    MGDLoss,
    align_features,
    build_feature_loss,
    feature_loss_params,
    foreground_masks,
    gaussian_box_mask,
    list_feature_losses,
    nearest_levels,
)
from tests.helpers import set_identity_generator

torch.set_num_threads(1)

IMAGE = 64
SIZES = (16, 8, 4)  # strides 4, 8, 16 at 64 px
ALL = list_feature_losses()


def smooth_maps(channels: int, batch: int = 2, sizes: tuple[int, ...] = SIZES, seed: int = 0) -> list[Tensor]:
    """Spatially correlated maps (like real FPN features): upsampled low-resolution noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in sizes:
        low = torch.randn(batch, channels, max(s // 4, 1), max(s // 4, 1), generator=g)
        out.append(F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False))
    return out


def make_targets() -> list[dict[str, Tensor]]:
    return [
        {
            "boxes": torch.tensor([[4.0, 4.0, 20.0, 28.0], [30.0, 30.0, 60.0, 50.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)},
    ]


def build(name: str, cs: int = 8, ct: int = 8, levels: int = len(SIZES), **params: Any) -> FeatureLoss:
    if name == "mgd":
        params.setdefault("seed", 0)
    return build_feature_loss(name, cs, ct, levels, **params)


# ---------------------------------------------------------------- (1) student == teacher gives ~0
@pytest.mark.parametrize("name", ALL)
def test_identical_student_and_teacher_give_zero(name: str) -> None:
    if name == "mgd":
        # The generator cannot be the identity in general (ReLU), so: no masking and an identity
        # generator on non-negative features (see set_identity_generator).
        loss = build(name, lambda_mgd=0.0)
        assert isinstance(loss, MGDLoss)
        set_identity_generator(loss)
        teacher = [m.abs() for m in smooth_maps(8)]
        other = [m.abs() for m in smooth_maps(8, seed=1)]
    else:
        loss = build(name)
        teacher = smooth_maps(8)
        other = smooth_maps(8, seed=1)
    same = loss([m.clone() for m in teacher], teacher, make_targets(), IMAGE)
    different = loss(other, teacher, make_targets(), IMAGE)
    assert different.item() > 0
    assert abs(same.item()) <= 1e-6 * different.item()


# ---------------------------------------------------------------- (2) optimising the student helps
@pytest.mark.parametrize("name", ALL)
def test_loss_decreases_when_student_is_optimised(name: str) -> None:
    torch.manual_seed(0)
    loss = build(name)
    teacher = smooth_maps(8)
    student = [nn.Parameter(torch.randn_like(t)) for t in teacher]
    # Learnable parts of the loss (generators, context blocks) train with the student, as in use.
    opt = torch.optim.Adam([*student, *loss.parameters()], lr=0.02)
    values = []
    for _ in range(100):
        value = loss(student, teacher, make_targets(), IMAGE)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    final = sum(values[-10:]) / 10  # MGD's masks make single values noisy
    assert final < 0.5 * values[0], (values[0], final)


# ---------------------------------------------------------------- (3) channel / level mismatch
def test_nearest_levels_and_align_features() -> None:
    # transformer-like teacher (strides 4..32) vs RetinaNet student (strides 8..128) at 128 px
    teacher_strides, student_strides = [4, 8, 16, 32], [8, 16, 32, 64, 128]
    assert nearest_levels(student_strides, teacher_strides) == [1, 2, 3, 3, 3]
    assert nearest_levels([8], [4, 16]) == [0]  # tie: the finer level wins
    teacher = [torch.randn(2, 16, 128 // s, 128 // s) for s in teacher_strides]
    student = [torch.randn(2, 8, math.ceil(128 / s), math.ceil(128 / s)) for s in student_strides]
    aligned = align_features(student, teacher, student_strides, teacher_strides)
    assert [tuple(a.shape) for a in aligned] == [(2, 16, s.shape[2], s.shape[3]) for s in student]
    assert torch.equal(aligned[0], teacher[1])
    # stride 64 from the 4×4 stride-32 map: mean of 2×2 blocks, computed by hand for one cell
    assert torch.allclose(aligned[3][:, :, 0, 0], teacher[3][:, :, :2, :2].mean(dim=(2, 3)))
    assert torch.allclose(aligned[4][:, :, 0, 0], teacher[3].mean(dim=(2, 3)))
    # non-integer factor (4×4 → 3×3) falls back to bilinear interpolation
    odd = align_features([torch.zeros(1, 1, 3, 3)], [teacher[3][:1]], [40], [32])[0]
    expected = F.interpolate(teacher[3][:1], size=(3, 3), mode="bilinear", align_corners=False)
    assert torch.allclose(odd, expected)
    # fp16 maps stay fp16
    half = align_features(student, [t.half() for t in teacher], student_strides, teacher_strides)
    assert all(a.dtype == torch.float16 for a in half)
    with pytest.raises(ValueError, match="teacher strides"):
        align_features(student, teacher, student_strides, teacher_strides[:3])


@pytest.mark.parametrize("name", ALL)
def test_channel_and_level_mismatch(name: str) -> None:
    teacher_strides, student_strides = [4, 8, 16, 32], [8, 16, 32, 64, 128]
    teacher = [torch.randn(2, 16, 128 // s, 128 // s) for s in teacher_strides]
    student = [
        torch.randn(2, 8, math.ceil(128 / s), math.ceil(128 / s), requires_grad=True) for s in student_strides
    ]
    aligned = align_features(student, teacher, student_strides, teacher_strides)
    loss = build(name, cs=8, ct=16, levels=5)
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 70.0]])}, {"boxes": torch.zeros((0, 4))}]
    value = loss(student, aligned, targets, 128)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() > 0
    value.backward()
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in student)
    adapter = loss.adapters[0]
    assert isinstance(adapter, nn.Conv2d) and adapter.weight.grad is not None
    with pytest.raises(ValueError, match="levels"):
        loss(student[:4], aligned[:4], targets, 128)


# ---------------------------------------------------------------- (4) fp16 teacher, no teacher grads
@pytest.mark.parametrize("name", ALL)
def test_fp16_teacher_is_cast_and_never_gets_gradients(name: str) -> None:
    teacher32 = smooth_maps(16)
    teacher16 = [t.half().requires_grad_(True) for t in teacher32]
    student = [s.requires_grad_(True) for s in smooth_maps(8, seed=1)]
    loss = build(name, cs=8, ct=16)
    value = loss(student, teacher16, make_targets(), IMAGE)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert all(t.grad is None for t in teacher16)
    assert all(s.grad is not None for s in student)
    if name != "mgd":  # same value as with the fp32 teacher, up to fp16 rounding
        ref = loss(
            [s.detach() for s in student], [t.half().float() for t in teacher32], make_targets(), IMAGE
        )
        assert torch.allclose(value, ref, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- (5) images without boxes
@pytest.mark.parametrize("name", ALL)
def test_empty_targets_give_finite_values_and_gradients(name: str) -> None:
    teacher = smooth_maps(8)
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)} for _ in range(2)]
    for targets in (empty, None):
        student = [s.requires_grad_(True) for s in smooth_maps(8, seed=1)]
        value = build(name)(student, teacher, targets, IMAGE)
        assert torch.isfinite(value)
        value.backward()
        assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in student)


def test_tadf_feature_is_zero_without_boxes_and_focuses_on_objects() -> None:
    loss = build("tadf_feature", levels=1)
    assert loss.uses_targets and not build("mse").uses_targets
    teacher = [torch.ones(1, 8, 16, 16)]
    assert loss([torch.zeros(1, 8, 16, 16)], teacher, None, IMAGE).item() == 0.0
    box = [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]])}]  # centre cell (3.5, 3.5) at stride 4
    near, far = torch.ones(1, 8, 16, 16), torch.ones(1, 8, 16, 16)
    near[:, :, 2:6, 2:6] = 0.0  # error on the object
    far[:, :, 12:, 12:] = 0.0  # same amount of error far from it
    near_loss = loss([near], teacher, box, IMAGE).item()
    far_loss = loss([far], teacher, box, IMAGE).item()
    assert near_loss > 0.3 and far_loss < 1e-4 * near_loss


# ---------------------------------------------------------------- (6) masks
def test_gaussian_mask_peaks_at_box_centres_and_vanishes_far_away() -> None:
    # stride 4: cell (i, j) centre at (4j + 2, 4i + 2); boxes centred on cells (3, 3) and (12, 10)
    boxes = torch.tensor([[6.0, 6.0, 22.0, 22.0], [34.0, 42.0, 50.0, 58.0]])
    mask = gaussian_box_mask(boxes, 16, 16, stride=4.0)
    assert mask.shape == (16, 16)
    assert mask[3, 3].item() == pytest.approx(1.0) and mask[12, 10].item() == pytest.approx(1.0)
    assert mask[3, 3] > mask[3, 4] > mask[3, 5] > 0  # decays away from the centre
    # one cell (4 px) right of the first centre: exp(-4² / (2 · 8²)), sigma = 0.5 · 16 px
    assert mask[3, 4].item() == pytest.approx(math.exp(-16 / 128), rel=1e-5)
    assert mask[15, 0].item() < 1e-3 and mask[0, 15].item() < 1e-3
    assert gaussian_box_mask(torch.zeros((0, 4)), 5, 7, stride=4.0).eq(0).all()


def test_foreground_masks_are_area_normalised() -> None:
    # box covering cells x 1..2, y 1..3 (6 cells) at stride 8; overlapping 1-cell box at (1, 1)
    boxes = torch.tensor([[8.0, 8.0, 24.0, 32.0], [9.0, 9.0, 15.0, 15.0]])
    fg, bg = foreground_masks(boxes, 4, 4, stride=8.0)
    expected = torch.zeros(4, 4)
    expected[1:4, 1:3] = 1 / 6
    expected[1, 1] = 1.0  # the max over boxes keeps the small box's weight
    assert torch.allclose(fg, expected)
    assert torch.allclose(bg, (expected == 0).float() / 10)
    fg0, bg0 = foreground_masks(torch.zeros((0, 4)), 2, 3, stride=8.0)
    assert fg0.eq(0).all() and torch.allclose(bg0, torch.full((2, 3), 1 / 6))


# ---------------------------------------------------------------- values computed by hand
def test_hand_computed_values() -> None:
    # mse: error 1 everywhere; normalize divides by the teacher's mean square (4)
    t = [torch.full((1, 2, 2, 2), 2.0)]
    s = [torch.full((1, 2, 2, 2), 1.0)]
    assert build("mse", cs=2, ct=2, levels=1)(s, t).item() == pytest.approx(1.0)
    assert build("mse", cs=2, ct=2, levels=1, normalize=True)(s, t).item() == pytest.approx(0.25, rel=1e-5)
    # cwd: one channel over two positions, p = (3/4, 1/4), q = (1/2, 1/2), weight 10
    cwd = build("cwd", cs=1, ct=1, levels=1)
    value = cwd([torch.zeros(1, 1, 1, 2)], [torch.tensor([[[[math.log(3.0), 0.0]]]])])
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert value.item() == pytest.approx(10 * kl, rel=1e-5)
    # pkd: affine-invariant per channel; a sign flip gives mean((−z − z)²)/2 = 2, weight 10
    pkd = build("pkd", cs=3, ct=3, levels=1)
    z = torch.randn(2, 3, 4, 4)
    assert pkd([3 * z + 1], [z]).item() == pytest.approx(0.0, abs=1e-5)
    assert pkd([-z], [z]).item() == pytest.approx(20.0, rel=1e-4)
    assert torch.isfinite(pkd([torch.randn(1, 3, 1, 1)], [torch.randn(1, 3, 1, 1)]))


def test_mgd_masks_are_seeded_and_hit_the_requested_ratio() -> None:
    loss = build("mgd", lambda_mgd=0.65, seed=3)
    assert isinstance(loss, MGDLoss)
    mask = loss.random_mask(4, 32, 32, torch.device("cpu"))
    assert abs((1 - mask.mean().item()) - 0.65) < 0.03
    teacher, student = smooth_maps(8), smooth_maps(8, seed=1)
    torch.manual_seed(0)
    a = build("mgd", seed=7)
    torch.manual_seed(0)
    b = build("mgd", seed=7)  # same weights (same global seed), same mask seed
    torch.manual_seed(0)
    c = build("mgd", seed=8)
    va, vb, vc = (m(student, teacher).item() for m in (a, b, c))
    assert va == vb and va != vc
    assert isinstance(b, MGDLoss)
    b.set_generator(torch.Generator().manual_seed(7))  # restart b's mask stream
    torch.manual_seed(0)
    assert build("mgd", seed=7)(student, teacher).item() == b(student, teacher).item()


# ---------------------------------------------------------------- (7) registry errors
def test_registry_lists_and_validates() -> None:
    assert {"mse", "tadf_feature", "mgd", "fgd", "cwd", "pkd"} <= set(ALL)
    params = feature_loss_params("tadf_feature")
    assert params["gt_mask"] is True and params["normalize"] is True
    assert feature_loss_params("mgd") == {  # None: the paper's value for `detector` (issue 12.4)
        "adapter": "auto",
        "alpha_mgd": None,
        "lambda_mgd": None,
        "seed": None,
        "detector": "one_stage",
        "normalize_size": True,
    }
    one, two = build("mgd"), build("mgd", detector="two_stage")
    assert isinstance(one, MGDLoss) and isinstance(two, MGDLoss)
    assert (one.alpha_mgd, one.lambda_mgd, two.alpha_mgd, two.lambda_mgd) == (2e-5, 0.65, 5e-7, 0.45)
    assert build("tadf_feature", gt_mask=False).uses_targets is False  # user values beat alias defaults
    with pytest.raises(ValueError) as exc:
        build_feature_loss("mgdd", 8, 8, 3)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("name:") and "'mgdd'" in msg
    assert all(n in msg for n in ALL)
    with pytest.raises(ValueError) as exc:
        build_feature_loss("mgd", 8, 8, 3, alpha=1.0)
    msg = str(exc.value)
    assert (
        "\n" not in msg
        and msg.startswith("alpha:")
        and "alpha_mgd, detector, lambda_mgd, normalize_size, seed" in msg
    )
    with pytest.raises(ValueError, match=r"^lambda_mgd: feature loss 'mgd': must be in \[0, 1\), got 1\.5$"):
        build_feature_loss("mgd", 8, 8, 3, lambda_mgd=1.5)
    with pytest.raises(ValueError, match=r"^adapter: .*'auto', 'conv'"):
        build_feature_loss("cwd", 8, 8, 3, adapter="linear")
    with pytest.raises(ValueError, match=r"^normalize: .*true/false"):
        build_feature_loss("mse", 8, 8, 3, normalize="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ALL)
def test_losses_run_on_cuda_with_cpu_fp16_teacher(name: str) -> None:
    student = [s.cuda().requires_grad_(True) for s in smooth_maps(8)]
    teacher = [t.half() for t in smooth_maps(16, seed=1)]  # cache entries may still be on the CPU
    loss = build(name, cs=8, ct=16).cuda()
    value = loss(student, teacher, make_targets(), IMAGE)
    assert value.is_cuda and torch.isfinite(value)
    value.backward()
