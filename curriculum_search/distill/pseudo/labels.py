"""Pseudo labels from one or several teachers (Revisiting KD for object detection, 2021).

Pipeline per image: each teacher's detections are filtered (score ≥ τ, class-wise NMS, top-k,
:func:`filter_detections`), mapped from the teacher's label space into the student's by class name
(:func:`class_mapping`, :func:`map_labels`; classes the student lacks are dropped), then the
teachers are fused by a registered fuser (``wbf`` or ``nms``, :func:`pseudo_targets`). The result
is a list of training targets (``boxes``, ``labels``, ``scores``). For images that have ground
truth, :func:`merge_with_ground_truth` either replaces the pseudo labels by it or adds it to them.

Detections follow the shared convention: ``boxes (M, 4)`` xyxy input px, ``scores (M,)``,
``labels (M,)`` in ``1..C`` where ``class_names[i]`` is label ``i + 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from curriculum_search.distill.pseudo._registry import ImageSize
from curriculum_search.distill.pseudo._registry import fuse as fuse_detections
from curriculum_search.errors import ConfigError

Detections = Mapping[str, Tensor]


def _triplet(det: Detections, what: str) -> tuple[Tensor, Tensor, Tensor]:
    try:
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
    except KeyError as exc:
        raise ValueError(f"{what}: detections need 'boxes', 'scores' and 'labels', missing {exc}") from None
    boxes = boxes.detach().reshape(-1, 4).float()
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(
            f"{what}: {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels do not match"
        )
    return boxes, scores.detach().reshape(-1).float(), labels.detach().reshape(-1).long()


def filter_detections(
    det: Detections, score_threshold: float = 0.5, nms_iou: float = 0.5, max_detections: int = 100
) -> dict[str, Tensor]:
    """Keep confident, non-duplicate detections of one image.

    Keeps boxes with ``score ≥ score_threshold``, then class-wise NMS at ``nms_iou``
    (``torchvision.ops.batched_nms``), then the ``max_detections`` best.

    Args:
        det: ``{"boxes", "scores", "labels"}`` of one image.
        score_threshold: τ (default 0.5).
        nms_iou: IoU above which a lower-scored box of the same class is dropped (default 0.5).
        max_detections: Upper bound on kept boxes (default 100).

    Returns:
        ``{"boxes" float32 (M, 4), "scores" float32 (M,), "labels" int64 (M,)}`` sorted by score.
    """
    boxes, scores, labels = _triplet(det, "filter_detections")
    keep = torch.nonzero(scores >= score_threshold).squeeze(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_iou)[: max(int(max_detections), 0)]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def class_mapping(teacher_class_names: Sequence[str], student_class_names: Sequence[str]) -> dict[int, int]:
    """Map teacher labels to student labels by class name.

    Names match case- and whitespace-insensitively (``" Traffic  light"`` == ``"traffic light"``).
    Teacher classes the student lacks are left out of the mapping (their boxes get dropped).

    Args:
        teacher_class_names: Teacher's names; ``teacher_class_names[i]`` is teacher label ``i + 1``.
        student_class_names: Student's names; ``student_class_names[j]`` is student label ``j + 1``.

    Returns:
        ``{teacher_label: student_label}`` (both 1-based).

    Raises:
        ValueError: Two student classes have the same normalised name.
    """
    student: dict[str, int] = {}
    for j, name in enumerate(student_class_names):
        key = _norm(name)
        if key in student:
            raise ValueError(f"class_mapping: student class name {name!r} appears twice")
        student[key] = j + 1
    return {
        i + 1: student[_norm(name)] for i, name in enumerate(teacher_class_names) if _norm(name) in student
    }


def map_labels(det: Detections, mapping: Mapping[int, int]) -> dict[str, Tensor]:
    """Relabel detections with ``mapping`` (teacher → student label); unmapped labels are dropped.

    Returns:
        ``{"boxes", "scores", "labels"}`` with only the mapped detections, order kept.
    """
    boxes, scores, labels = _triplet(det, "map_labels")
    if len(labels) == 0 or not mapping:
        keep = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
    size = max(max(mapping), int(labels.max())) + 1
    table = torch.full((size,), -1, dtype=torch.int64, device=labels.device)
    for src, dst in mapping.items():
        table[int(src)] = int(dst)
    new = table[labels.clamp_min(0)]
    keep = (new > 0) & (labels >= 0)
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": new[keep]}


def check_coverage(
    teacher_sets: Mapping[str, Sequence[str]], student_class_names: Sequence[str], source: str
) -> None:
    """Fail when some student class is predicted by none of the teachers.

    Args:
        teacher_sets: ``{teacher name: its class names}``.
        student_class_names: The student's classes.
        source: File the teacher list came from (named in the error).

    Raises:
        ConfigError: ``<source>: teachers: student class(es) 'x', 'y' are predicted by no teacher
            (teachers: a, b)`` — one line.
    """
    covered = {_norm(n) for names in teacher_sets.values() for n in names}
    missing = [name for name in student_class_names if _norm(name) not in covered]
    if missing:
        teachers = ", ".join(teacher_sets) if teacher_sets else "none"
        listed = ", ".join(repr(m) for m in missing)
        plural = "es" if len(missing) > 1 else ""
        raise ConfigError(
            source,
            "teachers",
            f"student class{plural} {listed} predicted by no teacher (teachers: {teachers})",
        )


def pseudo_targets(
    per_teacher_dets: Sequence[Sequence[Detections]],
    mappings: Sequence[Mapping[int, int]],
    fuse: str = "wbf",
    score_threshold: float = 0.5,
    iou_threshold: float = 0.55,
    weights: Sequence[float] | None = None,
    image_size: ImageSize | Sequence[ImageSize] | None = None,
    nms_iou: float = 0.5,
    max_detections: int = 100,
    fused_score_threshold: float = 0.0,
) -> list[dict[str, Tensor]]:
    """Per-image pseudo-label targets from several teachers.

    For each image: every teacher's detections go through :func:`filter_detections`
    (``score_threshold``, ``nms_iou``, ``max_detections``) and :func:`map_labels`; the teachers are
    then merged with the fuser ``fuse`` at ``iou_threshold`` (with one teacher and
    ``iou_threshold ≥ nms_iou`` both fusers return the filtered boxes unchanged); fused boxes scoring
    below ``fused_score_threshold`` are dropped and at most ``max_detections`` kept.

    Args:
        per_teacher_dets: ``per_teacher_dets[t][i]`` = teacher ``t``'s detections on image ``i``.
        mappings: One ``{teacher label: student label}`` per teacher (see :func:`class_mapping`).
        fuse: Registered fuser name (default ``"wbf"``; also ``"nms"``).
        score_threshold: Per-teacher confidence threshold τ (default 0.5).
        iou_threshold: Fusion IoU (default 0.55).
        weights: One weight per teacher (default equal).
        image_size: ``S``, ``(h, w)``, or one of those per image; boxes are clipped to it.
        nms_iou: Per-teacher class-wise NMS IoU (default 0.5).
        max_detections: Cap per teacher and on the fused result (default 100).
        fused_score_threshold: Drop fused boxes below this score (default 0: keep all). With WBF a
            box found by one of ``T`` teachers has its score divided by ``T``, so a value near τ
            asks for consensus.

    Returns:
        One ``{"boxes" float32 (M, 4), "labels" int64 (M,), "scores" float32 (M,)}`` per image,
        sorted by score; ``scores`` are kept for optional score-weighted losses.

    Raises:
        ValueError: No teachers, teachers with different image counts, or mismatched mappings/weights.
    """
    n_teachers = len(per_teacher_dets)
    if n_teachers == 0:
        raise ValueError("pseudo_targets: need detections from at least one teacher")
    if len(mappings) != n_teachers:
        raise ValueError(f"pseudo_targets: {len(mappings)} class mappings for {n_teachers} teachers")
    n_images = len(per_teacher_dets[0])
    counts = [len(d) for d in per_teacher_dets]
    if any(c != n_images for c in counts):
        raise ValueError(f"pseudo_targets: teachers predicted different numbers of images: {counts}")
    sizes: list[Any]
    one_size = image_size is None or isinstance(image_size, int)
    if isinstance(image_size, tuple) and len(image_size) == 2:
        one_size = all(isinstance(v, int) for v in image_size)
    if one_size:
        sizes = [image_size] * n_images
    else:
        sizes = list(cast(Sequence[Any], image_size))
        if len(sizes) != n_images:
            raise ValueError(f"pseudo_targets: {len(sizes)} image sizes for {n_images} images")
    out: list[dict[str, Tensor]] = []
    for i in range(n_images):
        per = [
            map_labels(filter_detections(per_teacher_dets[t][i], score_threshold, nms_iou, max_detections), m)
            for t, m in enumerate(mappings)
        ]
        boxes, scores, labels = fuse_detections(
            fuse,
            [d["boxes"] for d in per],
            [d["scores"] for d in per],
            [d["labels"] for d in per],
            iou_threshold=iou_threshold,
            weights=weights,
            image_size=sizes[i],
        )
        keep = torch.nonzero(scores >= fused_score_threshold).squeeze(1)[: max(int(max_detections), 0)]
        out.append({"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]})
    return out


def merge_with_ground_truth(
    pseudo: Sequence[Detections],
    targets: Sequence[Mapping[str, Any]],
    mode: Literal["replace", "union"] = "replace",
    dedup_iou: float = 0.5,
) -> list[dict[str, Any]]:
    """Combine pseudo labels with the ground truth of labeled images.

    For an image whose target has ``labeled`` True (the default when the key is absent):
    ``"replace"`` trains on its ground truth only; ``"union"`` keeps the ground truth plus the
    pseudo boxes that do not duplicate a ground-truth box of the same label (IoU > ``dedup_iou``).
    Unlabeled images keep their pseudo labels. Ground-truth boxes get score 1. Other keys of the
    target (``image_id``, ``index``, ``variant``...) are carried over.

    Args:
        pseudo: Per-image pseudo targets (``boxes``, ``labels``, optionally ``scores``).
        targets: Per-image ground-truth targets (shared target convention).
        mode: ``"replace"`` (default) or ``"union"``.
        dedup_iou: Overlap above which a pseudo box duplicates a ground-truth box (default 0.5).

    Returns:
        One target dict per image with ``boxes``, ``labels`` and ``scores``.

    Raises:
        ValueError: Unknown ``mode`` or lists of different lengths.
    """
    if mode not in ("replace", "union"):
        raise ValueError(f"merge_with_ground_truth: unknown mode {mode!r}; choose replace or union")
    if len(pseudo) != len(targets):
        raise ValueError(f"merge_with_ground_truth: {len(pseudo)} pseudo targets for {len(targets)} images")
    out: list[dict[str, Any]] = []
    for p, gt in zip(pseudo, targets):
        p_boxes = p["boxes"].reshape(-1, 4).float()
        p_labels = p["labels"].reshape(-1).long()
        p_scores = p["scores"].reshape(-1).float() if "scores" in p else torch.ones(len(p_boxes))
        merged = dict(gt)
        if not bool(gt.get("labeled", True)):
            merged.update(boxes=p_boxes, labels=p_labels, scores=p_scores.to(p_boxes.device))
            out.append(merged)
            continue
        g_boxes = gt["boxes"].reshape(-1, 4).float().to(p_boxes.device)
        g_labels = gt["labels"].reshape(-1).long().to(p_boxes.device)
        g_scores = torch.ones(len(g_boxes), dtype=torch.float32, device=p_boxes.device)
        if mode == "union" and len(p_boxes):
            dup = torch.zeros(len(p_boxes), dtype=torch.bool, device=p_boxes.device)
            if len(g_boxes):
                same = p_labels[:, None] == g_labels[None, :]
                dup = ((box_iou(p_boxes, g_boxes) > dedup_iou) & same).any(dim=1)
            extra = ~dup
            g_boxes = torch.cat([g_boxes, p_boxes[extra]])
            g_labels = torch.cat([g_labels, p_labels[extra]])
            g_scores = torch.cat([g_scores, p_scores.to(p_boxes.device)[extra]])
        merged.update(boxes=g_boxes, labels=g_labels, scores=g_scores)
        out.append(merged)
    return out
