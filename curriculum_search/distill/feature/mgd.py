"""Masked Generative Distillation (Yang et al., ECCV 2022, arXiv:2205.01529)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from curriculum_search.distill.feature._registry import (
    FeatureLoss,
    Targets,
    check_bool,
    check_choice,
    check_number,
    register_feature_loss,
)
from curriculum_search.distill.feature.reference import DETECTOR_TYPES, element_scale
from curriculum_search.utils.config import FieldError

#: The paper's ``(α, λ)`` per detector type.
PAPER_DEFAULTS = {"one_stage": (2e-5, 0.65), "two_stage": (5e-7, 0.45)}


@register_feature_loss("mgd")
class MGDLoss(FeatureLoss):
    """MGD: regenerate the teacher map from a randomly masked (aligned) student map.

    Per level ``l`` with aligned student ``Ŝ = A_l(S)`` (1×1 conv only if ``Cs != Ct``), a random
    spatial mask ``M ∈ {0, 1}^{B×1×H×W}`` zeroing each position with probability ``λ`` (same mask
    for every channel) and a generator ``G_l = conv3×3 → ReLU → conv3×3`` on ``Ct`` channels::

        L = α · Σ_l Σ_{b,c,y,x} (G_l(Ŝ ⊙ M) − T)² / B

    Defaults are the paper's setting for the ``detector`` type (official code ``yzd-v/MGD``
    ``det/mmdet/distillation/losses/mgd.py`` and mmrazor
    ``configs/distill/mmdet/mgd/mgd_fpn_retina_x101_retina_r50_2x_coco.py``): one-stage
    (RetinaNet) ``α = 2e-5``, ``λ = 0.65``; two-stage (Faster/Mask R-CNN) ``α = 5e-7``, ``λ = 0.45``.

    **Size normalisation** (``normalize_size``, default on): the sum is multiplied by
    ``N_ref / N``, ``N = Σ_l Ct·H_l·W_l`` the elements per image, ``N_ref`` the same count at the
    papers' reference (COCO 1333×800, 256 channels, P3–P7 one-stage / P2–P6 two-stage; see
    :mod:`~curriculum_search.distill.feature.reference`). At the reference this is the paper's
    loss exactly; at any other size or width the same ``α`` gives the same loss per element, so
    the same ratio to the detection loss (un-normalised, 128 px with 64 channels is ~260× weaker).

    Masks come from a private ``torch.Generator`` seeded with ``seed`` (reproducible per module
    instance), from one set with :meth:`set_generator`, or from torch's global RNG if neither.
    The generators are learnable: optimise them with the student, discard them afterwards.

    Args:
        student_channels: Student channels ``Cs``.
        teacher_channels: Teacher channels ``Ct``.
        num_levels: Number of FPN levels.
        adapter: ``"auto"`` (identity if ``Cs == Ct``, else 1×1 conv) or ``"conv"``.
        alpha_mgd: Loss coefficient ``α``. Default (None): 2e-5 one-stage, 5e-7 two-stage.
        lambda_mgd: Masked fraction ``λ`` in ``[0, 1)``. Default (None): 0.65 / 0.45.
        seed: Seed of the mask generator; ``None`` uses the global RNG. Default None.
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
        alpha_mgd: float | None = None,
        lambda_mgd: float | None = None,
        seed: int | None = None,
        detector: str = "one_stage",
        normalize_size: bool = True,
    ) -> None:
        super().__init__(student_channels, teacher_channels, num_levels, adapter=adapter)
        self.detector = check_choice(self.name, "detector", detector, DETECTOR_TYPES)
        alpha_default, lambda_default = PAPER_DEFAULTS[self.detector]
        alpha = alpha_default if alpha_mgd is None else alpha_mgd
        lam = lambda_default if lambda_mgd is None else lambda_mgd
        self.alpha_mgd = check_number(self.name, "alpha_mgd", alpha, low=0.0)
        self.lambda_mgd = check_number(self.name, "lambda_mgd", lam, low=0.0, high=1.0, high_open=True)
        self.normalize_size = check_bool(self.name, "normalize_size", normalize_size)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise FieldError("seed", f"feature loss {self.name!r}: expected an integer or null, got {seed!r}")
        ct = teacher_channels
        self.generation = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(ct, ct, kernel_size=3, padding=1),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(ct, ct, kernel_size=3, padding=1),
                )
                for _ in range(num_levels)
            ]
        )
        self._rng: torch.Generator | None = None
        if seed is not None:
            self._rng = torch.Generator().manual_seed(int(seed))

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Draw masks from ``generator`` (``None``: torch's global RNG)."""
        self._rng = generator

    def random_mask(self, batch: int, height: int, width: int, device: torch.device) -> Tensor:
        """``(B, 1, H, W)`` float mask: 0 with probability ``lambda_mgd``, else 1."""
        rng_device = self._rng.device if self._rng is not None else device
        rand = torch.rand((batch, 1, height, width), generator=self._rng, device=rng_device)
        return (rand <= 1.0 - self.lambda_mgd).to(device=device, dtype=torch.float32)

    def compute(
        self,
        student: list[Tensor],
        teacher: list[Tensor],
        targets: Targets | None,
        image_size: int | None,
    ) -> Tensor:
        """``α · (N_ref / N) · Σ_l ‖G_l(Ŝ ⊙ M) − T‖² / B`` (``N_ref / N = 1`` without ``normalize_size``)."""
        total = student[0].new_zeros(())
        for gen, s, t in zip(self.generation, student, teacher):
            b, _, h, w = s.shape
            mask = self.random_mask(b, h, w, s.device).to(s.dtype)
            total = total + (gen(s * mask) - t).pow(2).sum() / b
        scale = element_scale(teacher, self.detector) if self.normalize_size else 1.0
        return (self.alpha_mgd * scale) * total

    def extra_repr(self) -> str:
        return (
            f"alpha_mgd={self.alpha_mgd:g}, lambda_mgd={self.lambda_mgd:g}, detector={self.detector}, "
            f"normalize_size={self.normalize_size}"
        )
