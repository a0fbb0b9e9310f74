"""Tests of the COCO dataset, letterbox transform, subsets and the resumable loader."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from curriculum_search.data import (
    CocoDetection,
    FixedVariant,
    SyntheticConfig,
    SyntheticPaths,
    TransformConfig,
    boxes_to_original,
    collate_detection,
    ensure_synthetic,
    infinite_batches,
    labeled_fraction,
    make_loader,
    subset,
)
from curriculum_search.errors import DataError

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    cfg = SyntheticConfig(num_train=12, num_val=2, num_unlabeled=3, image_size=64, seed=3)
    return ensure_synthetic(cfg, tmp_path_factory.mktemp("cache"))


def _write_coco(tmp_path: Path, data: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path


def _gradient_image(path: Path, w: int, h: int) -> None:
    xs = np.linspace(0, 255, w)[None, :, None]
    ys = np.linspace(0, 255, h)[:, None, None]
    arr = np.concatenate(
        [np.broadcast_to(xs, (h, w, 1)), np.broadcast_to(ys, (h, w, 1)), np.full((h, w, 1), 40)], 2
    )
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _small_coco(tmp_path: Path) -> dict[str, Any]:
    """Two 80x40 images (one annotated with 2 boxes, one without annotations)."""
    for name in ("a.png", "b.png"):
        _gradient_image(tmp_path / name, 80, 40)
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 80, "height": 40},
            {"id": 2, "file_name": "b.png", "width": 80, "height": 40},
        ],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 15], "iscrowd": 0},
            {"id": 8, "image_id": 1, "category_id": 5, "bbox": [40, 0, 40, 40], "iscrowd": 0},
        ],
        "categories": [{"id": 5, "name": "square"}, {"id": 3, "name": "circle"}],
    }


# ---------------------------------------------------------------------- round trip
def test_synthetic_round_trip_matches_json(shapes: SyntheticPaths) -> None:
    ds = CocoDetection(shapes.train_images, shapes.train_ann, TransformConfig(image_size=96))
    ann = json.loads(shapes.train_ann.read_text())
    assert len(ds) == 12 and ds.ids == list(range(1, 13))
    assert ds.class_names == tuple(c["name"] for c in ann["categories"])
    assert ds.label_to_cat_id == {k: k for k in range(1, 7)}
    for i in range(len(ds)):
        image, target = ds[i]
        expected = [a for a in ann["annotations"] if a["image_id"] == ds.ids[i]]
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in expected)])
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert target["scale"] == 1.5 and target["orig_size"] == (64, 64)
        assert target["labeled"] is True and target["index"] == i and target["variant"] == 0
        torch.testing.assert_close(target["boxes"], xyxy * 1.5)
        assert target["labels"].tolist() == [a["category_id"] for a in expected]
        assert target["labels"].dtype == torch.int64
    assert ds.cacheable and ds.num_variants == 1 and ds.dropped_boxes == 0


def test_non_square_letterbox_pixels_boxes_and_inverse(tmp_path: Path) -> None:
    ann = _write_coco(tmp_path, _small_coco(tmp_path))
    ds = CocoDetection(tmp_path, ann, TransformConfig(image_size=64))
    image, target = ds.get(0)
    # 80x40 -> 64x32: scale 0.8, content in rows 0..31, padding normalises to exactly 0
    assert target["scale"] == pytest.approx(0.8) and target["orig_size"] == (40, 80)
    assert torch.count_nonzero(image[:, 32:, :]) == 0
    # class_names default to categories sorted by id: circle (id 3) = 1, square (id 5) = 2
    assert ds.class_names == ("circle", "square") and target["labels"].tolist() == [1, 2]
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[8.0, 4.0, 24.0, 16.0], [32.0, 0.0, 64.0, 32.0]])
    )
    with Image.open(tmp_path / "a.png") as im:
        top_left = im.convert("RGB").resize((64, 32), Image.Resampling.BILINEAR)
    expected = (torch.from_numpy(np.asarray(top_left, dtype=np.float32) / 255).permute(2, 0, 1) - MEAN) / STD
    torch.testing.assert_close(image[:, :32, :], expected)
    back = boxes_to_original(target["boxes"], target["scale"], target["orig_size"])
    torch.testing.assert_close(back, torch.tensor([[10.0, 5.0, 30.0, 20.0], [40.0, 0.0, 80.0, 40.0]]))


def test_hflip_variant_mirrors_boxes_and_pixels(tmp_path: Path) -> None:
    ann = _write_coco(tmp_path, _small_coco(tmp_path))
    ds = CocoDetection(tmp_path, ann, TransformConfig(image_size=64, hflip=True))
    assert ds.num_variants == 2 and ds.cacheable
    plain, _ = ds.get(0, 0)
    flipped, t1 = ds.get(0, 1)
    assert t1["variant"] == 1
    # content is 64 px wide: x1' = 64 - x2, x2' = 64 - x1
    torch.testing.assert_close(t1["boxes"], torch.tensor([[40.0, 4.0, 56.0, 16.0], [0.0, 0.0, 32.0, 32.0]]))
    torch.testing.assert_close(flipped[:, :32, :], plain[:, :32, :].flip(-1), atol=2 / 255 / 0.224, rtol=0)
    assert torch.count_nonzero(flipped[:, 32:, :]) == 0
    with pytest.raises(ValueError, match="variant 2"):
        ds.get(0, 2)
    mirrored = FixedVariant(subset(ds, 1, seed=0), variant=1)  # subset of one item: index 0 or 1
    image, target = mirrored[0]
    torch.testing.assert_close(image, ds.get(target["index"], 1)[0])
    assert len(mirrored) == 1 and target["variant"] == 1


def test_variant_draws_depend_on_seed_epoch_and_index(shapes: SyntheticPaths) -> None:
    tf = TransformConfig(image_size=64, hflip=True)
    ds = CocoDetection(shapes.train_images, shapes.train_ann, tf, seed=5)
    again = CocoDetection(shapes.train_images, shapes.train_ann, tf, seed=5)
    draws = [[ds.draw_variant(i) for i in range(12)] for ds.epoch in range(4)]
    assert draws == [[again.draw_variant(i) for i in range(12)] for again.epoch in range(4)]
    assert {v for row in draws for v in row} == {0, 1} and draws[0] != draws[1]
    ds.set_epoch(2)
    image, target = ds[4]
    assert target["variant"] == draws[2][4]
    torch.testing.assert_close(image, ds.get(4, draws[2][4])[0])


def test_color_jitter_is_not_cacheable_but_seeded(shapes: SyntheticPaths) -> None:
    tf = TransformConfig(image_size=64, color_jitter=0.4)
    assert not tf.cacheable and tf.fingerprint != TransformConfig(image_size=64).fingerprint
    ds = CocoDetection(shapes.train_images, shapes.train_ann, tf)
    a, b = ds[0][0], ds[0][0]
    torch.testing.assert_close(a, b)
    ds.set_epoch(1)
    assert not torch.allclose(ds[0][0], a)


# ---------------------------------------------------------------------- unlabeled images
def test_unlabeled_json_images_and_folder(shapes: SyntheticPaths, tmp_path: Path) -> None:
    ann = _write_coco(tmp_path, _small_coco(tmp_path))
    ds = CocoDetection(tmp_path, ann, TransformConfig(image_size=64), unlabeled_dir=shapes.unlabeled_dir)
    assert ds.ids == [1, 2, -1, -2, -3]
    assert [ds.is_labeled(i) for i in range(5)] == [True, False, False, False, False]
    assert ds.labeled_indices() == [0]
    image, target = ds[1]
    assert target["labeled"] is False and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    image, target = ds[3]
    assert target["image_id"] == -2 and target["orig_size"] == (64, 64) and target["boxes"].shape == (0, 4)
    assert image.shape == (3, 64, 64)
    only_labeled = CocoDetection(tmp_path, ann, TransformConfig(image_size=64), include_unlabeled=False)
    assert only_labeled.ids == [1]
    assert only_labeled.fingerprint != ds.fingerprint
    with pytest.raises(ValueError, match="unlabeled_dir"):
        CocoDetection(tmp_path, ann, TransformConfig(), include_unlabeled=False, unlabeled_dir=tmp_path)


def test_class_names_select_and_order_labels(tmp_path: Path) -> None:
    ann = _write_coco(tmp_path, _small_coco(tmp_path))
    ds = CocoDetection(tmp_path, ann, TransformConfig(image_size=64), class_names=["square"])
    assert ds.label_to_cat_id == {1: 5} and ds.cat_id_to_label == {5: 1}
    target = ds[0][1]
    assert target["labels"].tolist() == [1]
    torch.testing.assert_close(target["boxes"], torch.tensor([[32.0, 0.0, 64.0, 32.0]]))
    assert [c["name"] for c in ds.coco.loadCats(ds.coco.getCatIds())] == ["square"]
    assert len(ds.coco.getAnnIds()) == 1
    default = CocoDetection(tmp_path, ann, TransformConfig(image_size=64))
    assert default.fingerprint != ds.fingerprint
    assert default.fingerprint == CocoDetection(tmp_path, ann, TransformConfig(image_size=64)).fingerprint


# ---------------------------------------------------------------------- bad input
def _break(data: dict[str, Any], case: str, tmp_path: Path) -> Any:
    if case == "malformed":
        return '{"images": [\n  {"id": 1,, "file_name": "a.png"}]}'
    if case == "no_categories":
        del data["categories"]
    if case == "images_not_list":
        data["images"] = {"id": 1}
    if case == "missing_image_id":
        data["annotations"][1]["image_id"] = 99
    if case == "missing_category":
        data["annotations"][0]["category_id"] = 42
    if case == "missing_file":
        data["images"][1]["file_name"] = "ghost.png"
    if case == "bad_bbox":
        data["annotations"][1]["bbox"] = [1, 2, "wide", 4]
    if case == "duplicate_image":
        data["images"][1]["id"] = 1
    return data


@pytest.mark.parametrize(
    ("case", "pieces"),
    [
        ("malformed", ["line 2, column 12", "malformed JSON"]),
        ("no_categories", ["categories", "missing required key"]),
        ("images_not_list", ["images", "expected a list, got dict"]),
        ("missing_image_id", ["annotations[1] (id 8)", "image_id 99 not in images"]),
        ("missing_category", ["annotations[0] (id 7)", "category_id 42 not in categories"]),
        ("missing_file", ["images[1] (id 2)", "ghost.png", "not found"]),
        ("bad_bbox", ["annotations[1] (id 8).bbox", "'wide'"]),
        ("duplicate_image", ["images[1]", "duplicate id 1"]),
    ],
)
def test_bad_annotation_files_raise_one_line_data_errors(
    tmp_path: Path, case: str, pieces: list[str]
) -> None:
    ann = _write_coco(tmp_path, _break(_small_coco(tmp_path), case, tmp_path), name="broken.json")
    with pytest.raises(DataError) as info:
        CocoDetection(tmp_path, ann, TransformConfig(image_size=64))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(ann))
    for piece in pieces:
        assert piece in message


def test_missing_annotation_file_and_unknown_class(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.json: annotation file not found"):
        CocoDetection(tmp_path, tmp_path / "nope.json", TransformConfig())
    ann = _write_coco(tmp_path, _small_coco(tmp_path))
    with pytest.raises(
        DataError, match=r"ann\.json: categories: class 'dog' not found \(available: circle, square\)"
    ):
        CocoDetection(tmp_path, ann, TransformConfig(), class_names=["circle", "dog"])
    with pytest.raises(DataError, match=r"unlabeled image folder not found"):
        CocoDetection(tmp_path, ann, TransformConfig(), unlabeled_dir=tmp_path / "nowhere")


def test_image_size_mismatch_is_reported_on_load(tmp_path: Path) -> None:
    data = _small_coco(tmp_path)
    data["images"][0]["width"] = 81
    ds = CocoDetection(tmp_path, _write_coco(tmp_path, data), TransformConfig())
    with pytest.raises(DataError, match=r"image id 1: a.png is 80x40 px but the JSON says 81x40"):
        ds[0]


# ---------------------------------------------------------------------- degenerate boxes
def test_degenerate_and_outside_boxes_dropped_with_one_warning(tmp_path: Path) -> None:
    data = _small_coco(tmp_path)
    data["annotations"] += [
        {"id": 20, "image_id": 1, "category_id": 3, "bbox": [5, 5, 0.5, 10]},  # too thin
        {"id": 21, "image_id": 1, "category_id": 3, "bbox": [100, 5, 10, 10]},  # entirely outside
        {"id": 22, "image_id": 1, "category_id": 3, "bbox": [70, -5, 20, 15]},  # clipped to [70,0,80,10]
        {"id": 23, "image_id": 1, "category_id": 3, "bbox": [79.5, 5, 10, 10]},  # 0.5 px wide after clipping
        {"id": 24, "image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},  # crowd: ignored
    ]
    ann = _write_coco(tmp_path, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(tmp_path, ann, TransformConfig(image_size=80))
    messages = [str(w.message) for w in caught if "ann.json" in str(w.message)]
    assert messages == [
        "ann.json: dropped 3 degenerate or out-of-image boxes (ids 20, 21, 23); clipped 1 boxes to the image"
    ]
    assert ds.dropped_boxes == 3 and ds.dropped_box_ids == (20, 21, 23) and ds.clipped_boxes == 1
    target = ds[0][1]
    torch.testing.assert_close(
        target["boxes"],
        torch.tensor([[10.0, 5.0, 30.0, 20.0], [40.0, 0.0, 80.0, 40.0], [70.0, 0.0, 80.0, 10.0]]),
    )
    # the crowd-only image counts as labeled, with no target boxes; crowd stays in `coco` for COCOeval
    assert ds[1][1]["labeled"] is True and ds[1][1]["boxes"].shape == (0, 4)
    assert sorted(ds.coco.getAnnIds()) == [7, 8, 22, 24]
    assert ds.coco.anns[22]["bbox"] == [70.0, 0.0, 10.0, 10.0] and ds.coco.anns[24]["iscrowd"] == 1


# ---------------------------------------------------------------------- subsets
def test_subset_is_seeded_sorted_and_stable(shapes: SyntheticPaths) -> None:
    ds = CocoDetection(shapes.train_images, shapes.train_ann, TransformConfig(image_size=64))
    a = subset(ds, 5, seed=1)
    assert list(a.indices) == sorted(a.indices) and len(set(a.indices)) == 5
    assert list(a.indices) == list(subset(ds, 5, seed=1).indices)
    assert list(a.indices) == sorted(int(i) for i in np.random.default_rng(1).permutation(12)[:5])
    assert list(a.indices) != list(subset(ds, 5, seed=2).indices)
    assert len(subset(ds, 0.5, seed=1)) == 6
    assert list(subset(ds, 12, seed=1).indices) == list(range(12))
    assert list(subset(ds, 1000, seed=1).indices) == list(range(12))
    with pytest.raises(ValueError):
        subset(ds, 1.5, seed=1)
    with pytest.raises(ValueError):
        subset(ds, 0, seed=1)


def test_labeled_fraction_only_takes_labeled_items(shapes: SyntheticPaths) -> None:
    ds = CocoDetection(
        shapes.train_images,
        shapes.train_ann,
        TransformConfig(image_size=64),
        unlabeled_dir=shapes.unlabeled_dir,
    )
    assert len(ds) == 15 and ds.labeled_indices() == list(range(12))
    part = labeled_fraction(ds, 0.25, seed=0)
    assert len(part) == 3 and all(i < 12 for i in part.indices)
    assert all(part[k][1]["labeled"] for k in range(3))
    # through a Subset: positions refer to the subset, only its labeled items are candidates
    inner = subset(ds, 8, seed=4)
    nested = labeled_fraction(inner, 1.0, seed=0)
    assert [inner.indices[i] for i in nested.indices] == [i for i in inner.indices if i < 12]


# ---------------------------------------------------------------------- loader
def _batches(stream: Any, count: int) -> list[tuple[torch.Tensor, list[dict[str, Any]]]]:
    return [next(stream) for _ in range(count)]


def test_collate_stacks_images_and_keeps_targets(shapes: SyntheticPaths) -> None:
    ds = CocoDetection(shapes.train_images, shapes.train_ann, TransformConfig(image_size=64))
    images, targets = collate_detection([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 3, 64, 64) and [t["index"] for t in targets] == [0, 1, 2]


def test_loader_epochs_cover_everything_in_a_seeded_order(shapes: SyntheticPaths) -> None:
    ds = CocoDetection(shapes.train_images, shapes.train_ann, TransformConfig(image_size=64, hflip=True))
    loader = make_loader(subset(ds, 10, seed=0), batch_size=4, shuffle=True, seed=1)
    assert len(loader) == 3
    stream = infinite_batches(loader)
    epochs = [[t["index"] for b in _batches(stream, 3) for t in b[1]] for _ in range(2)]
    kept = sorted(subset(ds, 10, seed=0).indices)
    assert sorted(epochs[0]) == kept and sorted(epochs[1]) == kept and epochs[0] != epochs[1]
    assert len(make_loader(ds, batch_size=5, shuffle=False, seed=0, drop_last=True)) == 2


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resumed_stream_equals_uninterrupted_stream(shapes: SyntheticPaths, num_workers: int) -> None:
    def build() -> torch.utils.data.DataLoader[Any]:
        ds = CocoDetection(
            shapes.train_images, shapes.train_ann, TransformConfig(image_size=64, hflip=True), seed=9
        )
        return make_loader(
            subset(ds, 10, seed=2), batch_size=4, shuffle=True, seed=5, num_workers=num_workers
        )

    full = _batches(infinite_batches(build()), 8)  # 3 batches per epoch: crosses two epoch boundaries
    resumed = _batches(infinite_batches(build(), start_step=4), 4)  # a new process resuming at step 4
    for (img_a, tgt_a), (img_b, tgt_b) in zip(full[4:], resumed):
        torch.testing.assert_close(img_a, img_b)
        assert [(t["index"], t["variant"]) for t in tgt_a] == [(t["index"], t["variant"]) for t in tgt_b]
        for ta, tb in zip(tgt_a, tgt_b):
            torch.testing.assert_close(ta["boxes"], tb["boxes"])
    variants = {t["variant"] for _, tgts in full for t in tgts}
    assert variants == {0, 1}
