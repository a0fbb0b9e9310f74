"""Shared fixtures: tiny models, a tiny synthetic COCO dataset, single-threaded torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
