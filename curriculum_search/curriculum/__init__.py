"""Curricula: typed recipes and the progressive trainer."""

from __future__ import annotations

from curriculum_search.curriculum.recipe import (
    DataConfig,
    Decay,
    FeatureKD,
    PseudoLabelKD,
    Recipe,
    ResponseKD,
    Stage,
    TeacherRef,
    TrainConfig,
    load_recipe,
    recipe_to_dict,
    save_recipe,
)

__all__ = [
    "DataConfig",
    "Decay",
    "FeatureKD",
    "PseudoLabelKD",
    "Recipe",
    "ResponseKD",
    "Stage",
    "TeacherRef",
    "TrainConfig",
    "load_recipe",
    "recipe_to_dict",
    "save_recipe",
]
