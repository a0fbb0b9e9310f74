"""timm ``features_only`` backbones (CNN or transformer) topped by a torchvision FPN."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import timm
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)


class _SimplePyramid(nn.Module):
    """ViTDet-style simple pyramid: one stride-``s`` map -> maps at ``s/2``, ``s``, ``2s``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.down = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.up(x), x, self.down(x)]


class TimmFPNBackbone(nn.Module):
    """Backbone producing an ordered dict of FPN maps, each with ``out_channels`` channels.

    Works with any timm model that supports ``features_only=True``: CNNs (NCHW), hierarchical
    transformers such as Swin (NHWC, permuted here) and plain ViTs (a single stride, expanded into a
    3-level pyramid). ``min_stride`` selects the first backbone level fed to the FPN (8 for dense
    detectors, 4 for Faster R-CNN); ``extra`` adds P6/P7 (``p6p7``) or a max-pool level (``pool``).
    """

    def __init__(
        self,
        name: str,
        out_channels: int,
        *,
        min_stride: int = 8,
        extra: str = "p6p7",
        pretrained: bool = False,
        image_size: int = 128,
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.body = _create_body(name, pretrained, image_size, dict(backbone_kwargs or {}))
        info: Any = self.body.feature_info
        reductions = list(info.reduction())
        channels = list(info.channels())
        fmt = getattr(self.body, "output_fmt", None)
        self.channels_last = str(getattr(fmt, "value", fmt)).upper() == "NHWC"
        self.pyramid: _SimplePyramid | None = None
        if len(set(reductions)) == 1:  # plain ViT: same stride everywhere -> simple pyramid
            s = reductions[-1]
            self.keep = [len(reductions) - 1]
            self.pyramid = _SimplePyramid(channels[-1])
            in_strides = [s // 2, s, s * 2]
            in_channels = [channels[-1]] * 3
        else:
            self.keep = [i for i, r in enumerate(reductions) if r >= min_stride]
            if not self.keep:
                raise ValueError(f"backbone {name!r} has no feature level with stride >= {min_stride}")
            in_strides = [reductions[i] for i in self.keep]
            in_channels = [channels[i] for i in self.keep]
        extra_block: ExtraFPNBlock
        if extra == "p6p7":
            extra_block = LastLevelP6P7(out_channels, out_channels)
            n_extra = 2
        elif extra == "pool":
            extra_block = LastLevelMaxPool()
            n_extra = 1
        else:
            raise ValueError(f"unknown extra FPN block {extra!r}")
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra_block)
        self.out_channels = out_channels
        self.strides = in_strides + [in_strides[-1] * 2 ** (k + 1) for k in range(n_extra)]
        self.backbone_channels = in_channels

    def backbone_features(self, images: Tensor) -> list[Tensor]:
        feats = self.body(images)
        out = [feats[i] for i in self.keep]
        if self.channels_last:
            out = [f.permute(0, 3, 1, 2).contiguous() for f in out]
        if self.pyramid is not None:
            out = self.pyramid(out[0])
        return out

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.backbone_features(images)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _create_body(name: str, pretrained: bool, image_size: int, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(features_only=True)``, telling models that size their position
    embeddings or windows by the input (Swin, ViT, MaxViT, ...) the detector's image size.

    Whether a model takes ``img_size`` is not in timm's metadata, so it is tried first and dropped
    when the model's constructor rejects it (CNNs, PVT-v2, TinyViT, ...)."""
    if "img_size" not in kwargs:
        try:
            return timm.create_model(
                name, pretrained=pretrained, features_only=True, img_size=image_size, **kwargs
            )
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, pretrained=pretrained, features_only=True, **kwargs)


def timm_fpn_backbone(spec: Any, *, pretrained: bool, min_stride: int, extra: str) -> TimmFPNBackbone:
    """The :class:`TimmFPNBackbone` a :class:`~curriculum_search.models.spec.DetectorSpec` asks for."""
    return TimmFPNBackbone(
        spec.backbone,
        spec.fpn_channels,
        min_stride=min_stride,
        extra=extra,
        pretrained=pretrained,
        image_size=spec.image_size,
        backbone_kwargs=spec.backbone_kwargs,
    )


def anchor_sizes(strides: list[int], scale: float, octaves: int = 1) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes per level: ``scale * stride * 2**(k/octaves)`` for k < octaves."""
    return tuple(
        tuple(max(2, round(scale * s * 2 ** (k / octaves))) for k in range(octaves)) for s in strides
    )


def level_sizes(image_size: int, strides: list[int]) -> list[int]:
    return [math.ceil(image_size / s) for s in strides]


def group_norm_layer(channels: int) -> Callable[[int], nn.Module]:
    """GroupNorm factory: up to 32 groups (torchvision's choice for 256 channels), at least 4 channels
    per group, so a 1x1 map (P7 of a small image) still normalises over several values."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if (channels % g == 0 and channels // g >= 4) or g == 1)
    return partial(nn.GroupNorm, groups)


def freeze_batchnorm_stats(module: nn.Module) -> None:
    """Put BatchNorm layers in eval mode (tiny detection batches make their statistics noisy)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


__all__ = [
    "TimmFPNBackbone",
    "anchor_sizes",
    "freeze_batchnorm_stats",
    "group_norm_layer",
    "level_sizes",
    "timm_fpn_backbone",
]
