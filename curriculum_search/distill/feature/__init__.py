"""Feature-level distillation losses on FPN maps: MSE/TADF, MGD, FGD, CWD, PKD.

Build one with ``build_feature_loss(name, student_channels, teacher_channels, num_levels, **params)``;
``list_feature_losses()`` names them. Teacher maps with other strides or level counts are first
matched to the student's levels with :func:`align_features`.
"""

from __future__ import annotations

from curriculum_search.distill.feature._registry import (
    FeatureLoss,
    build_feature_loss,
    feature_loss_params,
    list_feature_losses,
    register_feature_loss,
)
from curriculum_search.distill.feature.align import align_features, nearest_levels, resize_map
from curriculum_search.distill.feature.cwd import CWDLoss
from curriculum_search.distill.feature.fgd import FGDLoss
from curriculum_search.distill.feature.masks import foreground_masks, gaussian_box_mask
from curriculum_search.distill.feature.mgd import MGDLoss
from curriculum_search.distill.feature.mse import MSEFeatureLoss
from curriculum_search.distill.feature.pkd import PKDLoss

__all__ = [
    "CWDLoss",
    "FGDLoss",
    "FeatureLoss",
    "MGDLoss",
    "MSEFeatureLoss",
    "PKDLoss",
    "align_features",
    "build_feature_loss",
    "feature_loss_params",
    "foreground_masks",
    "gaussian_box_mask",
    "list_feature_losses",
    "nearest_levels",
    "register_feature_loss",
    "resize_map",
]
