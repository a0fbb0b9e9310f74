"""Evaluation (pycocotools) and optimisation helpers shared by every training run."""

from __future__ import annotations

from curriculum_search.engine.evaluate import EvalResult, detections_to_coco, evaluate, evaluate_detections
from curriculum_search.engine.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "EvalResult",
    "build_optimizer",
    "build_scheduler",
    "detections_to_coco",
    "evaluate",
    "evaluate_detections",
    "lr_factor",
]
