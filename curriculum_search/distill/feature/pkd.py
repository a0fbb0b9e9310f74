"""PKD: feature imitation with Pearson correlation (Cao et al., NeurIPS 2022, arXiv:2207.02039)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from curriculum_search.distill.feature._registry import (
    FeatureLoss,
    Targets,
    check_number,
    register_feature_loss,
)

_EPS = 1e-6


def channel_standardize(feat: Tensor) -> Tensor:
    """Standardise each channel of ``(B, C, H, W)`` over batch and positions: ``(x − μ_c) / (σ_c + 1e-6)``.

    ``σ_c`` is the population standard deviation (the reference uses the unbiased one, which is
    NaN for a single value, e.g. a 1×1 map with batch 1; the two differ by ``√(n/(n−1))``).
    """
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    std = feat.std(dim=(0, 2, 3), keepdim=True, correction=0)
    return (feat - mean) / (std + _EPS)


@register_feature_loss("pkd")
class PKDLoss(FeatureLoss):
    """PKD: MSE between per-channel standardised maps, i.e. ``1 − Pearson r`` per channel.

    Per level with aligned student ``S`` (1×1 conv only if ``Cs != Ct``) and teacher ``T``::

        Ŝ, T̂ = channel_standardize(S), channel_standardize(T)   # over (B, H, W) per channel
        L = w · Σ_l mean_{b,c,y,x} (Ŝ − T̂)² / 2

    which equals ``w · Σ_l mean_c (1 − r_c)`` with ``r_c`` the Pearson correlation of channel ``c``;
    the value is invariant to per-channel affine changes of either map.

    Default ``w = 10`` is mmrazor's RetinaNet/FCOS setting (``configs/distill/mmdet/pkd/
    pkd_fpn_retina_x101_retina_r50_2x_coco.py``); its Faster R-CNN configs use ``w = 6``.

    Args:
        student_channels: Student channels ``Cs``.
        teacher_channels: Teacher channels ``Ct``.
        num_levels: Number of FPN levels.
        adapter: ``"auto"`` (identity if ``Cs == Ct``, else 1×1 conv) or ``"conv"``.
        loss_weight: Coefficient ``w``. Default 10.0.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_levels: int,
        *,
        adapter: str = "auto",
        loss_weight: float = 10.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_levels, adapter=adapter)
        self.loss_weight = check_number(self.name, "loss_weight", loss_weight, low=0.0)

    def compute(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: Targets | None,
        image_size: int | None,
    ) -> Tensor:
        """``w · Σ_l MSE(standardise(S), standardise(T)) / 2``."""
        total = student[0].new_zeros(())
        for s, t in zip(student, teacher):
            total = total + F.mse_loss(channel_standardize(s), channel_standardize(t)) / 2
        return self.loss_weight * total

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight:g}"
