"""Tests of the synthetic shapes generator: validity, determinism, caching, interrupted writes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curriculum_search.data import synthetic
from curriculum_search.data.synthetic import (
    MARKER,
    SyntheticConfig,
    ensure_synthetic,
    render_image,
    visibility,
)
from curriculum_search.errors import ConfigError
from curriculum_search.utils.config import from_dict

TINY = SyntheticConfig(num_train=6, num_val=3, num_unlabeled=2, image_size=64, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_annotations_are_valid_coco(tmp_path: Path) -> None:
    paths = ensure_synthetic(TINY, tmp_path)
    assert paths.root.name == f"shapes-{TINY.cache_key}"
    assert (paths.root / MARKER).is_file()
    assert paths.unlabeled_dir is not None
    assert sorted(p.name for p in paths.unlabeled_dir.iterdir()) == ["000000.png", "000001.png"]
    train = json.loads(paths.train_ann.read_text())
    val = json.loads(paths.val_ann.read_text())
    assert len(train["images"]) == 6 and len(val["images"]) == 3
    assert [c["id"] for c in train["categories"]] == [1, 2, 3, 4, 5, 6]
    assert [c["name"] for c in train["categories"]] == list(TINY.classes)
    assert [a["id"] for a in train["annotations"]] == list(range(1, len(train["annotations"]) + 1))
    for img in train["images"]:
        with Image.open(paths.train_images / img["file_name"]) as im:
            assert im.size == (64, 64)
        # the last shape drawn is never occluded, so every image has at least one annotation
        assert any(a["image_id"] == img["id"] for a in train["annotations"])
    for ann in train["annotations"] + val["annotations"]:
        x, y, w, h = ann["bbox"]
        assert min(x, y) >= 0 and x + w <= 64 and y + h <= 64
        assert w > 1 and h > 1 and 0 < ann["area"] <= w * h
        assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 6
        # extent is between min_size and max_size of the image side (tight box of the shape)
        assert max(w, h) <= 0.4 * 64 + 1


def test_same_config_is_byte_identical_and_seed_changes_it(tmp_path: Path) -> None:
    a = ensure_synthetic(TINY, tmp_path / "a")
    b = ensure_synthetic(TINY, tmp_path / "b")
    assert _files(a.root) == _files(b.root)
    other = SyntheticConfig(num_train=6, num_val=3, num_unlabeled=2, image_size=64, seed=8)
    c = ensure_synthetic(other, tmp_path / "a")
    assert c.root != a.root
    assert c.train_ann.read_bytes() != a.train_ann.read_bytes()


def test_second_call_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_synthetic(TINY, tmp_path)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(synthetic, "generate_synthetic", boom)
    assert ensure_synthetic(TINY, tmp_path) == first


def test_interrupted_generation_is_redone(tmp_path: Path) -> None:
    cfg = SyntheticConfig(num_train=2, num_val=1, image_size=32, seed=1)
    root = tmp_path / f"shapes-{cfg.cache_key}"
    (root / "train").mkdir(parents=True)
    (root / "train" / "000000.png").write_bytes(b"half a png")  # killed before the marker was written
    stale = tmp_path / f".{root.name}.tmp-{socket.gethostname()}-999999999"
    stale.mkdir()
    paths = ensure_synthetic(cfg, tmp_path)
    assert paths.root == root and (root / MARKER).is_file()
    with Image.open(root / "train" / "000000.png") as im:
        im.verify()
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no temporary folder left behind
    assert paths.unlabeled_dir is None


def test_visibility_of_stacked_masks() -> None:
    a = np.zeros((10, 10), dtype=bool)
    a[0:10, 0:10] = True  # 100 px
    b = np.zeros((10, 10), dtype=bool)
    b[0:9, 0:10] = True  # covers 90 px of a
    c = np.zeros((10, 10), dtype=bool)
    c[0:2, 0:5] = True  # covers 10 px of b
    assert visibility([a, b, c]) == pytest.approx([0.1, 80 / 90, 1.0])


def test_heavily_occluded_objects_are_not_annotated() -> None:
    cfg = SyntheticConfig(image_size=32, min_objects=6, max_objects=6, min_size=0.85, max_size=0.9, noise=0.0)
    counts = [len(render_image(cfg, np.random.default_rng([0, i]))[1]) for i in range(8)]
    # six near-full-image shapes on top of each other: most of the early ones are hidden
    assert all(1 <= n < 6 for n in counts)


def test_circle_boxes_are_tight_squares() -> None:
    cfg = SyntheticConfig(image_size=64, classes=("circle",), min_objects=1, max_objects=1, noise=0.0)
    for i in range(5):
        image, anns = render_image(cfg, np.random.default_rng(i))
        (ann,) = anns
        _, _, w, h = ann["bbox"]
        assert abs(w - h) <= 0.5
        assert ann["area"] == pytest.approx(np.pi * w * h / 4, rel=0.15)
        assert image.size == (64, 64)


def test_config_is_validated_with_field_names() -> None:
    with pytest.raises(ConfigError, match=r"data.yaml: classes: unknown shape \['hexagon'\]"):
        from_dict(SyntheticConfig, {"classes": ["circle", "hexagon"]}, path="data.yaml")
    with pytest.raises(ConfigError, match="max_objects: must be >= min_objects"):
        from_dict(SyntheticConfig, {"min_objects": 4, "max_objects": 2}, path="data.yaml")
    assert from_dict(SyntheticConfig, {"classes": ["ring"]}).classes == ("ring",)
