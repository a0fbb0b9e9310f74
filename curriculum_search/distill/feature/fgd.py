"""Focal and Global Distillation (Yang et al., CVPR 2022, arXiv:2111.11837)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from curriculum_search.distill.feature._registry import (
    FeatureLoss,
    Targets,
    check_bool,
    check_choice,
    check_number,
    register_feature_loss,
)
from curriculum_search.distill.feature.masks import foreground_masks, target_boxes
from curriculum_search.distill.feature.reference import (
    DETECTOR_TYPES,
    channel_scale,
    element_scale,
    position_scale,
)

#: The official configs' ``(α, β, γ, λ)`` per detector type.
PAPER_DEFAULTS = {
    "one_stage": (1e-3, 5e-4, 5e-4, 5e-6),
    "two_stage": (5e-5, 2.5e-5, 5e-5, 5e-7),
}


def attention_maps(feat: Tensor, temp: float) -> tuple[Tensor, Tensor]:
    """FGD spatial and channel attention of ``(B, C, H, W)`` features.

    ``A_S = H·W · softmax_{y,x}(mean_c |F| / T)`` of shape ``(B, H, W)`` and
    ``A_C = C · softmax_c(mean_{y,x} |F| / T)`` of shape ``(B, C)`` (both average to 1).
    """
    b, c, h, w = feat.shape
    value = feat.abs()
    spatial = F.softmax(value.mean(dim=1).reshape(b, -1) / temp, dim=1).reshape(b, h, w) * (h * w)
    channel = F.softmax(value.mean(dim=(2, 3)) / temp, dim=1) * c
    return spatial, channel


class GlobalContext(nn.Module):
    """GcBlock used by FGD's global loss: ``x + Wv2(ReLU(LN(Wv1(Σ_j softmax(Wk x)_j x_j))))``.

    ``conv_mask`` is Kaiming-initialised (fan-in) and the last 1×1 conv is zero-initialised, so the
    block starts as the identity (as in the official code).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        # no bias: a constant added before the softmax over positions changes nothing
        conv_mask = nn.Conv2d(channels, 1, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(conv_mask.weight, mode="fan_in", nonlinearity="relu")
        last = nn.Conv2d(hidden, channels, kernel_size=1)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.conv_mask = conv_mask
        self.channel_add = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            last,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Add the global context vector to every position of ``x`` ``(B, C, H, W)``."""
        b, c, h, w = x.shape
        weights = F.softmax(self.conv_mask(x).reshape(b, 1, h * w), dim=2)  # (B, 1, HW)
        context = torch.bmm(x.reshape(b, c, h * w), weights.transpose(1, 2)).reshape(b, c, 1, 1)
        return x + self.channel_add(context)


@register_feature_loss("fgd")
class FGDLoss(FeatureLoss):
    """FGD: focal (foreground/background, attention-weighted) + global (GcBlock relation) losses.

    Per level with aligned student ``S`` (1×1 conv only if ``Cs != Ct``), teacher ``T``, teacher
    attention ``A_S^T, A_C^T`` and student attention ``A_S^S, A_C^S`` (:func:`attention_maps`,
    temperature ``T``), box masks ``M_fg, M_bg`` (:func:`~.masks.foreground_masks`, area-normalised
    foreground, background normalised to sum 1 per image)::

        L_fg  = Σ M_fg · A_S^T · A_C^T · (S − T)² / B
        L_bg  = Σ M_bg · A_S^T · A_C^T · (S − T)² / B
        L_at  = (Σ |A_C^S − A_C^T| + Σ |A_S^S − A_S^T|) / B
        L_gl  = Σ (GC_s(S) − GC_t(T))² / B
        L     = Σ_l α L_fg + β L_bg + γ L_at + λ L_gl

    Defaults are the official configs for the ``detector`` type (``yzd-v/FGD``
    ``configs/distillers/fgd/fgd_retina_r101_fpn_2x_distill_retina_r50_fpn_2x_coco.py`` and the
    rx101 one; the Faster R-CNN ones): ``T = 0.5`` and one-stage (RetinaNet) ``α = 1e-3,
    β = 5e-4, γ = 5e-4, λ = 5e-6`` (the loss class' own default ``γ = 1e-3`` is not what those
    configs use), two-stage (Faster R-CNN) ``α = 5e-5, β = 2.5e-5, γ = 5e-5, λ = 5e-7``.

    **Size normalisation** (``normalize_size``, default on): each sum is multiplied by
    ``reference count / actual count`` of what it sums, counts taken over all levels at the papers'
    reference (COCO 1333×800, 256 channels, P3–P7 one-stage / P2–P6 two-stage; see
    :mod:`~curriculum_search.distill.feature.reference`): ``L_fg``, ``L_bg`` and the channel part of
    ``L_at`` by channels (the masks are already area-normalised), the spatial part of ``L_at`` by
    positions, ``L_gl`` by elements. At the reference the paper's loss is reproduced exactly;
    elsewhere the same weights give the same ratio to the detection loss.

    Deviation from the official code: foreground masks index rows by y and columns by x (the
    official code swaps them on non-square maps) and cover exactly the cells a box overlaps.
    Images without boxes are all background. The two GcBlocks are learnable (optimise them with the
    student); they start as identities, so a student equal to its teacher has loss 0 at init.

    Args:
        student_channels: Student channels ``Cs``.
        teacher_channels: Teacher channels ``Ct``.
        num_levels: Number of FPN levels.
        adapter: ``"auto"`` (identity if ``Cs == Ct``, else 1×1 conv) or ``"conv"``.
        temp: Attention temperature ``T``. Default 0.5.
        alpha_fgd: Foreground weight ``α``. Default 1e-3.
        beta_fgd: Background weight ``β``. Default 5e-4.
        gamma_fgd: Attention weight ``γ``. Default 5e-4.
        lambda_fgd: Global (relation) weight ``λ``. Default 5e-6.
            (``α, β, γ, λ`` default to None: the paper's values for ``detector``, listed above.)
        detector: ``"one_stage"`` or ``"two_stage"``: the paper defaults and reference levels
            (the trainer sets it from the student). Default ``"one_stage"``.
        normalize_size: Rescale to the reference size (see above). Default True.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_levels: int,
        *,
        adapter: str = "auto",
        temp: float = 0.5,
        alpha_fgd: float | None = None,
        beta_fgd: float | None = None,
        gamma_fgd: float | None = None,
        lambda_fgd: float | None = None,
        detector: str = "one_stage",
        normalize_size: bool = True,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_levels, adapter=adapter)
        self.detector = check_choice(self.name, "detector", detector, DETECTOR_TYPES)
        a, b, g, lam = PAPER_DEFAULTS[self.detector]
        self.temp = check_number(self.name, "temp", temp, low=0.0, low_open=True)
        self.alpha_fgd = check_number(self.name, "alpha_fgd", a if alpha_fgd is None else alpha_fgd, low=0.0)
        self.beta_fgd = check_number(self.name, "beta_fgd", b if beta_fgd is None else beta_fgd, low=0.0)
        self.gamma_fgd = check_number(self.name, "gamma_fgd", g if gamma_fgd is None else gamma_fgd, low=0.0)
        self.lambda_fgd = check_number(
            self.name, "lambda_fgd", lam if lambda_fgd is None else lambda_fgd, low=0.0
        )
        self.normalize_size = check_bool(self.name, "normalize_size", normalize_size)
        self.context_s = nn.ModuleList([GlobalContext(teacher_channels) for _ in range(num_levels)])
        self.context_t = nn.ModuleList([GlobalContext(teacher_channels) for _ in range(num_levels)])

    @property
    def uses_targets(self) -> bool:
        """FGD always reads the ground-truth boxes."""
        return True

    def compute(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: Targets | None,
        image_size: int | None,
    ) -> Tensor:
        """Sum over levels of ``α L_fg + β L_bg + γ L_at + λ L_gl`` (each sum size-normalised)."""
        batch = student[0].shape[0]
        boxes = target_boxes(targets, batch, student[0].device)
        fg_sum = bg_sum = at_ch_sum = at_sp_sum = rel_sum = student[0].new_zeros(())
        for level, (s, t) in enumerate(zip(student, teacher)):
            h, w = s.shape[-2:]
            # without targets there are no boxes and the stride is irrelevant
            stride = 1.0 if targets is None else self._stride(image_size, w)
            masks = [foreground_masks(b, h, w, stride) for b in boxes]
            fg = torch.stack([m[0] for m in masks]).to(s.dtype)[:, None]  # (B, 1, H, W)
            bg = torch.stack([m[1] for m in masks]).to(s.dtype)[:, None]
            sp_t, ch_t = attention_maps(t, self.temp)
            sp_s, ch_s = attention_maps(s, self.temp)
            weighted = (s - t).pow(2) * sp_t[:, None] * ch_t[:, :, None, None]
            fg_sum = fg_sum + (weighted * fg).sum() / batch
            bg_sum = bg_sum + (weighted * bg).sum() / batch
            at_ch_sum = at_ch_sum + (ch_s - ch_t).abs().sum() / batch
            at_sp_sum = at_sp_sum + (sp_s - sp_t).abs().sum() / batch
            rel_sum = rel_sum + (self.context_s[level](s) - self.context_t[level](t)).pow(2).sum() / batch
        if self.normalize_size:  # O(1): reference count / count, from the shapes
            by_ch = channel_scale(teacher, self.detector)
            by_pos = position_scale(teacher, self.detector)
            by_el = element_scale(teacher, self.detector)
        else:
            by_ch = by_pos = by_el = 1.0
        return (
            (self.alpha_fgd * by_ch) * fg_sum
            + (self.beta_fgd * by_ch) * bg_sum
            + self.gamma_fgd * (by_ch * at_ch_sum + by_pos * at_sp_sum)
            + (self.lambda_fgd * by_el) * rel_sum
        )

    def extra_repr(self) -> str:
        return (
            f"temp={self.temp:g}, alpha_fgd={self.alpha_fgd:g}, beta_fgd={self.beta_fgd:g}, "
            f"gamma_fgd={self.gamma_fgd:g}, lambda_fgd={self.lambda_fgd:g}, detector={self.detector}, "
            f"normalize_size={self.normalize_size}"
        )
