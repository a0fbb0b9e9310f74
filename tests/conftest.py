"""Shared fixtures: tiny models, a tiny synthetic COCO dataset, single-threaded torch (the plain
helpers they are built on are in ``helpers.py``)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pycocotools.coco import COCO

from tests.helpers import ANNOTATIONS, IMAGES, STUDENT, SYNTHETIC, postgres_server, save_teacher

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

TINY_SWIN = {"window_size": 4, "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory: pytest.TempPathFactory):
    """A 64 px synthetic shapes dataset (generated once per test session)."""
    from curriculum_search.data import SyntheticConfig, ensure_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    cfg = SyntheticConfig(num_train=48, num_val=16, num_unlabeled=8, image_size=64, seed=3)
    return ensure_synthetic(cfg, root)


@pytest.fixture()
def studies_dir(tmp_path: Path) -> Path:
    d = tmp_path / "studies"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def teacher_ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init FCOS teacher checkpoint on the synthetic classes (``helpers.save_teacher``),
    saved once per test module; its backbone is the module's ``TEACHER_BACKBONE`` if it sets one."""
    backbone = getattr(request.module, "TEACHER_BACKBONE", STUDENT["backbone"])
    return save_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt", backbone=backbone)


@pytest.fixture(scope="module")
def coco_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small COCO dataset on disk (synthetic shapes: 8 train, 4 val images of 64 px)."""
    from curriculum_search.data import SyntheticConfig, ensure_synthetic

    root = tmp_path_factory.mktemp("coco")
    paths = ensure_synthetic(SyntheticConfig(**SYNTHETIC), root)
    out = root / "coco"
    shutil.copytree(paths.train_images, out / "train")
    shutil.copytree(paths.val_images, out / "val")
    shutil.copy(paths.train_ann, out / "train.json")
    shutil.copy(paths.val_ann, out / "val.json")
    return out


@pytest.fixture
def coco(tmp_path: Path) -> COCO:
    """The hand-made ground truth of ``helpers.IMAGES``/``helpers.ANNOTATIONS`` (for ``FakeDataset``)."""
    gt = {
        "images": [{"id": i, "width": w, "height": h, "file_name": f"{i}.png"} for i, w, h in IMAGES],
        "categories": [{"id": 3, "name": "circle"}, {"id": 7, "name": "square"}],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (i, c, b) in enumerate(ANNOTATIONS)
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (trust authentication) for the test module."""
    pytest.importorskip("psycopg", reason="psycopg not installed (test extra)")
    with postgres_server("cs-pg-", "--auth=trust") as url:
        yield url


# Tests that train a real (tiny) study or start several processes are `slow`; a development loop
# can skip them with `python -m pytest -m "not slow"`. CI runs everything.
_SLOW_MODULES = {
    "test_search",
    "test_selection",
    "test_soak",
    "test_ddp",
    "test_concurrency",
    "test_postgres",
}
_SLOW_FIXTURES = {"real_studies"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module in _SLOW_MODULES or _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
