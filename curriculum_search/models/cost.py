"""Cost metadata of a model: parameter count, FLOPs of one forward and measured latency.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts one multiply-add as
**2 FLOPs** (a ``Conv2d`` with ``C_in`` inputs, ``C_out`` outputs, a ``k×k`` kernel and an output of
``H×W`` costs ``2 · B · H · W · C_out · C_in/groups · k²``; bias is not counted). Only the ops torch
registers (convolutions, matmuls, attention...) are counted: elementwise ops, NMS and RoI pooling
add nothing. For detectors whose work depends on the image (Faster R-CNN's number of proposals
left after NMS), the count is that of the all-zeros input :func:`measure_cost` uses.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelCost", "count_flops", "count_params", "measure_cost", "measure_latency"]


@dataclass(frozen=True)
class ModelCost:
    """What a model costs to ship and to run.

    Attributes:
        params: number of parameters (trainable or not).
        gflops: GFLOPs (1e9 FLOPs, multiply-add = 2) of one inference call, per image.
        latency_ms: median wall time of one inference call, per image (the batch time divided by
            ``batch_size``; the true latency when ``batch_size`` is 1).
        image_size: square input size ``S`` it was measured at.
        device: device it was measured on (``"cpu"``, ``"cuda:0"``...).
        batch_size: images per call during the measurement.
    """

    params: int
    gflops: float
    latency_ms: float
    image_size: int
    device: str
    batch_size: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Return the fields as a plain, JSON-serialisable dict."""
        return asdict(self)


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (shared parameters counted once).

    Args:
        module: the model.
        trainable_only: count only parameters with ``requires_grad`` (default: all).
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def count_flops(fn: Callable[..., Any], *inputs: Any) -> int:
    """FLOPs of one call ``fn(*inputs)`` under ``torch.inference_mode()``.

    A multiply-add counts as 2 FLOPs, as :class:`~torch.utils.flop_counter.FlopCounterMode` does;
    ops torch has no formula for (elementwise, NMS, RoI align) count 0.
    """
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    return int(counter.get_total_flops())


def _on_cuda(inputs: tuple[Any, ...]) -> bool:
    return any(isinstance(x, Tensor) and x.is_cuda for x in inputs)


def measure_latency(fn: Callable[..., Any], *inputs: Any, warmup: int = 2, iters: int = 5) -> float:
    """Median wall time in milliseconds of ``fn(*inputs)`` under ``torch.inference_mode()``.

    ``warmup`` untimed calls come first; with CUDA inputs the device is synchronised around each
    timed call so the time covers the kernels, not just their launch.

    Args:
        fn: the function to time.
        inputs: its positional arguments.
        warmup: untimed calls before timing (default 2).
        iters: timed calls; the median is returned (default 5).

    Raises:
        ValueError: ``iters`` < 1 or ``warmup`` < 0.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    cuda = _on_cuda(inputs)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(*inputs)
        for _ in range(iters):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(*inputs)
            if cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own train/eval flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def measure_cost(
    model: nn.Module,
    image_size: int,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    warmup: int = 2,
    iters: int = 5,
) -> ModelCost:
    """Parameters, FLOPs and latency of ``model.detect`` on an all-zeros ``(B, 3, S, S)`` batch.

    Falls back to ``model(x)`` when the model has no ``detect`` method. The model must already be on
    ``device``; it runs in eval mode and each submodule's train/eval flag is restored afterwards.

    Args:
        model: the detector (any ``nn.Module``).
        image_size: square input size ``S``.
        device: where the input is created (default ``"cpu"``).
        batch_size: images per call (default 1); FLOPs and latency are reported per image.
        warmup: untimed calls before timing (default 2).
        iters: timed calls (default 5).

    Raises:
        ValueError: ``image_size`` or ``batch_size`` is below 1.
    """
    if image_size < 1 or batch_size < 1:
        raise ValueError(f"need image_size >= 1 and batch_size >= 1, got {image_size}, {batch_size}")
    detect = getattr(model, "detect", None)
    fn: Callable[..., Any] = detect if callable(detect) else model
    x = torch.zeros(batch_size, 3, image_size, image_size, device=device)
    with _eval_mode(model):
        flops = count_flops(fn, x)
        latency = measure_latency(fn, x, warmup=warmup, iters=iters)
    return ModelCost(
        params=count_params(model),
        gflops=flops / batch_size / 1e9,
        latency_ms=latency / batch_size,
        image_size=int(image_size),
        device=str(x.device),
        batch_size=int(batch_size),
    )
