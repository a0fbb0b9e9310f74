"""Optimizer and LR schedule builders (warm-up then cosine / step / constant)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from curriculum_search.engine.config import TrainConfig


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, object]]:
    """Two groups: no weight decay on biases and norm parameters (1-D tensors)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    modules: Iterable[nn.Module], cfg: TrainConfig, lr: float | None = None
) -> torch.optim.Optimizer:
    groups = param_groups(modules, cfg.weight_decay)
    lr = lr or cfg.lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base LR at ``step`` (0-based) of a ``total``-step stage."""
    if warmup > 0 and step < warmup:
        return min_ratio + (1.0 - min_ratio) * (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    t = min(1.0, max(0.0, (step - warmup) / span))
    if schedule == "step":  # x0.1 at 2/3 and 8/9 of the stage (torchvision reference-style)
        return 1.0 if t < 2 / 3 else (0.1 if t < 8 / 9 else 0.01)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int, warmup: int | None = None
) -> LambdaLR:
    w = cfg.warmup_iterations if warmup is None else warmup
    w = min(w, max(0, total // 4))
    return LambdaLR(optimizer, lambda s: lr_factor(s, total, w, cfg.schedule, cfg.min_lr_ratio))
