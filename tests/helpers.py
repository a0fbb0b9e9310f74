"""Helpers shared by test modules (instead of test files importing each other): plain functions,
constants and test doubles. The fixtures built on them are in ``conftest.py``."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
import yaml
from pycocotools.coco import COCO
from torch import Tensor, nn
from torch.utils.data import Dataset

from benchmarks import pgserver
from curriculum_search.curriculum.recipe import DataConfig, Recipe, Stage, TeacherRef, TrainConfig
from curriculum_search.curriculum.trainer import RunOptions
from curriculum_search.data import SyntheticConfig
from curriculum_search.distill.cache import CacheConfig
from curriculum_search.distill.feature import MGDLoss
from curriculum_search.errors import StudyError
from curriculum_search.models import DetectorSpec, build_detector, save_detector
from curriculum_search.search.options import SearchOptions
from curriculum_search.search.service import open_study
from curriculum_search.search.space import SearchSpace, load_space
from curriculum_search.search.storage import storage_spec

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
#: The smoke-test space shipped with the product (space/tiny.yaml): 64 px, two tiny teachers.
TINY: dict[str, Any] = yaml.safe_load((REPO / "space" / "tiny.yaml").read_text())


def write_space(tmp: Path, **changes: Any) -> Path:
    """``space/tiny.yaml`` with top-level blocks replaced, written to ``tmp/tiny.yaml``."""
    data = json.loads(json.dumps(TINY))
    data.update(changes)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def opts(studies: Path, space_file: Path, **kw: Any) -> SearchOptions:
    """Quiet search options for a tiny study under ``studies``: one trial at a time with one
    thread (tests that want several workers say so), whatever the machine's cores."""
    kw.setdefault("workers", 1)
    return SearchOptions(
        studies_root=studies,
        cache=CacheConfig(root=studies / "_cache" / "teachers"),
        progress=False,
        threads=1,
        space_file=space_file,
        echo=lambda s: None,
        **kw,
    )


def kill_when(proc: subprocess.Popen[bytes], find: Callable[[], T | None], timeout: float = 300) -> T:
    """Poll ``find()`` until it returns something, freeze the process group (SIGSTOP), look again
    (what is seen now is what the kill leaves behind), then SIGKILL the group and wait for it.

    ``proc`` must run in its own session (``start_new_session=True``). ``StudyError`` from
    ``find`` (the database or study does not exist yet) counts as nothing found.
    """
    deadline, found = time.time() + timeout, None
    try:
        while time.time() < deadline and found is None:
            time.sleep(0.3)
            try:
                if find() is None:
                    continue
            except StudyError:
                continue
            os.killpg(proc.pid, signal.SIGSTOP)
            found = find()
            if found is None:
                os.killpg(proc.pid, signal.SIGCONT)
        assert found is not None, "nothing to kill reached the wanted state in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return found


# -- tiny detectors, recipes and datasets (bad input, reliability, security, soak) -----------------------
CLASSES = tuple(SyntheticConfig().classes)
STUDENT: dict[str, Any] = {
    "arch": "fcos",
    "backbone": "mobilenetv3_small_050",
    "num_classes": len(CLASSES),
    "class_names": list(CLASSES),
    "fpn_channels": 16,
    "image_size": 64,
    "head_convs": 1,
}
SYNTHETIC: dict[str, Any] = {"num_train": 8, "num_val": 4, "image_size": 64, "seed": 1}


def teacher_spec(**changes: Any) -> DetectorSpec:
    """A tiny FCOS teacher on the synthetic classes (random init: these tests never need AP)."""
    return DetectorSpec(**{**STUDENT, "class_names": CLASSES, **changes})


def save_teacher(path: Path, **changes: Any) -> Path:
    torch.manual_seed(0)
    save_detector(path, build_detector(teacher_spec(**changes)))
    return path


def recipe_dict(teacher: Path | str | None, **changes: Any) -> dict[str, Any]:
    """A 2-iteration one-teacher recipe on 8 synthetic 64 px images (a few seconds on a CPU)."""
    data: dict[str, Any] = {
        "name": "bad",
        "seed": 0,
        "data": {"kind": "synthetic", "synthetic": dict(SYNTHETIC), "image_size": 64},
        "student": copy.deepcopy(STUDENT),
        "teachers": {"a": {"checkpoint": str(teacher)}} if teacher is not None else {},
        "stages": [
            {"teachers": ["a"], "iterations": 2, "feature": {"loss": "mse"}}
            if teacher is not None
            else {"iterations": 2}
        ],
        "train": {
            "batch_size": 2,
            "warmup_iterations": 1,
            "checkpoint_every": 1,
            "threads": 1,
            "eval_images": 4,
        },
    }
    data.update(changes)
    return data


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def one_line_error(code: int, err: str) -> str:
    """The single ``error: ...`` line of a failed CLI call (asserts status 2 and no traceback)."""
    assert code == 2, f"exit status {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, f"expected exactly one 'error:' line, got:\n{err}"
    return lines[0]


def train_args(recipe: Path, tmp: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--recipe",
        str(recipe),
        "--out",
        str(tmp / "out"),
        "--studies-dir",
        str(tmp / "studies"),
        "--threads",
        "1",
        "-q",
        *extra,
    ]


def run_options(tmp: Path, out: str = "out", **kw: Any) -> RunOptions:
    return RunOptions(
        out_dir=tmp / out,
        cache_root=tmp / "studies" / "_cache",
        base_dir=tmp,
        cache=CacheConfig(enabled=False),
        progress=False,
        **kw,
    )


def copy_coco(src: Path, tmp: Path) -> Path:
    dst = tmp / "coco"
    shutil.copytree(src, dst)
    return dst


def coco_data(root: Path) -> dict[str, Any]:
    return {
        "kind": "coco",
        "train_images": str(root / "train"),
        "train_ann": str(root / "train.json"),
        "val_images": str(root / "val"),
        "val_ann": str(root / "val.json"),
        "image_size": 64,
    }


def checkpoint_teacher_study(tmp: Path, teacher_ckpt: Path) -> tuple[Path, Path, Path, Path]:
    """A study (no trial yet) whose pool is one checkpoint teacher: (teacher, space, studies, db)."""
    teacher = tmp / "t.pt"
    shutil.copy(teacher_ckpt, teacher)
    data: dict[str, Any] = copy.deepcopy(TINY)
    data["teachers"] = {"a": {"checkpoint": str(teacher)}}
    data["search"]["n_stages"] = [1, 1]
    space = write_yaml(tmp / "tiny.yaml", data)
    studies = tmp / "studies"
    spec = storage_spec(studies, "tiny", None)
    open_study(load_space(space), SearchOptions(studies_root=studies, space_file=space), spec)
    assert spec.sqlite_path is not None
    return teacher, space, studies, spec.sqlite_path


# -- the progressive trainer's recipes (trainer, signal) -------------------------------------------------
SYN = SyntheticConfig(num_train=32, num_val=8, num_unlabeled=4, image_size=64, seed=5)


def fcos_spec(backbone: str = "mobilenetv3_small_050", **kw) -> DetectorSpec:
    return DetectorSpec(
        arch="fcos",
        backbone=backbone,
        num_classes=len(CLASSES),
        class_names=CLASSES,
        fpn_channels=16,
        image_size=64,
        head_convs=1,
        **kw,
    )


def two_teacher_recipe(teacher: Path, stages: tuple[Stage, ...], **train_kw) -> Recipe:
    train = dict(batch_size=4, lr=2e-3, warmup_iterations=2, checkpoint_every=2, eval_every=0)
    train.update(train_kw)
    return Recipe(
        name="t",
        student=fcos_spec(),
        data=DataConfig(kind="synthetic", synthetic=SYN, image_size=64),
        teachers={"a": TeacherRef(checkpoint=str(teacher)), "b": TeacherRef(checkpoint=str(teacher))},
        stages=stages,
        train=TrainConfig(**train),
        seed=1,
    )


def cached_run_options(tmp: Path, out: str, cache_root: Path | None = None, **kw) -> RunOptions:
    cache = CacheConfig(root=(cache_root or tmp / "cache") / "teachers")
    return RunOptions(
        out_dir=tmp / out,
        cache_root=cache_root or tmp / "cache",
        base_dir=tmp,
        cache=cache,
        progress=False,
        **kw,
    )


# -- a hand-made evaluation set and a model that answers it (evaluate, signal) ---------------------------
SIZE = 64  # square input size S
LABEL_TO_CAT = {1: 3, 2: 7}  # non-contiguous category ids
CAT_TO_LABEL = {c: lab for lab, c in LABEL_TO_CAT.items()}

# (id, width, height) and annotations (image_id, category_id, [x, y, w, h]) in original pixels;
# no box touches the right/bottom border, so a shifted box is never clipped.
IMAGES = [(11, 200, 100), (12, 150, 150), (13, 60, 80), (14, 100, 100)]
ANNOTATIONS = [
    (11, 3, [20.0, 10.0, 40.0, 30.0]),
    (11, 7, [100.0, 40.0, 50.0, 40.0]),
    (12, 7, [30.0, 30.0, 60.0, 50.0]),
    (13, 3, [5.0, 10.0, 20.0, 30.0]),
    (13, 3, [30.0, 40.0, 15.0, 20.0]),
    (14, 7, [10.0, 10.0, 30.0, 30.0]),  # image 14 is the unlabeled one in `dataset_with_unlabeled`
]


class FakeDataset(Dataset[tuple[Tensor, dict[str, Any]]]):
    """Follows the dataset contract; pixel (0, 0, 0) of each image holds its index."""

    def __init__(self, coco: COCO, labeled: dict[int, bool]) -> None:
        self.coco = coco
        self.label_to_cat_id = dict(LABEL_TO_CAT)
        self.items: list[tuple[Tensor, dict[str, Any]]] = []
        for image_id, w, h in IMAGES:
            if image_id not in labeled:
                continue
            scale = SIZE / max(w, h)  # letterbox: top-left, scale != 1
            anns = [(c, b) for i, c, b in ANNOTATIONS if i == image_id] if labeled[image_id] else []
            boxes = torch.tensor([[x, y, x + bw, y + bh] for _, (x, y, bw, bh) in anns]).reshape(-1, 4)
            image = torch.zeros(3, SIZE, SIZE)
            image[0, 0, 0] = len(self.items)
            target = {
                "boxes": (boxes * scale).float(),
                "labels": torch.tensor([CAT_TO_LABEL[c] for c, _ in anns], dtype=torch.int64),
                "image_id": image_id,
                "index": len(self.items),
                "variant": 0,
                "scale": scale,
                "orig_size": (h, w),
                "labeled": labeled[image_id],
            }
            self.items.append((image, target))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        return self.items[index]


class FakeModel(nn.Module):
    """``detect`` answers the ground truth of each image, shifted right by ``shift`` box widths."""

    def __init__(self, dataset: FakeDataset, shift: float = 0.0, empty: bool = False) -> None:
        super().__init__()
        self.dataset = dataset
        self.shift = shift
        self.empty = empty
        self.conv = nn.Conv2d(3, 4, 1)
        self.seen: list[int] = []
        self.modes: list[tuple[bool, bool]] = []  # (training, inference mode) at each call

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        self.modes.append((self.training or self.conv.training, torch.is_inference_mode_enabled()))
        out = []
        for image in images:
            index = int(image[0, 0, 0])
            self.seen.append(index)
            target = self.dataset[index][1]
            boxes = target["boxes"].clone()
            width = boxes[:, 2] - boxes[:, 0]
            boxes[:, 0] += self.shift * width
            boxes[:, 2] += self.shift * width
            n = 0 if self.empty else len(boxes)
            out.append({"boxes": boxes[:n], "scores": torch.ones(n), "labels": target["labels"][:n]})
        return out


# -- feature losses (feature losses, signal) -------------------------------------------------------------
def set_identity_generator(loss: MGDLoss) -> None:
    """Test-only: make every MGD generator the identity on non-negative inputs.

    conv3×3 → ReLU → conv3×3 with a centre-tap identity kernel and zero bias maps x ≥ 0 to x
    exactly, so with no masking (λ = 0) a student equal to its teacher must give loss 0.
    """
    for seq in loss.generation:
        assert isinstance(seq, nn.Sequential)
        for conv in (seq[0], seq[2]):
            assert isinstance(conv, nn.Conv2d)
            assert conv.bias is not None
            with torch.no_grad():
                conv.weight.zero_()
                conv.bias.zero_()
                for c in range(conv.out_channels):
                    conv.weight[c, c, 1, 1] = 1.0


# -- decoding trial parameters (encoding, signal) --------------------------------------------------------
def trial_params(space: SearchSpace, **over: Any) -> dict[str, Any]:
    base = {
        "n_stages": 2,
        "order_key.small": 0.9,
        "order_key.medium": 0.1,
        "order_key.pvt": 0.5,
        "frac.0": 0.2,
        "frac.1": 0.6,
        "frac.2": 0.7,
        "feature_loss": "mgd",
        "response": True,
        "pseudo": False,
        "pseudo_form": "add",
        "pseudo_gt_fraction": 0.5,
        "feature_weight": 1.2,
        "cls_weight": 0.5,
        "box_weight": 2.0,
        "temperature": 2.0,
        "decay": "cosine",
        "decay_floor": 0.1,
        "lr": 0.002,
    }
    base.update(over)
    return base


# -- a throwaway PostgreSQL server (postgres, reliability) -----------------------------------------------
def free_port() -> int:
    return pgserver.free_port()


@contextlib.contextmanager
def postgres_server(prefix: str, *initdb_args: str, files: dict[str, str] | None = None) -> Iterator[str]:
    """:func:`benchmarks.pgserver.postgres_server` (shared with ``benchmarks/soak.py --postgres``);
    skips the test where the server binaries are missing."""
    if pgserver.server_binaries() is None:
        pytest.skip(pgserver.MISSING)
    with pgserver.postgres_server(prefix, *initdb_args, files=files) as url:
        yield url
