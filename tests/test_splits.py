"""The selection and report splits: a seeded holdout carved out of training (synthetic / COCO
without a test set) or val/test (COCO with a test set); validation of the selection block."""

from __future__ import annotations

from pathlib import Path

import pytest

from curriculum_search.curriculum.datasets import build_datasets
from curriculum_search.curriculum.recipe import DataConfig
from curriculum_search.errors import ConfigError
from curriculum_search.search.space import load_space
from curriculum_search.utils.config import FieldError
from tests.helpers import write_space


def test_selection_settings_are_validated(tmp_path: Path):
    for block, field in (
        ({"rungs": [0.5]}, "selection.rungs"),
        ({"rungs": [1.0], "seeds": [1]}, "selection.seeds"),
        ({"rungs": [0.5, 1.0], "seeds": [2]}, "selection.seeds"),
        ({"confidence": 1.0}, "selection.confidence"),
        ({"margin": -0.1}, "selection.margin"),
        ({"shortlist": -1}, "selection.shortlist"),
    ):
        with pytest.raises(ConfigError, match=field):
            load_space(write_space(tmp_path, selection=block))


def test_selection_and_report_splits_are_disjoint(tmp_path: Path):
    space = load_space(write_space(tmp_path))
    sel, rep = space.split_data("selection"), space.split_data("report")
    root = tmp_path / "studies"
    kw = {"class_names": None, "cache_root": root / "_cache", "base_dir": root}
    d_sel, d_rep = build_datasets(sel, **kw), build_datasets(rep, **kw)
    base = d_sel.train_base
    train_ids = {base.ids[i] for i in _positions(d_sel.train)}
    sel_ids = {img for img in _ids(d_sel.val)}
    rep_ids = {img for img in _ids(d_rep.val)}
    assert sel_ids and rep_ids
    assert not sel_ids & train_ids  # the selection split is never trained on
    assert sel_ids <= set(base.ids)  # ... and carved out of the training images
    assert d_rep.val.ann_file != base.ann_file  # the report split is the validation set  # type: ignore[attr-defined]
    assert len(sel_ids) == round(0.25 * len(base.ids))
    assert space.split_names() == ("holdout", "val")


def _positions(ds) -> list[int]:  # type: ignore[no-untyped-def]
    from curriculum_search.data.coco import _base_positions

    return _base_positions(ds)


def _ids(ds) -> list[int]:  # type: ignore[no-untyped-def]
    from curriculum_search.data.coco import base_dataset

    base = base_dataset(ds)
    return [base.ids[i] for i in _positions(ds)]


def test_a_coco_test_set_makes_val_the_selection_split(tmp_path: Path, tiny_synthetic):
    p = tiny_synthetic
    data = {
        "kind": "coco",
        "image_size": 64,
        "train_images": str(p.train_images),
        "train_ann": str(p.train_ann),
        "val_images": str(p.val_images),
        "val_ann": str(p.val_ann),
        "test_images": str(p.val_images),
        "test_ann": str(p.val_ann),
    }
    space = load_space(write_space(tmp_path, data=data))
    assert space.split_names() == ("val", "test")
    sel = space.split_data("selection")
    assert sel.holdout is None  # nothing carved out: the user's validation set selects
    root = tmp_path / "studies"
    kw = {"class_names": None, "cache_root": root / "_cache", "base_dir": root}
    d_sel, d_rep = build_datasets(sel, **kw), build_datasets(space.split_data("report"), **kw)
    assert len(d_sel.train) == len(d_sel.train_base) and len(d_rep.val) == len(_ids(d_rep.val))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"eval_split": "holdout"}, "eval_split"),
        ({"eval_split": "test"}, "eval_split"),
        (
            {
                "kind": "coco",
                "train_images": "a",
                "train_ann": "a",
                "val_images": "a",
                "val_ann": "a",
                "test_images": "t",
            },
            "test_ann",
        ),
        ({"test_images": "t", "test_ann": "t"}, "test_images"),
        ({"holdout": 0.0}, "holdout"),
    ],
)
def test_split_settings_are_validated(fields: dict, field: str):
    with pytest.raises(FieldError) as exc:
        DataConfig(**fields)
    assert exc.value.field == field


def test_holdout_in_the_data_block_points_to_the_selection_block(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"selection\.holdout"):
        load_space(write_space(tmp_path, data={"kind": "synthetic", "image_size": 64, "holdout": 4}))
