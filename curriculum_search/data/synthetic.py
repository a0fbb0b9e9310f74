"""Deterministic "shapes" detection dataset written as a real COCO dataset (PNGs + JSON).

Each image has a textured background (a random two-colour linear gradient, a few random lines and
blobs of clutter, per-pixel Gaussian noise) and ``min_objects..max_objects`` shapes of random class,
colour (independent of the class, so only the shape tells the class apart), size and rotation.
Shapes are drawn at 2x resolution and downsampled (box filter) for antialiasing. With ``occlusion``
later shapes may cover earlier ones; an object stays annotated unless more than 80% of it is hidden
(visibility measured on the rendered masks). Its box is the tight box of the whole (amodal) shape;
its ``area`` is the visible pixel area.

:func:`ensure_synthetic` writes the dataset once under ``cache_root/shapes-<hash of the config>``:
generation happens in a temporary folder renamed into place when complete (with a ``.complete``
marker), so an interrupted generation is redone and later calls return at once. Each image is drawn
from ``numpy.random.default_rng([seed, split, index])``: the same config gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from curriculum_search.utils.config import check, to_dict
from curriculum_search.utils.io import atomic_write_text, stable_hash

#: Bumped whenever the generated files change for a given config (changes the cache folder).
GENERATOR_VERSION = 1
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
MARKER = ".complete"
_SUPERSAMPLE = 2
_MIN_VISIBILITY = 0.2  # annotation kept unless more than 80% of the object is hidden
_SPLITS = {"train": 0, "val": 1, "unlabeled": 2}


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the generated shapes dataset.

    Attributes:
        num_train: Training images (all annotated).
        num_val: Validation images (all annotated).
        num_unlabeled: Extra images written to ``unlabeled/`` without annotations.
        image_size: Side of the square images, in pixels.
        classes: Shape classes, a subset of ``circle, square, triangle, cross, ring, diamond``;
            category ids are ``1..len(classes)`` in this order.
        min_objects: Fewest shapes per image.
        max_objects: Most shapes per image.
        min_size: Smallest shape extent (diameter of its circumscribed circle), as a fraction of
            the image side.
        max_size: Largest shape extent, as a fraction of the image side.
        occlusion: Let shapes overlap (later ones drawn on top); otherwise placements that would
            overlap are re-drawn (an object that finds no free place after 30 tries is skipped).
        noise: Standard deviation of the per-pixel Gaussian noise, as a fraction of 255.
        seed: Seed of the whole dataset.
    """

    num_train: int = 600
    num_val: int = 150
    num_unlabeled: int = 0
    image_size: int = 128
    classes: tuple[str, ...] = SHAPES
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 0.08
    max_size: float = 0.4
    occlusion: bool = True
    noise: float = 0.08
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.num_train >= 1, "num_train", f"must be at least 1, got {self.num_train}")
        check(self.num_val >= 0, "num_val", f"must be >= 0, got {self.num_val}")
        check(self.num_unlabeled >= 0, "num_unlabeled", f"must be >= 0, got {self.num_unlabeled}")
        check(self.image_size >= 16, "image_size", f"must be at least 16, got {self.image_size}")
        check(len(self.classes) >= 1, "classes", "needs at least one class")
        unknown = [c for c in self.classes if c not in SHAPES]
        check(not unknown, "classes", f"unknown shape {unknown[:1]} (known: {', '.join(SHAPES)})")
        check(len(set(self.classes)) == len(self.classes), "classes", "has duplicates")
        check(self.min_objects >= 1, "min_objects", f"must be at least 1, got {self.min_objects}")
        check(self.min_objects <= self.max_objects, "max_objects", "must be >= min_objects")
        check(0.0 < self.min_size <= self.max_size, "min_size", "must be in (0, max_size]")
        check(self.max_size <= 0.9, "max_size", f"must be at most 0.9, got {self.max_size}")
        check(0.0 <= self.noise <= 1.0, "noise", f"must be in [0, 1], got {self.noise}")

    @property
    def cache_key(self) -> str:
        """Hash of the config and the generator version (the cache folder is ``shapes-<cache_key>``)."""
        return stable_hash({"generator_version": GENERATOR_VERSION, **to_dict(self)})


@dataclass(frozen=True)
class SyntheticPaths:
    """Where a generated dataset lives (``unlabeled_dir`` is None without unlabeled images)."""

    root: Path
    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path
    unlabeled_dir: Path | None
    class_names: tuple[str, ...]


def synthetic_paths(cfg: SyntheticConfig, root: Path) -> SyntheticPaths:
    """The layout of a dataset generated for ``cfg`` into ``root``."""
    return SyntheticPaths(
        root=root,
        train_images=root / "train",
        train_ann=root / "train.json",
        val_images=root / "val",
        val_ann=root / "val.json",
        unlabeled_dir=root / "unlabeled" if cfg.num_unlabeled > 0 else None,
        class_names=tuple(cfg.classes),
    )


def ensure_synthetic(cfg: SyntheticConfig, cache_root: str | Path) -> SyntheticPaths:
    """Return the dataset for ``cfg`` under ``cache_root``, generating it first if needed.

    Safe against interruption (a folder without its ``.complete`` marker is regenerated) and
    against concurrent callers (each generates into its own temporary folder; the first rename wins).
    """
    cache_root = Path(cache_root)
    root = cache_root / f"shapes-{cfg.cache_key}"
    if (root / MARKER).is_file():
        return synthetic_paths(cfg, root)
    cache_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(cache_root, root.name)
    tmp = cache_root / f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate_synthetic(cfg, tmp)
        if root.exists() and not (root / MARKER).is_file():
            shutil.rmtree(root)  # left over by an interrupted or foreign writer
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / MARKER).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return synthetic_paths(cfg, root)


def generate_synthetic(cfg: SyntheticConfig, out_dir: str | Path) -> SyntheticPaths:
    """Write the dataset for ``cfg`` into ``out_dir`` (files first, the ``.complete`` marker last)."""
    out = Path(out_dir)
    paths = synthetic_paths(cfg, out)
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(cfg.classes)]
    for split, count, folder, ann in (
        ("train", cfg.num_train, paths.train_images, paths.train_ann),
        ("val", cfg.num_val, paths.val_images, paths.val_ann),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for i in range(count):
            image, objects = render_image(cfg, np.random.default_rng([cfg.seed, _SPLITS[split], i]))
            name = f"{i:06d}.png"
            image.save(folder / name, compress_level=1)
            images.append({"id": i + 1, "file_name": name, "width": cfg.image_size, "height": cfg.image_size})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, **obj})
        info = {"description": f"curriculum_search synthetic shapes ({split})", "version": GENERATOR_VERSION}
        info["config"] = to_dict(cfg)
        doc = {"info": info, "images": images, "annotations": annotations, "categories": categories}
        atomic_write_text(ann, json.dumps(doc, separators=(",", ":")))
    if paths.unlabeled_dir is not None:
        paths.unlabeled_dir.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.num_unlabeled):
            image, _ = render_image(cfg, np.random.default_rng([cfg.seed, _SPLITS["unlabeled"], i]))
            image.save(paths.unlabeled_dir / f"{i:06d}.png", compress_level=1)
    marker = {"cache_key": cfg.cache_key, "config": to_dict(cfg)}
    atomic_write_text(out / MARKER, json.dumps(marker, sort_keys=True))
    return paths


def _remove_stale_temps(cache_root: Path, name: str) -> None:
    """Delete temporary folders of this host whose generating process is gone."""
    prefix = f".{name}.tmp-{socket.gethostname()}-"
    for path in cache_root.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------- rendering
def _unit_polygon(kind: str) -> np.ndarray:
    """Vertices of a shape inside the unit circle (max radius 1), before rotation."""
    if kind == "square":
        pts = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    elif kind == "diamond":
        pts = np.array([[0, 1], [0.55, 0], [0, -1], [-0.55, 0]], dtype=np.float64)
    elif kind == "triangle":
        ang = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    elif kind == "cross":
        a = 0.3
        pts = np.array(
            [
                [a, 1],
                [-a, 1],
                [-a, a],
                [-1, a],
                [-1, -a],
                [-a, -a],
                [-a, -1],
                [a, -1],
                [a, -a],
                [1, -a],
                [1, a],
                [a, a],
            ],
            dtype=np.float64,
        )
    else:
        raise ValueError(f"{kind!r} is not a polygon shape")
    return pts / np.linalg.norm(pts, axis=1).max()


def draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, radius: float, angle: float, fill: Any
) -> None:
    """Draw shape ``kind`` centred at ``(cx, cy)`` inside a circle of ``radius``, rotated by ``angle`` rad."""
    bbox = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "circle":
        draw.ellipse(bbox, fill=fill)
    elif kind == "ring":
        draw.ellipse(bbox, outline=fill, width=max(2, round(0.45 * radius)))
    else:
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = _unit_polygon(kind) @ rot.T * radius + np.array([cx, cy])
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=fill)


def visibility(masks: list[np.ndarray]) -> list[float]:
    """Visible fraction of each mask when mask ``k`` is drawn over masks ``0..k-1``."""
    out = [0.0] * len(masks)
    covered = np.zeros_like(masks[0], dtype=bool) if masks else None
    for k in range(len(masks) - 1, -1, -1):
        total = int(masks[k].sum())
        assert covered is not None
        out[k] = float((masks[k] & ~covered).sum()) / total if total else 0.0
        covered |= masks[k]
    return out


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """``(size, size, 3)`` float gradient between two random colours along a random direction."""
    c1, c2 = rng.uniform(0, 255, size=(2, 3))
    theta = rng.uniform(0, 2 * np.pi)
    coords = np.arange(size, dtype=np.float64) / size
    t = np.cos(theta) * coords[None, :] + np.sin(theta) * coords[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return c1 + t[..., None] * (c2 - c1)


def _colour(rng: np.random.Generator, under: np.ndarray) -> tuple[int, int, int]:
    """A random colour, re-drawn (up to 20 times) until it differs from ``under`` by >= 150 (L1)."""
    best, best_d = None, -1.0
    for _ in range(20):
        c = rng.integers(0, 256, size=3)
        d = float(np.abs(c - under).sum())
        if d > best_d:
            best, best_d = c, d
        if d >= 150:
            break
    assert best is not None
    return int(best[0]), int(best[1]), int(best[2])


def render_image(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[Image.Image, list[dict[str, Any]]]:
    """Render one image; return it and its COCO annotation fields (``category_id``, ``bbox``, ``area``).

    Boxes are ``[x, y, w, h]`` in image pixels, rounded to 2 decimals.
    """
    f = _SUPERSAMPLE
    side = cfg.image_size * f
    bg = _background(side, rng)
    canvas = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(2, 6))):  # clutter lines
        x0, y0, x1, y1 = rng.uniform(0, side, size=4)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)) * f)
    for _ in range(int(rng.integers(1, 4))):  # clutter blobs, smaller than the smallest object
        cx, cy = rng.uniform(0, side, size=2)
        rx, ry = rng.uniform(0.01, 0.6 * cfg.min_size / 2, size=2) * side
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)

    placed: list[tuple[float, float, float]] = []
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        label = int(rng.integers(len(cfg.classes)))
        radius = rng.uniform(cfg.min_size, cfg.max_size) * side / 2
        angle = rng.uniform(0, 2 * np.pi)
        for _try in range(30):
            cx, cy = rng.uniform(radius, side - radius, size=2)
            if cfg.occlusion or all(math.hypot(cx - x, cy - y) > radius + r for x, y, r in placed):
                break
        else:
            continue
        placed.append((cx, cy, radius))
        colour = _colour(rng, bg[int(cy), int(cx)])
        kind = cfg.classes[label]
        draw_shape(draw, kind, cx, cy, radius, angle, colour)
        mask_img = Image.new("L", (side, side), 0)
        draw_shape(ImageDraw.Draw(mask_img), kind, cx, cy, radius, angle, 255)
        objects.append((label + 1, np.asarray(mask_img) > 127))

    image = canvas.resize((cfg.image_size, cfg.image_size), Image.Resampling.BOX)
    if cfg.noise > 0:
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(
            0, cfg.noise * 255, size=(*image.size[::-1], 3)
        )
        image = Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))

    annotations = []
    vis = visibility([m for _, m in objects]) if objects else []
    for (category, mask), v in zip(objects, vis):
        ys, xs = np.nonzero(mask)
        if v < _MIN_VISIBILITY or len(xs) == 0:
            continue
        x1, y1 = xs.min() / f, ys.min() / f
        w, h = (xs.max() + 1) / f - x1, (ys.max() + 1) / f - y1
        area = v * len(xs) / (f * f)
        bbox = [round(float(x1), 2), round(float(y1), 2), round(float(w), 2), round(float(h), 2)]
        annotations.append({"category_id": category, "bbox": bbox, "area": round(float(area), 2)})
    return image, annotations


__all__ = [
    "GENERATOR_VERSION",
    "MARKER",
    "SHAPES",
    "SyntheticConfig",
    "SyntheticPaths",
    "draw_shape",
    "ensure_synthetic",
    "generate_synthetic",
    "render_image",
    "synthetic_paths",
]
