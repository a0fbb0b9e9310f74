"""Spatial masks built from ground-truth boxes, shared by the box-aware feature losses.

Boxes are xyxy in input pixels. A feature map of ``H × W`` cells with ``stride`` input pixels per
cell has cell ``(i, j)`` covering ``[j·stride, (j+1)·stride) × [i·stride, (i+1)·stride)``, centred
at ``((j + 0.5)·stride, (i + 0.5)·stride)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def target_boxes(
    targets: Sequence[Mapping[str, Any]] | None, batch_size: int, device: torch.device | str
) -> list[Tensor]:
    """Per image ``(N, 4)`` float32 boxes on ``device``; empty for ``targets=None`` or no boxes.

    Raises:
        ValueError: if ``targets`` does not hold one dict per image.
    """
    if targets is None:
        return [torch.zeros((0, 4), device=device) for _ in range(batch_size)]
    if len(targets) != batch_size:
        raise ValueError(f"got {len(targets)} target dicts for a batch of {batch_size} images")
    out = []
    for t in targets:
        boxes = t.get("boxes")
        if boxes is None:
            out.append(torch.zeros((0, 4), device=device))
        else:
            out.append(torch.as_tensor(boxes, dtype=torch.float32, device=device).reshape(-1, 4))
    return out


def gaussian_box_mask(
    boxes: Tensor,
    height: int,
    width: int,
    stride: float,
    sigma_scale: float = 0.5,
    min_sigma: float = 0.5,
) -> Tensor:
    """TADF-style Gaussian mask around boxes: ``(H, W)`` values in ``[0, 1]``.

    ``M(y, x) = max_k exp(-(x - cx_k)² / (2 σx_k²) - (y - cy_k)² / (2 σy_k²))`` evaluated at cell
    centres, with ``σx_k = max(sigma_scale · w_k, min_sigma · stride)`` (same for y with ``h_k``).
    With the default ``sigma_scale=0.5`` the box edges lie one sigma from the centre (value
    ``e^{-1/2} ≈ 0.61`` on an axis); ``min_sigma`` keeps boxes smaller than a cell visible.

    Args:
        boxes: ``(N, 4)`` xyxy in input pixels (``N`` may be 0: all-zero mask).
        height: Map height ``H`` in cells.
        width: Map width ``W`` in cells.
        stride: Input pixels per cell.
        sigma_scale: Sigma as a fraction of the box width/height.
        min_sigma: Lower bound of sigma, in cells.

    Returns:
        float32 ``(H, W)`` mask on ``boxes.device``; peaks (1.0) at box centres.
    """
    boxes = boxes.reshape(-1, 4).float()
    device = boxes.device
    if boxes.numel() == 0:
        return torch.zeros((height, width), device=device)
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    floor = min_sigma * stride
    sx = (sigma_scale * (boxes[:, 2] - boxes[:, 0]).abs()).clamp_min(floor)
    sy = (sigma_scale * (boxes[:, 3] - boxes[:, 1]).abs()).clamp_min(floor)
    gx = torch.exp(-((xs[None, :] - cx[:, None]) ** 2) / (2 * sx[:, None] ** 2))  # (N, W)
    gy = torch.exp(-((ys[None, :] - cy[:, None]) ** 2) / (2 * sy[:, None] ** 2))  # (N, H)
    return (gy[:, :, None] * gx[:, None, :]).amax(dim=0)


def box_cell_masks(boxes: Tensor, height: int, width: int, stride: float) -> Tensor:
    """Boolean ``(N, H, W)``: cell ``(i, j)`` overlaps box ``k`` (every box covers at least one cell).

    A box covers the cells whose extent intersects it, i.e. columns
    ``floor(x1 / stride) .. ceil(x2 / stride) - 1``; degenerate boxes get the cell they lie in.
    Boxes outside the map cover nothing.
    """
    boxes = boxes.reshape(-1, 4).float() / stride
    device = boxes.device
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    x2 = torch.maximum(x2, x1 + 1e-4)
    y2 = torch.maximum(y2, y1 + 1e-4)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    in_x = (cols[None, :] < x2[:, None]) & (cols[None, :] + 1 > x1[:, None])  # (N, W)
    in_y = (rows[None, :] < y2[:, None]) & (rows[None, :] + 1 > y1[:, None])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def foreground_masks(boxes: Tensor, height: int, width: int, stride: float) -> tuple[Tensor, Tensor]:
    """FGD foreground/background masks with scale normalisation.

    ``M_fg(i, j) = max_k 1 / (H_k · W_k)`` over the boxes ``k`` covering cell ``(i, j)``, where
    ``H_k · W_k`` is the number of cells box ``k`` covers (small objects weigh as much as large
    ones); ``M_bg = 1[M_fg = 0] / Σ 1[M_fg = 0]`` (all zero if the boxes cover every cell).

    Args:
        boxes: ``(N, 4)`` xyxy in input pixels (``N`` may be 0: uniform background).
        height: Map height ``H`` in cells.
        width: Map width ``W`` in cells.
        stride: Input pixels per cell.

    Returns:
        ``(fg, bg)``, two float32 ``(H, W)`` masks on ``boxes.device``.
    """
    device = boxes.device
    fg = torch.zeros((height, width), device=device)
    if boxes.numel() > 0:
        cover = box_cell_masks(boxes, height, width, stride).float()  # (N, H, W)
        area = cover.sum(dim=(1, 2)).clamp_min(1.0)
        fg = (cover / area[:, None, None]).amax(dim=0)
    bg = (fg == 0).float()
    total = bg.sum()
    if total > 0:
        bg = bg / total
    return fg, bg


__all__ = ["box_cell_masks", "foreground_masks", "gaussian_box_mask", "target_boxes"]
