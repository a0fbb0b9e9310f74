"""Optimisation settings shared by every stage of a run (used by :mod:`.optim` and the trainer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from curriculum_search.utils.config import check


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by all stages (a stage may override lr / warm-up).

    ``num_workers``: data-loading worker processes per training process; null (default) = one less
    than the available CPUs (at most 8) for ``data.kind: coco``, 0 for the synthetic data.
    """

    batch_size: int = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_iterations: int = 50
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 10.0
    amp: bool = True
    eval_every: int = 0
    eval_images: int | None = None
    checkpoint_every: int = 200
    num_workers: int | None = None
    threads: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.grad_clip >= 0, "grad_clip", "must be >= 0 (0 disables clipping)")
        check(self.eval_every >= 0, "eval_every", "must be >= 0 (0 = only at the end)")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        check(
            self.num_workers is None or self.num_workers >= 0,
            "num_workers",
            "must be >= 0 (0 = load in the training process, null = automatic)",
        )


__all__ = ["TrainConfig"]
