"""Pseudo-label filtering, class mapping, teacher fusion (NMS / WBF) and merging with ground truth."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from curriculum_search.distill.pseudo import (
    check_coverage,
    class_mapping,
    filter_detections,
    fuse,
    list_fusers,
    map_labels,
    merge_with_ground_truth,
    pseudo_targets,
    register_fuser,
)
from curriculum_search.errors import ConfigError

torch.set_num_threads(1)


def _det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


A = [0.0, 0.0, 10.0, 10.0]
B = [1.0, 1.0, 11.0, 11.0]  # IoU(A, B) = 81 / 119 = 0.68


# ------------------------------------------------------------------------------------- filtering


def test_filter_detections_threshold_nms_and_cap() -> None:
    det = _det(
        [A, B, [50, 50, 60, 60], [1, 1, 11, 11], [70, 70, 80, 80]],
        [0.9, 0.8, 0.49, 0.7, 0.5],
        [1, 1, 1, 2, 1],
    )
    out = filter_detections(det, score_threshold=0.5, nms_iou=0.5)
    # 0.49 dropped, 0.5 kept (>=); B suppressed by A (same class); the class-2 twin of B survives.
    assert out["scores"].tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert out["labels"].tolist() == [1, 2, 1]
    assert out["boxes"][0].tolist() == A
    assert filter_detections(det, score_threshold=0.5, max_detections=2)["scores"].tolist() == pytest.approx(
        [0.9, 0.7]
    )
    assert len(filter_detections(det, score_threshold=0.95)["boxes"]) == 0
    with pytest.raises(ValueError, match="missing 'scores'"):
        filter_detections({"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)})


# -------------------------------------------------------------------------------- class mapping


def test_class_mapping_by_name_case_and_whitespace_insensitive() -> None:
    teacher = ["Person", "car", "dog", "traffic  light"]
    student = ["car", " person ", "Traffic Light"]
    assert class_mapping(teacher, student) == {1: 2, 2: 1, 4: 3}
    det = _det([A, B, A, B], [0.9, 0.8, 0.7, 0.6], [1, 3, 2, 4])
    mapped = map_labels(det, class_mapping(teacher, student))
    assert mapped["labels"].tolist() == [2, 1, 3]  # the dog (teacher label 3) is dropped
    assert mapped["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert len(map_labels(det, {})["boxes"]) == 0
    with pytest.raises(ValueError, match="'CAR' appears twice"):
        class_mapping(teacher, ["car", "CAR"])


def test_check_coverage_names_missing_class_and_source() -> None:
    teachers = {"r18": ["person", "car", "dog"], "mnv3": ["Car"]}
    check_coverage(teachers, ["car", "person"], "space/x.yaml")  # covered: no error
    with pytest.raises(ConfigError) as err:
        check_coverage(teachers, ["car", "bicycle", "person"], "space/x.yaml")
    msg = str(err.value)
    assert msg.startswith("space/x.yaml: teachers: ")
    assert "'bicycle'" in msg and "'car'" not in msg and "r18, mnv3" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match=r"classes 'a', 'b' predicted by no teacher"):
        check_coverage(teachers, ["a", "b"], "s.yaml")


# ----------------------------------------------------------------------------------------- WBF


def test_wbf_two_teachers_two_overlapping_boxes_hand_computed() -> None:
    boxes, scores, labels = fuse(
        "wbf",
        [torch.tensor([A]), torch.tensor([B])],
        [torch.tensor([0.9]), torch.tensor([0.6])],
        [torch.tensor([1]), torch.tensor([1])],
        iou_threshold=0.55,
        image_size=100,
    )
    # box = (0.9 A + 0.6 B) / 1.5 ; score = mean(0.9, 0.6) * min(2, 2) / 2
    assert boxes.tolist() == [pytest.approx([0.4, 0.4, 10.4, 10.4], abs=1e-5)]
    assert scores.tolist() == pytest.approx([0.75])
    assert labels.tolist() == [1]
    assert boxes.dtype == torch.float32 and labels.dtype == torch.int64


def test_wbf_teacher_weights_and_lonely_box() -> None:
    boxes, scores, _ = fuse(
        "wbf",
        [torch.tensor([A]), torch.tensor([B, [50.0, 50.0, 60.0, 60.0]])],
        [torch.tensor([0.9]), torch.tensor([0.6, 0.8])],
        [torch.tensor([1]), torch.tensor([1, 1])],
        iou_threshold=0.55,
        weights=[2.0, 1.0],
    )
    # Cluster: weighted scores 1.8, 0.6 -> box (1.8 A + 0.6 B) / 2.4, score (2.4 / 2) * 2 / 3 = 0.8.
    # Lonely box of teacher 2: 0.8 * 1 * 1 / 3.
    assert scores.tolist() == pytest.approx([0.8, 0.8 / 3])
    assert boxes[0].tolist() == pytest.approx([0.25, 0.25, 10.25, 10.25], abs=1e-5)
    assert boxes[1].tolist() == [50.0, 50.0, 60.0, 60.0]


def test_wbf_does_not_merge_other_classes_or_low_iou() -> None:
    boxes, _, labels = fuse(
        "wbf",
        [torch.tensor([A, [0.0, 0.0, 20.0, 20.0]]), torch.tensor([B])],
        [torch.tensor([0.9, 0.5]), torch.tensor([0.6])],
        [torch.tensor([1, 1]), torch.tensor([2])],
        iou_threshold=0.55,
    )
    assert len(boxes) == 3 and sorted(labels.tolist()) == [1, 1, 2]


def _random_teachers(seed: int, n_teachers: int = 3) -> tuple[list, list, list]:
    """Boxes jittered around a few shared objects (in [0, 1]) so that clusters form."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.2, 0.8, size=(6, 2))
    sizes = rng.uniform(0.05, 0.3, size=(6, 2))
    boxes_list, scores_list, labels_list = [], [], []
    for _ in range(n_teachers):
        n = int(rng.integers(3, 12))
        obj = rng.integers(0, 6, size=n)
        c = centres[obj] + rng.normal(0, 0.02, size=(n, 2))
        s = sizes[obj] * rng.uniform(0.8, 1.2, size=(n, 2))
        b = np.clip(np.concatenate([c - s / 2, c + s / 2], 1), 0.0, 1.0)
        boxes_list.append(b)
        scores_list.append(rng.uniform(0.05, 1.0, size=n))
        labels_list.append(rng.integers(1, 3, size=n))
    return boxes_list, scores_list, labels_list


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_wbf_matches_ensemble_boxes_on_random_inputs(seed: int, weighted: bool) -> None:
    ensemble_boxes = pytest.importorskip("ensemble_boxes")
    boxes_list, scores_list, labels_list = _random_teachers(seed)
    weights = [1.0, 2.0, 0.5] if weighted else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_b, ref_s, ref_l = ensemble_boxes.weighted_boxes_fusion(
            boxes_list, scores_list, labels_list, weights=weights, iou_thr=0.55, skip_box_thr=0.0
        )
    h, w = 48, 64  # our fuser works in input pixels; ensemble-boxes in [0, 1]
    scale = np.array([w, h, w, h])
    boxes, scores, labels = fuse(
        "wbf",
        [torch.tensor(b * scale, dtype=torch.float32) for b in boxes_list],
        [torch.tensor(s, dtype=torch.float32) for s in scores_list],
        [torch.tensor(lab) for lab in labels_list],
        iou_threshold=0.55,
        weights=weights,
        image_size=(h, w),
    )
    assert len(boxes) == len(ref_b) < sum(len(b) for b in boxes_list)  # some clusters did form
    np.testing.assert_allclose(scores.numpy(), ref_s, atol=1e-4)
    np.testing.assert_allclose(boxes.numpy() / scale, ref_b, atol=1e-4)
    np.testing.assert_array_equal(labels.numpy(), ref_l.astype(np.int64))


# ----------------------------------------------------------------------------------------- NMS


def test_nms_fusion_keeps_the_higher_scoring_box() -> None:
    boxes, scores, labels = fuse(
        "nms",
        [torch.tensor([A]), torch.tensor([B, A])],
        [torch.tensor([0.6]), torch.tensor([0.9, 0.7])],
        [torch.tensor([1]), torch.tensor([1, 2])],
        iou_threshold=0.5,
    )
    assert boxes.tolist() == [B, A]
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert labels.tolist() == [1, 2]  # the class-2 box is not suppressed by the class-1 one
    # Teacher weights change the ranking; reported scores are divided by the largest weight.
    boxes, scores, _ = fuse(
        "nms", [torch.tensor([A]), torch.tensor([B])], [torch.tensor([0.6]), torch.tensor([0.9])],
        [torch.tensor([1]), torch.tensor([1])], iou_threshold=0.5, weights=[2.0, 1.0],
    )  # fmt: skip
    assert boxes.tolist() == [A] and scores.tolist() == pytest.approx([0.6])


@pytest.mark.parametrize("name", list_fusers())
def test_every_fuser_handles_empty_input_and_clips_to_the_image(name: str) -> None:
    empty = fuse(name, [torch.zeros(0, 4)], [torch.zeros(0)], [torch.zeros(0, dtype=torch.int64)])
    assert [t.shape for t in empty] == [(0, 4), (0,), (0,)]
    boxes, _, _ = fuse(
        name,
        [torch.tensor([[-5.0, 2.0, 40.0, 20.0], [40.0, 40.0, 50.0, 50.0]])],
        [torch.tensor([0.9, 0.8])],
        [torch.tensor([1, 1])],
        image_size=32,
    )
    assert boxes.tolist() == [[0.0, 2.0, 32.0, 20.0]]  # second box has zero area once clipped


def test_fuse_rejects_bad_arguments() -> None:
    one = ([torch.tensor([A])], [torch.tensor([0.9])], [torch.tensor([1])])
    with pytest.raises(ValueError, match="unknown pseudo-label fuser 'soft_nms'; choose one of nms, wbf"):
        fuse("soft_nms", *one)
    with pytest.raises(ValueError, match="got 2 weights for 1 teachers"):
        fuse("wbf", *one, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        fuse("wbf", *one, weights=[0.0])
    with pytest.raises(ValueError, match="at least one teacher"):
        fuse("wbf", [], [], [])
    with pytest.raises(ValueError, match="already registered"):
        register_fuser("wbf")(lambda *a: one)  # type: ignore[arg-type,return-value]


# ------------------------------------------------------------------------------ pseudo targets


def test_pseudo_targets_two_teachers_with_different_class_sets() -> None:
    student = ["cat", "dog"]
    t1 = ["dog", "cat", "bird"]  # has an extra class
    t2 = ["Cat"]  # lacks "dog"
    maps = [class_mapping(t1, student), class_mapping(t2, student)]
    img0_t1 = _det(
        [A, [30, 30, 40, 40], [60, 60, 70, 70], [80, 80, 90, 90]], [0.9, 0.8, 0.95, 0.3], [2, 1, 3, 2]
    )
    img0_t2 = _det([B], [0.6], [1])
    img1_t1 = _det([], [], [])
    img1_t2 = _det([A], [0.7], [1])
    out = pseudo_targets([[img0_t1, img1_t1], [img0_t2, img1_t2]], maps, fuse="wbf", image_size=128)
    assert len(out) == 2
    # Image 0: t1 "cat" (label 2 -> 1) fused with t2 "Cat"; t1 "dog" (1 -> 2) alone (score / 2);
    # the bird is dropped by the mapping, the 0.3 box by the score threshold.
    assert out[0]["labels"].tolist() == [1, 2]
    assert out[0]["scores"].tolist() == pytest.approx([0.75, 0.4])
    assert out[0]["boxes"][0].tolist() == pytest.approx([0.4, 0.4, 10.4, 10.4], abs=1e-5)
    assert out[0]["boxes"][1].tolist() == [30.0, 30.0, 40.0, 40.0]
    assert out[1]["labels"].tolist() == [1] and out[1]["scores"].tolist() == pytest.approx([0.35])
    # Asking for consensus drops boxes only one teacher saw.
    strict = pseudo_targets([[img0_t1, img1_t1], [img0_t2, img1_t2]], maps, fused_score_threshold=0.5)
    assert [len(t["boxes"]) for t in strict] == [1, 0]
    # NMS fusion keeps the better teacher's box with its own score.
    nms_out = pseudo_targets([[img0_t1], [img0_t2]], maps, fuse="nms", iou_threshold=0.5)
    assert nms_out[0]["scores"].tolist() == pytest.approx([0.9, 0.8])
    assert nms_out[0]["boxes"][0].tolist() == A


def test_pseudo_targets_validates_its_inputs() -> None:
    d = _det([A], [0.9], [1])
    with pytest.raises(ValueError, match="different numbers of images: \\[2, 1\\]"):
        pseudo_targets([[d, d], [d]], [{1: 1}, {1: 1}])
    with pytest.raises(ValueError, match="1 class mappings for 2 teachers"):
        pseudo_targets([[d], [d]], [{1: 1}])
    with pytest.raises(ValueError, match="at least one teacher"):
        pseudo_targets([], [])


def test_merge_with_ground_truth_replace_union_and_unlabeled() -> None:
    pseudo = [_det([A, [50, 50, 60, 60], B], [0.8, 0.7, 0.9], [1, 1, 2])] * 2
    gt = {"boxes": torch.tensor([B]), "labels": torch.tensor([1]), "image_id": 7, "labeled": True}
    unlabeled = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "labeled": False}
    rep = merge_with_ground_truth(pseudo, [gt, unlabeled], mode="replace")
    assert rep[0]["boxes"].tolist() == [B] and rep[0]["scores"].tolist() == [1.0] and rep[0]["image_id"] == 7
    assert rep[1]["labels"].tolist() == [1, 1, 2]  # unlabeled image keeps its pseudo labels
    uni = merge_with_ground_truth(pseudo, [gt, unlabeled], mode="union")
    # Pseudo A duplicates gt B (same class, IoU 0.68) and is dropped; the far box and the class-2
    # box are added after the ground truth.
    assert uni[0]["boxes"].tolist() == [B, [50, 50, 60, 60], B]
    assert uni[0]["labels"].tolist() == [1, 1, 2]
    assert uni[0]["scores"].tolist() == pytest.approx([1.0, 0.7, 0.9])
    with pytest.raises(ValueError, match="unknown mode 'mix'"):
        merge_with_ground_truth(pseudo, [gt, gt], mode="mix")  # type: ignore[arg-type]
