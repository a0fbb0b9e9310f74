"""`train --recipe` under torchrun: two CPU processes (gloo) train one student together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curriculum_search.curriculum.recipe import (
    DataConfig,
    FeatureKD,
    Recipe,
    ResponseKD,
    Stage,
    TeacherRef,
    TrainConfig,
    save_recipe,
)
from curriculum_search.data import SyntheticConfig
from curriculum_search.models import DetectorSpec, build_detector, load_detector, save_detector

CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond")


@pytest.mark.timeout(600)
def test_train_under_torchrun_with_two_cpu_processes(tmp_path: Path):
    spec = DetectorSpec(
        arch="fcos",
        backbone="resnet10t",
        num_classes=6,
        class_names=CLASSES,
        fpn_channels=16,
        image_size=64,
        head_convs=1,
    )
    save_detector(tmp_path / "teacher.pt", build_detector(spec))
    recipe = Recipe(
        name="ddp",
        student=spec.with_updates(backbone="mobilenetv3_small_050"),
        data=DataConfig(
            kind="synthetic",
            synthetic=SyntheticConfig(num_train=16, num_val=4, image_size=64, seed=9),
            image_size=64,
        ),
        teachers={"t": TeacherRef(checkpoint=str(tmp_path / "teacher.pt"))},
        stages=(
            Stage(teachers=("t",), iterations=4, feature=FeatureKD("mgd"), response=ResponseKD()),
            Stage(iterations=2),
        ),
        train=TrainConfig(batch_size=2, checkpoint_every=2, warmup_iterations=1, threads=1),
    )
    save_recipe(recipe, tmp_path / "r.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "curriculum_search",
        "train",
        "--recipe",
        str(tmp_path / "r.yaml"),
        "--out",
        str(tmp_path / "out"),
        "--studies-dir",
        str(tmp_path / "studies"),
        "--device",
        "cpu",
        "-q",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["iterations"] == 6
    model, _ = load_detector(tmp_path / "out" / "student.pt")
    assert not any(k.startswith("module.") for k in model.state_dict())
