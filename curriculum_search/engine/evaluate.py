"""COCO box evaluation of a detector with pycocotools.

:func:`evaluate` runs ``model.detect`` over a dataset (or a ``torch.utils.data.Subset`` of one),
maps the detections back to original image coordinates and scores them with ``COCOeval``.
The two pure helpers it is built from are public so that export and offline scoring reuse them:

* :func:`detections_to_coco` — detections in input pixels → COCO result dicts
  ``{image_id, category_id, bbox: [x, y, w, h] original px, score}``;
* :func:`evaluate_detections` — COCO result dicts + ground truth → :class:`EvalResult`.

Stats follow pycocotools' ``summarize()``: a stat is ``-1.0`` when it is undefined, i.e. the evaluated
images hold no ground truth in that area range (e.g. ``apl`` on a dataset of small objects).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import box_convert, clip_boxes_to_image
from tqdm import tqdm

from curriculum_search.errors import DataError, UserError
from curriculum_search.utils.io import atomic_write_text

__all__ = ["EvalResult", "detections_to_coco", "evaluate", "evaluate_detections", "write_detections"]

Target = dict[str, Any]
Detection = dict[str, Tensor]


@dataclass(frozen=True)
class EvalResult:
    """COCO box metrics of one evaluation.

    Attributes:
        ap: AP averaged over IoU 0.50:0.05:0.95, all areas, 100 detections per image (the COCO mAP).
        ap50: AP at IoU 0.50.
        ap75: AP at IoU 0.75.
        aps: AP on small objects (area < 32² original px); ``-1.0`` when there are none.
        apm: AP on medium objects (32² ≤ area < 96²); ``-1.0`` when there are none.
        apl: AP on large objects (area ≥ 96²); ``-1.0`` when there are none.
        ar100: average recall with at most 100 detections per image.
        num_images: number of images evaluated.
        num_detections: number of detections scored (before pycocotools' 100-per-image cap).
    """

    ap: float
    ap50: float
    ap75: float
    aps: float
    apm: float
    apl: float
    ar100: float
    num_images: int
    num_detections: int

    def as_dict(self) -> dict[str, float | int]:
        """Return the fields as a plain, JSON-serialisable dict."""
        return asdict(self)


def detections_to_coco(
    detections: Sequence[Detection],
    targets: Sequence[Target],
    label_to_cat_id: Mapping[int, int],
) -> list[dict[str, Any]]:
    """Convert detections in input pixels into COCO result dicts in original image pixels.

    For each image, ``box_orig = box_input / target["scale"]`` (the letterbox keeps the image at the
    top-left corner, so no offset), clipped to ``target["orig_size"]`` when present, then converted
    from xyxy to COCO ``[x, y, w, h]``; label ``l`` (1..C) becomes category ``label_to_cat_id[l]``.

    Args:
        detections: per image, ``boxes (M, 4)`` xyxy input px, ``scores (M,)``, ``labels (M,)`` 1..C.
        targets: the matching targets (``image_id``, ``scale``, optionally ``orig_size`` (h, w)).
        label_to_cat_id: contiguous label → COCO category id.

    Returns:
        One ``{"image_id", "category_id", "bbox", "score"}`` dict per detection, in input order.

    Raises:
        ValueError: the two sequences differ in length, or a label has no category id.
    """
    if len(detections) != len(targets):
        raise ValueError(f"got {len(detections)} detections for {len(targets)} targets")
    results: list[dict[str, Any]] = []
    for det, target in zip(detections, targets, strict=True):
        boxes = det["boxes"].detach().to("cpu", torch.float64).reshape(-1, 4)
        if boxes.numel() == 0:
            continue
        boxes = boxes / float(target["scale"])
        if "orig_size" in target:
            h, w = (int(v) for v in target["orig_size"])
            boxes = clip_boxes_to_image(boxes, (h, w))
        xywh = box_convert(boxes, "xyxy", "xywh").tolist()
        scores = det["scores"].detach().cpu().reshape(-1).tolist()
        labels = det["labels"].detach().cpu().reshape(-1).tolist()
        image_id = int(target["image_id"])
        for bbox, score, label in zip(xywh, scores, labels, strict=True):
            if int(label) not in label_to_cat_id:
                raise ValueError(f"detection label {int(label)} has no COCO category id")
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(label_to_cat_id[int(label)]),
                    "bbox": [float(v) for v in bbox],
                    "score": float(score),
                }
            )
    return results


def _empty_results(coco_gt: COCO) -> COCO:
    """A result COCO with no detections (``COCO.loadRes`` crashes on an empty list)."""
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset.get("images", [])),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    coco_dt.createIndex()
    return coco_dt


def evaluate_detections(
    coco_gt: COCO, results: Sequence[Mapping[str, Any]], img_ids: Sequence[int]
) -> EvalResult:
    """Score COCO result dicts against ground truth with ``COCOeval(iouType="bbox")``, silently.

    Only ``img_ids`` are evaluated (``COCOeval.params.imgIds``); results on other images are dropped.
    No results gives AP 0.0 (AR 0.0) wherever ground truth exists. ``results`` is not modified.

    Args:
        coco_gt: ground truth in original image coordinates.
        results: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts.
        img_ids: ids of the images to evaluate.

    Returns:
        The :class:`EvalResult` (``stats[0..5]`` and ``stats[8]`` of ``COCOeval.summarize``).

    Raises:
        ValueError: ``img_ids`` is empty or names images missing from ``coco_gt``.
    """
    ids = sorted({int(i) for i in img_ids})
    if not ids:
        raise ValueError("no images to evaluate (img_ids is empty)")
    missing = set(ids) - set(coco_gt.getImgIds())
    if missing:
        raise ValueError(f"image ids {sorted(missing)[:5]} are not in the ground-truth COCO set")
    keep = set(ids)
    kept = [dict(r) for r in results if int(r["image_id"]) in keep]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(kept) if kept else _empty_results(coco_gt)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)
    return EvalResult(
        ap=float(stats[0]),
        ap50=float(stats[1]),
        ap75=float(stats[2]),
        aps=float(stats[3]),
        apm=float(stats[4]),
        apl=float(stats[5]),
        ar100=float(stats[8]),
        num_images=len(ids),
        num_detections=len(kept),
    )


def _only_labels(det: Detection, labels: Mapping[int, int]) -> Detection:
    """``det`` without the detections whose label is not a key of ``labels``."""
    lab = det["labels"].reshape(-1)
    allowed = torch.tensor(sorted(labels), dtype=lab.dtype, device=lab.device)
    keep = torch.isin(lab, allowed)
    return {k: (v[keep] if k in ("boxes", "scores", "labels") else v) for k, v in det.items()}


def _collate(batch: Sequence[tuple[Tensor, Target]]) -> tuple[Tensor, list[Target]]:
    """Stack the images of a batch; keep the targets as a list."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(list(images)), list(targets)


def _base_dataset(dataset: Any) -> Any:
    """Unwrap ``Subset`` (or any wrapper with ``.dataset``) down to the dataset holding ``coco``."""
    base = dataset
    while not hasattr(base, "coco") and hasattr(base, "dataset"):
        base = base.dataset
    if not hasattr(base, "coco") or not hasattr(base, "label_to_cat_id"):
        raise TypeError(f"{type(dataset).__name__} has no `coco` / `label_to_cat_id` (see ARCHITECTURE.md)")
    return base


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


def _detect_fn(model: nn.Module) -> Callable[[Tensor], list[Detection]]:
    detect = getattr(model, "detect", None)
    if not callable(detect):
        raise TypeError(f"{type(model).__name__} has no detect(images) method")
    return detect


def evaluate(
    model: nn.Module,
    dataset: Dataset[tuple[Tensor, Target]],
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    results_file: str | Path | None = None,
    progress: bool = False,
    label_map: Mapping[int, int] | None = None,
    num_workers: int = 0,
) -> EvalResult:
    """Compute COCO box AP of ``model`` on the labeled images of ``dataset``.

    The model must already be on ``device``; images are moved there. It runs in eval mode under
    ``torch.inference_mode()``; each submodule's train/eval flag is restored afterwards. Images whose
    target has ``labeled=False`` are skipped (never passed to the model), as are repeated image ids.

    Args:
        model: a module with ``detect(images (B, 3, S, S)) -> list[Detection]``.
        dataset: a dataset with ``coco`` and ``label_to_cat_id`` (ARCHITECTURE.md), or a ``Subset``
            of one; only the images it yields are evaluated.
        batch_size: images per ``detect`` call (default 8).
        device: where the images go (default ``"cpu"``).
        max_images: stop after this many labeled images (default: all).
        results_file: if given, the COCO results JSON (list of ``{image_id, category_id, bbox,
            score}`` in original px) is written there atomically.
        progress: show a tqdm progress bar.
        label_map: the model's label → the dataset's label, for a model trained on another class
            set (e.g. a teacher in torchvision's 91-slot COCO label space; see
            :func:`curriculum_search.search.zoo.teacher_label_map`). Detections whose label is not in it
            are dropped; dataset classes no model label maps to score 0 AP. Default: the model's
            labels are the dataset's.
        num_workers: loader worker processes decoding the images (0 = in this process).

    Returns:
        The :class:`EvalResult`.

    Raises:
        UserError: the dataset yields no labeled image.
        DataError: the evaluated images hold no ground-truth box (AP undefined, pycocotools -1).
        ValueError: ``batch_size`` or ``max_images`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    base = _base_dataset(dataset)
    detect = _detect_fn(model)
    from curriculum_search.data.loader import EpochItems  # a broken image in a worker: one line

    loader: DataLoader[tuple[Tensor, Target]] = DataLoader(
        EpochItems(dataset) if num_workers > 0 else dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=torch.device(device).type == "cuda",
    )
    label_to_cat = dict(base.label_to_cat_id)
    if label_map is not None:
        label_to_cat = {int(m): label_to_cat[int(d)] for m, d in label_map.items() if int(d) in label_to_cat}
    seen: set[int] = set()
    results: list[dict[str, Any]] = []
    bar = tqdm(loader, desc="evaluate", unit="batch", leave=False, disable=not progress)
    with bar as batches, _eval_mode(model), torch.inference_mode():
        for images, targets in batches:
            keep: list[int] = []
            for i, target in enumerate(targets):
                image_id = int(target["image_id"])
                if not bool(target.get("labeled", True)) or image_id in seen:
                    continue
                if max_images is not None and len(seen) >= max_images:
                    break
                seen.add(image_id)
                keep.append(i)
            if keep:
                detections = detect(images[keep].to(device))
                if label_map is not None:
                    detections = [_only_labels(d, label_to_cat) for d in detections]
                results.extend(detections_to_coco(detections, [targets[i] for i in keep], label_to_cat))
            if max_images is not None and len(seen) >= max_images:
                break
    if not seen:
        raise UserError("evaluation dataset has no labeled images (every target has labeled=False)")
    if results_file is not None:
        atomic_write_text(results_file, json.dumps(results))
    res = evaluate_detections(base.coco, results, sorted(seen))
    if res.ap < 0:  # pycocotools' "undefined": never let -1 pass for a score
        raise DataError(
            getattr(base, "ann_file", None),
            None,
            f"AP is undefined: the {len(seen)} evaluated image(s) hold no ground-truth box "
            "(use more evaluation images or a validation set with boxes)",
        )
    return res


def write_detections(
    model: nn.Module,
    dataset: Dataset[tuple[Tensor, Target]],
    path: str | Path,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    max_images: int | None = None,
    num_workers: int = 0,
) -> EvalResult:
    """Write ``model``'s detections on ``dataset`` as a COCO-results JSON file and score them.

    The file is a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in the
    original image pixels with the dataset's own category ids, so any COCO evaluator scoring it
    against the dataset's annotation file reproduces the returned AP (for ground truth the
    dataset did not have to clip or drop). Same arguments as :func:`evaluate`; written atomically.
    """
    return evaluate(
        model,
        dataset,
        batch_size=batch_size,
        device=device,
        max_images=max_images,
        results_file=path,
        num_workers=num_workers,
    )
