from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from curriculum_search.models.cost import (
    ModelCost,
    count_flops,
    count_params,
    measure_cost,
    measure_latency,
)

# Conv2d(3 -> 8, 3x3, padding 1) on (1, 3, 16, 16): 16*16 outputs x 8 channels, each 3*3*3 = 27
# multiply-adds, 2 FLOPs per multiply-add (bias not counted).
CONV_FLOPS = 2 * 16 * 16 * 8 * 27


def test_count_params() -> None:
    assert count_params(nn.Linear(10, 5)) == 55  # 10*5 weights + 5 biases
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == 55 + 12
    assert count_params(model, trainable_only=True) == 12


def test_count_flops_conv_by_hand() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.zeros(1, 3, 16, 16)) == CONV_FLOPS
    assert count_flops(conv, torch.zeros(2, 3, 16, 16)) == 2 * CONV_FLOPS
    assert count_flops(nn.Linear(10, 5), torch.zeros(4, 10)) == 2 * 4 * 10 * 5


def test_measure_latency_positive() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    calls: list[bool] = []

    def fn(x: Tensor) -> Tensor:
        calls.append(torch.is_inference_mode_enabled())
        return conv(x)

    ms = measure_latency(fn, torch.zeros(1, 3, 16, 16), warmup=1, iters=3)
    assert ms > 0.0
    assert calls == [True] * 4
    with pytest.raises(ValueError, match="iters"):
        measure_latency(fn, torch.zeros(1, 3, 16, 16), iters=0)


class WithDetect(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 1)  # only used by forward, not by detect
        self.detect_training: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x))

    def detect(self, x: Tensor) -> list[dict[str, Tensor]]:
        self.detect_training.append(self.training)
        self.conv(x)
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}]


def test_measure_cost_uses_detect() -> None:
    model = WithDetect()
    model.train()
    cost = measure_cost(model, image_size=16, batch_size=2, warmup=1, iters=2)
    assert isinstance(cost, ModelCost)
    assert cost.params == (8 * 27 + 8) + (8 * 8 + 8)
    assert cost.gflops == pytest.approx(CONV_FLOPS / 1e9)  # per image, head not run by detect
    assert cost.latency_ms > 0.0
    assert (cost.image_size, cost.device, cost.batch_size) == (16, "cpu", 2)
    assert set(model.detect_training) == {False}
    assert model.training is True  # mode restored
    assert cost.as_dict()["params"] == cost.params


def test_measure_cost_falls_back_to_forward() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    cost = measure_cost(conv, image_size=16, warmup=0, iters=1)
    assert cost.gflops == pytest.approx(CONV_FLOPS / 1e9)
    assert cost.params == 8 * 27 + 8
    with pytest.raises(ValueError, match="image_size"):
        measure_cost(conv, image_size=0)
