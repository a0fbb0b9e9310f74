"""A small COCO-format dataset that looks like a user's folder, not like the shapes generator.

One learned class (``nut``, category id 7) next to a category no image uses (``bolt``, id 11), so
the ids neither start at 1 nor are contiguous; image ids start at 1000 in steps of 7. Images are
non-square and of several sizes (64-96 px), saved as RGB PNG, grayscale PNG, RGBA PNG and JPEG.
The training split has images without annotations, an ``iscrowd`` box, a 3 px wide box, a
degenerate box (0.5 px, dropped with a warning) and a box reaching outside its image (clipped).
The validation split holds only boxes inside their images (so an independent evaluator scoring
against the original JSON sees the same ground truth as the product), plus an image without
annotations, a crowd box and a 3 px wide box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

NUT, BOLT = 7, 11
SIZES = [(96, 64), (64, 96), (80, 64), (96, 72), (72, 96), (64, 80), (96, 80), (88, 64)]


@dataclass(frozen=True)
class UserCoco:
    train_images: Path
    train_ann: Path
    val_images: Path
    val_ann: Path


def _objects(rng: np.random.Generator, w: int, h: int, n: int) -> list[list[float]]:
    boxes = []
    for _ in range(n):
        bw, bh = int(rng.integers(10, 26)), int(rng.integers(10, 26))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        boxes.append([float(x), float(y), float(bw), float(bh)])
    return boxes


def _split(root: Path, name: str, n: int, seed: int, train: bool) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    ann_id = 50_000 + seed * 1000

    def add(image_id: int, bbox: list[float], crowd: int = 0) -> None:
        nonlocal ann_id
        ann_id += 3
        area = max(bbox[2], 0.0) * max(bbox[3], 0.0)
        anns.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": NUT,
                "bbox": bbox,
                "area": area,
                "iscrowd": crowd,
            }
        )

    empty = {6, 11} if train else {1}
    for k in range(n):
        w, h = SIZES[(k + seed) % len(SIZES)]
        image_id = 1000 + 7 * k
        noise = rng.integers(150, 230, size=(h, w, 3), dtype=np.uint8)
        im = Image.fromarray(noise, "RGB")
        draw = ImageDraw.Draw(im)
        boxes = [] if k in empty else _objects(rng, w, h, int(rng.integers(1, 4)))
        for x, y, bw, bh in boxes:
            draw.ellipse([x, y, x + bw - 1, y + bh - 1], fill=(40, 30, 90), outline=(10, 10, 10))
            add(image_id, [x, y, bw, bh])
        if k == 2:  # a crowd region around the image's objects
            add(image_id, [0.0, 0.0, float(w // 2), float(h // 2)], crowd=1)
        if k == 4:  # a thin part: 3 px wide, 20 px tall
            draw.rectangle([w - 8, 4, w - 6, 23], fill=(40, 30, 90))
            add(image_id, [float(w - 8), 4.0, 3.0, 20.0])
        if train and k == 9:  # degenerate: half a pixel wide (dropped with a warning)
            add(image_id, [10.0, 10.0, 0.5, 12.0])
        if train and k == 10:  # reaches past the right border (clipped)
            draw.ellipse([w - 12, 20, w + 6, 38], fill=(40, 30, 90))
            add(image_id, [float(w - 12), 20.0, 18.0, 18.0])
        if k == 3:
            out, fname = im.convert("L"), f"img_{k:03d}_gray.png"
        elif k == 5:
            out = im.convert("RGBA")
            out.putalpha(200)
            fname = f"img_{k:03d}_rgba.png"
        elif k == 8:
            out, fname = im, f"img_{k:03d}.jpg"
        else:
            out, fname = im, f"img_{k:03d}.png"
        out.save(folder / fname)
        images.append({"id": image_id, "file_name": fname, "width": w, "height": h})
    ann_file = root / "annotations" / f"instances_{name}.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": NUT, "name": "nut", "supercategory": "part"},
        {"id": BOLT, "name": "bolt", "supercategory": "part"},
    ]
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return folder, ann_file


def make_user_coco(root: Path, num_train: int = 16, num_val: int = 6) -> UserCoco:
    """Write the dataset under ``root`` (``train/``, ``val/``, ``annotations/``); returns its paths."""
    train_images, train_ann = _split(root, "train", num_train, seed=1, train=True)
    val_images, val_ann = _split(root, "val", num_val, seed=2, train=False)
    return UserCoco(train_images, train_ann, val_images, val_ann)
