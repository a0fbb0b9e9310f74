"""Deterministic letterbox transform with a finite, cacheable set of augmentation variants.

Every image entering a model is letterboxed to a square ``S x S`` input: the longest side is resized
to ``S`` keeping the aspect ratio (PIL bilinear), the content sits in the top-left corner and the
bottom/right padding has the mean colour, so after ImageNet normalisation the padding is exactly 0.
Boxes are scaled by the same factor ``scale = S / max(h, w)`` (input px per original px); a box in
input px maps back to the original image with ``box / scale`` (:func:`boxes_to_original`).

Augmentation is drawn from a *finite* set of variants so that teacher outputs can be cached per
``(image, variant)``: with ``hflip`` the variants are ``0`` (unchanged) and ``1`` (mirrored).
Colour jitter is random per call, so a config with ``color_jitter > 0`` is not :attr:`cacheable`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from curriculum_search.utils.config import check, to_dict
from curriculum_search.utils.io import stable_hash

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Bumped whenever the pixels produced for a given config change, so cached teacher outputs expire.
TRANSFORM_VERSION = 2  # 2: large JPEGs decoded at a reduced DCT scale


@dataclass(frozen=True)
class TransformConfig:
    """Letterbox + augmentation settings.

    Attributes:
        image_size: Side ``S`` of the square model input, in pixels (default 128).
        hflip: Offer a horizontally mirrored variant (variant 1) besides the original (variant 0).
        color_jitter: Strength ``j`` of random brightness/contrast/saturation jitter; each factor is
            drawn uniformly from ``[1 - j, 1 + j]`` per call. ``0`` (default) disables it.
        mean: Per-channel normalisation mean (ImageNet by default).
        std: Per-channel normalisation standard deviation (ImageNet by default).
    """

    image_size: int = 128
    hflip: bool = False
    color_jitter: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check(self.image_size >= 8, "image_size", f"must be at least 8, got {self.image_size}")
        check(0.0 <= self.color_jitter < 1.0, "color_jitter", f"must be in [0, 1), got {self.color_jitter}")
        check(len(self.mean) == 3, "mean", "needs 3 values (R, G, B)")
        check(len(self.std) == 3 and all(s > 0 for s in self.std), "std", "needs 3 positive values")

    @property
    def num_variants(self) -> int:
        """Number of distinct deterministic variants: 2 with ``hflip`` (0 = none, 1 = mirrored), else 1."""
        return 2 if self.hflip else 1

    @property
    def cacheable(self) -> bool:
        """True when ``apply`` is a pure function of ``(image, variant)`` (no random colour jitter)."""
        return self.color_jitter == 0.0

    @property
    def fingerprint(self) -> str:
        """Stable hash of the config (and the pipeline version); part of every cache key."""
        return stable_hash({"transform_version": TRANSFORM_VERSION, **to_dict(self)})

    def apply(
        self,
        image: Image.Image,
        boxes: np.ndarray | torch.Tensor,
        variant: int = 0,
        rng: np.random.Generator | None = None,
        orig_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Letterbox ``image`` and its ``boxes`` into the model input frame.

        Args:
            image: Any PIL image (converted to RGB).
            boxes: ``(N, 4)`` xyxy boxes in original pixels.
            variant: Which augmentation variant, ``0 <= variant < num_variants``.
            rng: Source of the colour jitter draws (only used when ``color_jitter > 0``; a fresh
                unseeded generator when ``None``).
            orig_size: ``(width, height)`` of the original image when ``image`` was decoded at a
                reduced scale (a JPEG draft); ``boxes`` and the returned ``scale`` refer to it.

        Returns:
            ``(tensor (3, S, S) float32 normalised, boxes (N, 4) float32 xyxy input px, scale)``.
        """
        if not 0 <= variant < self.num_variants:
            raise ValueError(f"variant {variant} out of range for {self.num_variants} variant(s)")
        image = image.convert("RGB")
        w, h = orig_size if orig_size is not None else image.size
        box_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4).clone()
        if variant == 1:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            box_t = hflip_boxes(box_t, float(w))
        size = self.image_size
        scale = size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        if (new_w, new_h) != image.size:
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        if self.color_jitter > 0:
            pixels = _jitter(pixels, self.color_jitter, rng if rng is not None else np.random.default_rng())
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        out = torch.zeros(3, size, size, dtype=torch.float32)
        out[:, :new_h, :new_w] = (pixels - mean) / std
        return out, box_t * scale, scale


def hflip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror xyxy ``boxes`` inside an image of ``width`` pixels: ``x1' = W - x2``, ``x2' = W - x1``."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def boxes_to_original(boxes: torch.Tensor, scale: float, orig_size: tuple[int, int]) -> torch.Tensor:
    """Map xyxy boxes from input px (variant 0) back to original px: ``box / scale``, clipped to ``(h, w)``."""
    h, w = orig_size
    out = boxes / scale
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def denormalize(images: torch.Tensor, cfg: TransformConfig) -> torch.Tensor:
    """Undo the normalisation of ``(..., 3, S, S)`` images, returning values clipped to ``[0, 1]``."""
    mean = torch.tensor(cfg.mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(cfg.std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def _jitter(pixels: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Brightness, contrast then saturation, each factor uniform in ``[1 - strength, 1 + strength]``."""
    b, c, s = rng.uniform(1.0 - strength, 1.0 + strength, size=3)
    pixels = TF.adjust_brightness(pixels, float(b))
    pixels = TF.adjust_contrast(pixels, float(c))
    return TF.adjust_saturation(pixels, float(s))


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRANSFORM_VERSION",
    "TransformConfig",
    "boxes_to_original",
    "denormalize",
    "hflip_boxes",
]
