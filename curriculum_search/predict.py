"""``predict``: run a trained student on image files; COCO-results JSON and optional drawings.

:func:`load_predictor` reads a model checkpoint (``full/student.pt``); besides the detector spec,
a student written by the trainer carries in ``meta`` the training set's category ids, class names
and input transform (see :func:`curriculum_search.curriculum.trainer.inference_meta`). Older
checkpoints without them fall back to category ids ``1..C`` and ImageNet normalisation (a warning
says so). :func:`predict_images` letterboxes each image exactly like training, runs
``detect`` and maps boxes back to the original image pixels
(:func:`~curriculum_search.engine.evaluate.detections_to_coco`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from curriculum_search.data.coco import IMAGE_EXTENSIONS, to_rgb
from curriculum_search.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformConfig
from curriculum_search.engine.evaluate import detections_to_coco
from curriculum_search.errors import DataError, UserError
from curriculum_search.models.detector import Detector
from curriculum_search.utils.io import atomic_write_text

log = logging.getLogger(__name__)

#: Distinct box colours of the drawings, cycled by class.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


@dataclass
class Predictor:
    """A student ready to run: the model, its input transform and its label -> category mapping."""

    model: Detector
    transform: TransformConfig
    class_names: tuple[str, ...]
    label_to_cat_id: dict[int, int]
    device: torch.device


def load_predictor(weights: str | Path, device: str = "auto") -> Predictor:
    """Load a model checkpoint written by this package for inference."""
    from curriculum_search.models import load_detector
    from curriculum_search.utils.runtime import pick_device

    dev = pick_device(device)
    model, ckpt = load_detector(weights)
    meta = ckpt.get("meta") or {}
    spec = model.spec
    names = tuple(meta.get("class_names") or spec.class_names)
    cat_ids = meta.get("category_ids")
    if not cat_ids:
        log.warning("%s has no category ids (an older checkpoint): writing 1..%d", weights, spec.num_classes)
        cat_ids = list(range(1, spec.num_classes + 1))
    if len(cat_ids) != spec.num_classes:
        raise UserError(f"{weights}: {len(cat_ids)} category ids for {spec.num_classes} classes")
    transform = TransformConfig(
        image_size=int(meta.get("image_size", spec.image_size)),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(meta.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
    )
    model.eval().to(dev)
    return Predictor(model, transform, names, {k + 1: int(c) for k, c in enumerate(cat_ids)}, dev)


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named or inside the named folders (not recursive), in a stable order."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(p, None, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(p, None, "no such image file or folder")
    return files


def image_ids_from_json(ann_file: Path) -> dict[str, int]:
    """``{file name: image id}`` of a COCO JSON (matched by base name)."""
    try:
        data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
        return {Path(img["file_name"]).name: int(img["id"]) for img in data["images"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(ann_file, "images", f"cannot read image ids ({type(exc).__name__}: {exc})") from None


def _load(path: Path, image_id: int, side: int) -> tuple[Image.Image, tuple[int, int]]:
    try:
        with Image.open(path) as im:
            size = im.size
            return to_rgb(im, side), size
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            path, f"image id {image_id}", f"cannot read image ({type(exc).__name__}: {exc})"
        ) from None


def predict_images(
    predictor: Predictor,
    files: Sequence[Path],
    image_ids: Sequence[int] | None = None,
    batch_size: int = 8,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Detect objects in ``files``.

    Returns:
        ``(results, images)``: COCO result dicts ``{image_id, category_id, bbox [x, y, w, h] in
        original px, score}`` and COCO image entries ``{id, file_name, width, height}``.
    """
    ids = list(image_ids) if image_ids is not None else list(range(1, len(files) + 1))
    results: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    tf = predictor.transform
    empty = np.zeros((0, 4), dtype=np.float32)
    for start in range(0, len(files), batch_size):
        chunk = list(zip(files[start : start + batch_size], ids[start : start + batch_size], strict=True))
        tensors, targets = [], []
        for path, image_id in chunk:
            image, (w, h) = _load(path, image_id, tf.image_size)
            tensor, _, scale = tf.apply(image, empty, orig_size=(w, h))
            tensors.append(tensor)
            targets.append({"image_id": image_id, "scale": scale, "orig_size": (h, w)})
            images.append({"id": image_id, "file_name": str(path), "width": w, "height": h})
        with torch.inference_mode():
            dets = predictor.model.detect(torch.stack(tensors).to(predictor.device))
        results.extend(detections_to_coco(dets, targets, predictor.label_to_cat_id))
    return results, images


def draw_detections(
    path: Path, results: Iterable[dict[str, Any]], predictor: Predictor, out: Path, threshold: float
) -> Path:
    """Write ``out`` (PNG): the image with its boxes scoring ``>= threshold`` and their labels."""
    cat_to_label = {c: k for k, c in predictor.label_to_cat_id.items()}
    with Image.open(path) as im:
        canvas = to_rgb(im)
    draw = ImageDraw.Draw(canvas)
    for r in results:
        if r["score"] < threshold:
            continue
        label = cat_to_label[r["category_id"]]
        colour = PALETTE[(label - 1) % len(PALETTE)]
        x, y, w, h = r["bbox"]
        draw.rectangle([x, y, x + w, y + h], outline=colour, width=max(1, round(max(canvas.size) / 300)))
        draw.text((x + 2, y + 1), f"{predictor.class_names[label - 1]} {r['score']:.2f}", fill=colour)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out


def run_predict(
    weights: Path,
    inputs: Sequence[str | Path],
    out_dir: Path,
    *,
    draw: bool = False,
    threshold: float = 0.3,
    ann_file: Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
) -> tuple[Path, int, int]:
    """The ``predict`` command: writes ``detections.json`` and ``images.json`` (and ``drawn/*.png``).

    Image ids come from ``ann_file`` (matched by file name) when given, else ``1..N`` in the order
    of :func:`collect_images`. Returns ``(detections file, images, detections)``.
    """
    predictor = load_predictor(weights, device)
    files = collect_images(inputs)
    if ann_file is not None:
        by_name = image_ids_from_json(ann_file)
        missing = [f.name for f in files if f.name not in by_name]
        if missing:
            raise DataError(
                ann_file, "images", f"no entry for {missing[0]} ({len(missing)} image(s) missing)"
            )
        ids: list[int] | None = [by_name[f.name] for f in files]
        seen: dict[int, Path] = {}
        for f, i in zip(files, ids, strict=True):  # type: ignore[arg-type]
            if i in seen:
                raise DataError(
                    ann_file, f"image id {i}", f"{seen[i]} and {f} both match this image (same file name)"
                )
            seen[i] = f
    else:
        ids = None
    results, images = predict_images(predictor, files, ids, batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    det_file = out_dir / "detections.json"
    atomic_write_text(det_file, json.dumps(results))
    categories = [
        {"id": predictor.label_to_cat_id[k + 1], "name": n} for k, n in enumerate(predictor.class_names)
    ]
    atomic_write_text(
        out_dir / "images.json", json.dumps({"images": images, "categories": categories}, indent=1)
    )
    if draw:
        per_image: dict[int, list[dict[str, Any]]] = {}
        for r in results:
            per_image.setdefault(r["image_id"], []).append(r)
        stems = [Path(img["file_name"]).stem for img in images]
        for img, stem in zip(images, stems, strict=True):
            name = stem if stems.count(stem) == 1 else f"{stem}-{img['id']}"
            src = Path(img["file_name"])
            draw_detections(
                src, per_image.get(img["id"], []), predictor, out_dir / "drawn" / f"{name}.png", threshold
            )
    return det_file, len(images), len(results)


__all__ = [
    "Predictor",
    "collect_images",
    "draw_detections",
    "image_ids_from_json",
    "load_predictor",
    "predict_images",
    "run_predict",
]
