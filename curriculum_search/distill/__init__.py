"""Distillation: feature losses, head KD with TADF gates, decay, pseudo labels, teacher cache."""

from __future__ import annotations

from curriculum_search.distill.decay import decay_factor, list_decays
from curriculum_search.distill.feature import build_feature_loss, list_feature_losses
from curriculum_search.distill.pseudo import fuse, list_fusers

__all__ = ["build_feature_loss", "decay_factor", "fuse", "list_decays", "list_feature_losses", "list_fusers"]
