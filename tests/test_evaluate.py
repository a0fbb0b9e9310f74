from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO
from torch.utils.data import Subset

from curriculum_search.engine.evaluate import (
    EvalResult,
    detections_to_coco,
    evaluate,
    evaluate_detections,
)
from curriculum_search.errors import UserError
from tests.helpers import ANNOTATIONS, LABEL_TO_CAT, FakeDataset, FakeModel


@pytest.fixture
def dataset(coco: COCO) -> FakeDataset:
    return FakeDataset(coco, {11: True, 12: True, 13: True})


def test_perfect_detections_give_ap_one(dataset: FakeDataset) -> None:
    result = evaluate(FakeModel(dataset), dataset, batch_size=2)
    assert result.ap == pytest.approx(1.0, abs=1e-6)
    assert result.ap50 == pytest.approx(1.0, abs=1e-6)
    assert result.ap75 == pytest.approx(1.0, abs=1e-6)
    assert result.ar100 == pytest.approx(1.0, abs=1e-6)
    assert result.aps == pytest.approx(1.0, abs=1e-6)  # 20x30 and 15x20 boxes of image 13
    assert result.apm == pytest.approx(1.0, abs=1e-6)
    assert result.apl == -1.0  # no large ground truth: undefined, as in pycocotools
    assert (result.num_images, result.num_detections) == (3, 5)


def test_shifted_detections_give_low_ap(dataset: FakeDataset) -> None:
    # Shifted by half the width: IoU = 0.5 / 1.5 = 1/3 < 0.5 for every box.
    result = evaluate(FakeModel(dataset, shift=0.5), dataset)
    assert result.ap < 0.5
    assert result.ap == pytest.approx(0.0, abs=1e-6)
    assert result.num_detections == 5


def test_slightly_shifted_detections_pass_only_loose_thresholds(dataset: FakeDataset) -> None:
    # shift 0.2 width: IoU = 0.8 / 1.2 = 2/3 -> matched at IoU 0.50..0.65 (4 of 10 thresholds).
    result = evaluate(FakeModel(dataset, shift=0.2), dataset)
    assert result.ap50 == pytest.approx(1.0, abs=1e-6)
    assert result.ap75 == pytest.approx(0.0, abs=1e-6)
    assert result.ap == pytest.approx(0.4, abs=1e-6)


def test_no_detections_give_zero(dataset: FakeDataset, tmp_path: Path) -> None:
    result = evaluate(FakeModel(dataset, empty=True), dataset, results_file=tmp_path / "r.json")
    assert result.ap == 0.0
    assert result.ar100 == 0.0
    assert result.num_detections == 0
    assert json.loads((tmp_path / "r.json").read_text()) == []


def test_unlabeled_images_are_skipped(coco: COCO) -> None:
    ds = FakeDataset(coco, {11: True, 12: True, 13: True, 14: False})
    model = FakeModel(ds)
    result = evaluate(model, ds, batch_size=3)
    # Image 14 has ground truth in `coco`; evaluating it would leave it unmatched (AP < 1).
    assert result.ap == pytest.approx(1.0, abs=1e-6)
    assert result.num_images == 3
    assert sorted(model.seen) == [0, 1, 2]


def test_only_unlabeled_images_is_a_user_error(coco: COCO) -> None:
    ds = FakeDataset(coco, {14: False})
    with pytest.raises(UserError, match="no labeled images"):
        evaluate(FakeModel(ds), ds)


def test_subset_restricts_evaluation(dataset: FakeDataset) -> None:
    model = FakeModel(dataset)
    result = evaluate(model, Subset(dataset, [0, 2]))
    # Image 12 is not evaluated: were it counted, its unmatched box would lower AP.
    assert result.ap == pytest.approx(1.0, abs=1e-6)
    assert (result.num_images, result.num_detections) == (2, 4)
    assert sorted(model.seen) == [0, 2]

    nested = evaluate(FakeModel(dataset), Subset(Subset(dataset, [1, 2]), [0]))
    assert (nested.num_images, nested.num_detections) == (1, 1)


def test_max_images(dataset: FakeDataset) -> None:
    model = FakeModel(dataset)
    result = evaluate(model, dataset, batch_size=1, max_images=2)
    assert result.num_images == 2
    assert sorted(model.seen) == [0, 1]
    assert result.ap == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="max_images"):
        evaluate(model, dataset, max_images=0)


def test_eval_mode_inference_mode_and_restore(dataset: FakeDataset) -> None:
    model = FakeModel(dataset)
    model.train()
    model.conv.eval()  # a submodule deliberately frozen in eval mode stays so
    evaluate(model, dataset, batch_size=2)
    assert model.modes == [(False, True), (False, True)]
    assert model.training is True
    assert model.conv.training is False


def test_results_file_loadable_by_coco(dataset: FakeDataset, tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    result = evaluate(FakeModel(dataset), dataset, results_file=path)
    with contextlib.redirect_stdout(io.StringIO()):
        res = dataset.coco.loadRes(str(path))
    anns = res.loadAnns(res.getAnnIds())
    assert len(anns) == result.num_detections == 5
    assert {a["category_id"] for a in anns} == {3, 7}
    gt = {(a["image_id"], a["category_id"]): a["bbox"] for a in dataset.coco.loadAnns([3])}
    det = [a for a in anns if a["image_id"] == 12]
    assert det[0]["bbox"] == pytest.approx(gt[(12, 7)], abs=1e-4)
    assert det[0]["score"] == 1.0


def test_detections_to_coco_by_hand() -> None:
    detections = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 30.0, 45.0], [50.0, 0.0, 70.0, 10.0]]),
            "scores": torch.tensor([0.9, 0.4]),
            "labels": torch.tensor([2, 1]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    targets = [
        {"image_id": 5, "scale": 0.5, "orig_size": (100, 120)},
        {"image_id": 6, "scale": 1.0, "orig_size": (10, 10)},
    ]
    out = detections_to_coco(detections, targets, LABEL_TO_CAT)
    assert out == [
        {"image_id": 5, "category_id": 7, "bbox": [20.0, 40.0, 40.0, 50.0], "score": pytest.approx(0.9)},
        # x2 = 140 is clipped to the original width 120
        {"image_id": 5, "category_id": 3, "bbox": [100.0, 0.0, 20.0, 20.0], "score": pytest.approx(0.4)},
    ]
    with pytest.raises(ValueError, match="label 9"):
        detections_to_coco(
            [{"boxes": torch.ones(1, 4), "scores": torch.ones(1), "labels": torch.tensor([9])}],
            targets[:1],
            LABEL_TO_CAT,
        )


def test_evaluate_detections_pure(coco: COCO) -> None:
    perfect = [
        {"image_id": i, "category_id": c, "bbox": list(b), "score": 1.0} for i, c, b in ANNOTATIONS if i == 12
    ]
    stray = {"image_id": 11, "category_id": 3, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5}
    results = [*perfect, stray]
    snapshot = json.dumps(results)
    out = evaluate_detections(coco, results, [12])
    assert isinstance(out, EvalResult)
    assert out.ap == pytest.approx(1.0, abs=1e-6)
    assert (out.num_images, out.num_detections) == (1, 1)  # the detection on image 11 is dropped
    assert json.dumps(results) == snapshot  # loadRes mutates its input; ours must not be
    assert set(out.as_dict()) == {
        "ap",
        "ap50",
        "ap75",
        "aps",
        "apm",
        "apl",
        "ar100",
        "num_images",
        "num_detections",
    }

    empty = evaluate_detections(coco, [], [11, 12])
    assert (empty.ap, empty.ap50, empty.ar100, empty.num_detections) == (0.0, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="not in the ground-truth"):
        evaluate_detections(coco, [], [99])
    with pytest.raises(ValueError, match="empty"):
        evaluate_detections(coco, [], [])
