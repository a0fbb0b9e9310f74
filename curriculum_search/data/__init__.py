"""Data: COCO datasets, letterbox transforms with cacheable variants, synthetic shapes, loaders."""

from __future__ import annotations

from curriculum_search.data.coco import CocoDetection, FixedVariant, base_dataset, labeled_fraction, subset
from curriculum_search.data.loader import (
    Batch,
    EpochBatchSampler,
    collate_detection,
    infinite_batches,
    make_loader,
    seed_worker,
    set_loader_epoch,
    step_position,
)
from curriculum_search.data.synthetic import (
    SHAPES,
    SyntheticConfig,
    SyntheticPaths,
    ensure_synthetic,
    generate_synthetic,
)
from curriculum_search.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformConfig,
    boxes_to_original,
    denormalize,
    hflip_boxes,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SHAPES",
    "Batch",
    "CocoDetection",
    "EpochBatchSampler",
    "FixedVariant",
    "SyntheticConfig",
    "SyntheticPaths",
    "TransformConfig",
    "base_dataset",
    "boxes_to_original",
    "collate_detection",
    "denormalize",
    "ensure_synthetic",
    "generate_synthetic",
    "hflip_boxes",
    "infinite_batches",
    "labeled_fraction",
    "make_loader",
    "seed_worker",
    "set_loader_epoch",
    "step_position",
    "subset",
]
