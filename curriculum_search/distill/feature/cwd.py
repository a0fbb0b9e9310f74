"""Channel-wise distillation (Shu et al., ICCV 2021, arXiv:2011.13256)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from curriculum_search.distill.feature._registry import (
    FeatureLoss,
    Targets,
    check_number,
    register_feature_loss,
)


@register_feature_loss("cwd")
class CWDLoss(FeatureLoss):
    """CWD: KL divergence between per-channel spatial softmax distributions.

    Per level with aligned student ``S`` (1×1 conv only if ``Cs != Ct``) and teacher ``T``, each
    channel ``c`` of image ``b`` becomes a distribution over the ``H·W`` positions::

        p = softmax_{y,x}(T_{b,c} / τ),  q = softmax_{y,x}(S_{b,c} / τ)
        L = w · Σ_l τ² · Σ_{b,c} KL(p ‖ q) / (B · C)

    Defaults are mmrazor's detection setting (``configs/distill/mmdet/cwd/
    cwd_fpn_retina_r101_retina_r50_1x_coco.py``, inherited from the Faster R-CNN one):
    ``τ = 1``, ``w = 10`` on every FPN level. The authors' own detection configs
    (``pppppM/mmdetection-distiller``, RetinaNet) use ``τ = 1``, ``w = 5``; ``τ = 4`` is their
    semantic-segmentation setting.

    Args:
        student_channels: Student channels ``Cs``.
        teacher_channels: Teacher channels ``Ct``.
        num_levels: Number of FPN levels.
        adapter: ``"auto"`` (identity if ``Cs == Ct``, else 1×1 conv) or ``"conv"``.
        tau: Softmax temperature ``τ``. Default 1.0.
        loss_weight: Coefficient ``w``. Default 10.0.
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        num_levels: int,
        *,
        adapter: str = "auto",
        tau: float = 1.0,
        loss_weight: float = 10.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_levels, adapter=adapter)
        self.tau = check_number(self.name, "tau", tau, low=0.0, low_open=True)
        self.loss_weight = check_number(self.name, "loss_weight", loss_weight, low=0.0)

    def compute(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: Targets | None,
        image_size: int | None,
    ) -> Tensor:
        """``w · τ² · Σ_l Σ_{b,c} KL(p ‖ q) / (B·C)``."""
        total = student[0].new_zeros(())
        for s, t in zip(student, teacher):
            b, c = s.shape[:2]
            log_q = F.log_softmax(s.reshape(b * c, -1) / self.tau, dim=1)
            log_p = F.log_softmax(t.reshape(b * c, -1) / self.tau, dim=1)
            kl = F.kl_div(log_q, log_p, reduction="sum", log_target=True)
            total = total + kl * (self.tau**2) / (b * c)
        return self.loss_weight * total

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}, loss_weight={self.loss_weight:g}"
