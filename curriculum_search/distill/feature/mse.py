"""Plain feature imitation (MSE after a 1×1 adapter) and TADF's Gaussian-masked variant."""

from __future__ import annotations

import torch
from torch import Tensor

from curriculum_search.distill.feature._registry import (
    FeatureLoss,
    Targets,
    check_bool,
    check_number,
    register_feature_loss,
)
from curriculum_search.distill.feature.masks import gaussian_box_mask, target_boxes

_EPS = 1e-6


@register_feature_loss("tadf_feature", gt_mask=True, normalize=True)
@register_feature_loss("mse")
class MSEFeatureLoss(FeatureLoss):
    """Mean squared error between adapted student and teacher maps, optionally box-weighted.

    Per level ``l`` with adapted student ``Ŝ = A_l(S)`` and teacher ``T`` (``C`` channels)::

        d(b, y, x) = mean_c (Ŝ − T)²                     # per position
        d ← d / (mean_{c,y,x} T_b² + 1e-6)               # if normalize (per image b)
        L_l = mean_{b,y,x} d                             # gt_mask=False
        L_l = Σ_{b,y,x} M·d / max(Σ M, 1e-6)             # gt_mask=True
        L   = loss_weight · Σ_l L_l

    ``M`` is the TADF Gaussian mask (:func:`~.masks.gaussian_box_mask`, max over the image's
    boxes, sigma ``sigma_scale`` × box size), so imitation concentrates on object regions and the
    loss is normalised by the mask mass. Normalising by the teacher's mean square makes the value
    scale-free (a relative error), so one weight fits teachers with different feature magnitudes.
    With ``gt_mask=True`` and no box in the batch the loss is exactly 0 (with zero gradients).

    Registered as ``mse`` (defaults below) and ``tadf_feature`` (``gt_mask=True``,
    ``normalize=True``): TADF's feature term (Sun et al. 2020, "Distilling Object Detectors with
    Task Adaptive Regularization"), weighted by ``λ_f`` and the decay ``γ(t)`` outside this loss.
    The paper's exact sigma could not be checked offline; ``sigma_scale=0.5`` puts the box edges
    one sigma from the centre.

    Args:
        student_channels: Student channels ``Cs``.
        teacher_channels: Teacher channels ``Ct``.
        num_levels: Number of FPN levels.
        adapter: ``"auto"`` (identity if ``Cs == Ct``, else 1×1 conv) or ``"conv"``.
        normalize: Divide by the teacher's per-image mean square. Default False.
        gt_mask: Weight positions by the Gaussian box mask. Default False.
        sigma_scale: Gaussian sigma as a fraction of box width/height. Default 0.5.
        loss_weight: Overall coefficient. Default 1.0.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_levels: int,
        *,
        adapter: str = "auto",
        normalize: bool = False,
        gt_mask: bool = False,
        sigma_scale: float = 0.5,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_levels, adapter=adapter)
        self.normalize = check_bool(self.name, "normalize", normalize)
        self.gt_mask = check_bool(self.name, "gt_mask", gt_mask)
        self.sigma_scale = check_number(self.name, "sigma_scale", sigma_scale, low=0.0, low_open=True)
        self.loss_weight = check_number(self.name, "loss_weight", loss_weight, low=0.0)

    @property
    def uses_targets(self) -> bool:
        """True when ``gt_mask`` is set."""
        return self.gt_mask

    def compute(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: Targets | None,
        image_size: int | None,
    ) -> Tensor:
        """Sum over levels of the (masked, normalised) per-position MSE, times ``loss_weight``."""
        boxes = target_boxes(targets, student[0].shape[0], student[0].device) if self.gt_mask else []
        total = student[0].new_zeros(())
        for s, t in zip(student, teacher):
            d = (s - t).pow(2).mean(dim=1)  # (B, H, W)
            if self.normalize:
                d = d / (t.pow(2).mean(dim=(1, 2, 3)) + _EPS)[:, None, None]
            if self.gt_mask:
                h, w = d.shape[-2:]
                stride = self._stride(image_size, w)
                mask = torch.stack(
                    [gaussian_box_mask(b, h, w, stride, sigma_scale=self.sigma_scale) for b in boxes]
                ).to(d.dtype)
                total = total + (d * mask).sum() / mask.sum().clamp_min(_EPS)
            else:
                total = total + d.mean()
        return self.loss_weight * total

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, gt_mask={self.gt_mask}, loss_weight={self.loss_weight:g}"
