"""Progressive trainer: loss goes down, stages carry weights, interrupted runs resume identically,
the teacher cache removes teacher forwards, bad recipes get one-line errors."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import yaml

from curriculum_search.curriculum.recipe import (
    FeatureKD,
    PseudoLabelKD,
    Recipe,
    ResponseKD,
    Stage,
    TeacherRef,
    TrainConfig,
    load_recipe,
    save_recipe,
)
from curriculum_search.curriculum.trainer import run_recipe
from curriculum_search.errors import ConfigError
from curriculum_search.models import build_detector, load_detector, save_detector
from tests.helpers import SYN, cached_run_options, fcos_spec, two_teacher_recipe

TEACHER_BACKBONE = "resnet10t"  # of the `teacher_ckpt` fixture (conftest.py)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_detector(path)[0].state_dict()


def test_supervised_training_lowers_the_loss(tmp_path: Path, teacher_ckpt: Path):
    recipe = two_teacher_recipe(teacher_ckpt, (Stage(iterations=40),), lr=3e-3, checkpoint_every=0)
    seen: list[float] = []
    opts = cached_run_options(tmp_path, "sup")
    import curriculum_search.curriculum.trainer as tr

    orig = tr.TrainStep.forward

    def spy(self, *a, **k):
        total, terms = orig(self, *a, **k)
        seen.append(float(total.detach()))
        return total, terms

    tr.TrainStep.forward = spy  # type: ignore[method-assign]
    try:
        run_recipe(recipe, opts)
    finally:
        tr.TrainStep.forward = orig  # type: ignore[method-assign]
    first, last = sum(seen[:8]) / 8, sum(seen[-8:]) / 8
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "sup" / "student.pt").exists() and (tmp_path / "sup" / "metrics.json").exists()


def _two_stage(teacher: Path) -> Recipe:
    return two_teacher_recipe(
        teacher,
        (
            Stage(teachers=("a",), iterations=5, feature=FeatureKD("mgd"), response=ResponseKD()),
            Stage(teachers=("b",), iterations=4, feature=FeatureKD("cwd"), response=ResponseKD(gate=False)),
        ),
    )


def test_two_stage_curriculum_resumes_identically_after_interruption(tmp_path: Path, teacher_ckpt: Path):
    recipe = _two_stage(teacher_ckpt)
    full = run_recipe(recipe, cached_run_options(tmp_path, "full"))

    class Stop(Exception):
        pass

    def stop_at_7(iteration: int, _res: object) -> None:
        if iteration == 7:
            raise Stop

    interrupted = recipe.replace(train=recipe.train.__class__(**{**recipe.train.__dict__, "eval_every": 7}))
    with pytest.raises(Stop):
        run_recipe(interrupted, cached_run_options(tmp_path, "part", callbacks=[stop_at_7]))
    assert (tmp_path / "part" / "stage1.pt").exists() and not (tmp_path / "part" / "student.pt").exists()
    # a process killed inside a checkpoint write leaves its temp file; a fresh one may be a live write
    stale, fresh = (tmp_path / "part" / "checkpoints" / f".last.pt.{x}.tmp" for x in ("a1", "b2"))
    stale.write_bytes(b"half a checkpoint")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 3600,) * 2)
    resumed = run_recipe(interrupted, cached_run_options(tmp_path, "part"))
    assert not stale.exists() and fresh.exists()
    assert resumed.resumed_from == 5  # last checkpoint: end of stage 1 (stage 2 eval at 7 came first)
    a, b = _weights(full.student_path), _weights(resumed.student_path)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # stage 2 started from stage 1's student: the final weights moved away from stage 1's
    s1 = _weights(tmp_path / "full" / "stage1.pt")
    assert any(not torch.equal(s1[k], a[k]) for k in a)


def test_teacher_cache_removes_teacher_forwards_on_a_second_run(tmp_path: Path, teacher_ckpt: Path):
    recipe = two_teacher_recipe(
        teacher_ckpt,
        (Stage(teachers=("a",), iterations=16, feature=FeatureKD("mse"), response=ResponseKD()),),
    )
    first = run_recipe(recipe, cached_run_options(tmp_path, "one"))
    assert first.teacher_forwards > 0
    second = run_recipe(recipe, cached_run_options(tmp_path, "two"))
    assert second.teacher_forwards == 0


def test_pseudo_label_stage_then_ground_truth_finetune(tmp_path: Path, teacher_ckpt: Path):
    recipe = two_teacher_recipe(
        teacher_ckpt,
        (
            Stage(
                teachers=("a", "b"),
                iterations=4,
                pseudo=PseudoLabelKD(score_threshold=0.05, fuse="wbf", mode="pseudo"),
            ),
            Stage(iterations=3, gt_fraction=0.5),
        ),
    )
    res = run_recipe(recipe, cached_run_options(tmp_path, "pl"))
    assert res.metrics.num_images == SYN.num_val


def test_recipe_yaml_round_trip_and_errors(tmp_path: Path, teacher_ckpt: Path):
    recipe = _two_stage(teacher_ckpt)
    path = save_recipe(recipe, tmp_path / "r.yaml")
    assert load_recipe(path) == recipe
    text = path.read_text().replace("iterations: 5", "iterations: five")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"bad\.yaml: stages\[0\]\.iterations: expected an integer"):
        load_recipe(tmp_path / "bad.yaml")
    data = yaml.safe_load(path.read_text())
    data["stages"][0]["teachers"] = ["zz"]
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"stages\[0\]\.teachers: unknown teacher 'zz'"):
        load_recipe(tmp_path / "bad2.yaml")
    (tmp_path / "bad3.yaml").write_text("name: x\nstudent: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad3\.yaml: line \d+, column \d+: malformed YAML"):
        load_recipe(tmp_path / "bad3.yaml")


def test_head_kd_between_incompatible_heads_is_refused(tmp_path: Path, teacher_ckpt: Path):
    other = tmp_path / "retina.pt"
    save_detector(other, build_detector(fcos_spec("resnet10t").with_updates(arch="retinanet")))
    recipe = two_teacher_recipe(teacher_ckpt, (Stage(teachers=("a",), iterations=2, response=ResponseKD()),))
    recipe = recipe.replace(teachers={"a": TeacherRef(checkpoint=str(other))})
    with pytest.raises(ConfigError, match=r"stages\[0\]\.response: head KD needs teacher 'a'"):
        run_recipe(recipe, cached_run_options(tmp_path, "x"))


def test_without_a_progress_bar_progress_is_logged_as_lines(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """In a log file (no terminal) the trainer writes plain progress lines instead of bar redraws."""
    import curriculum_search.curriculum.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "LOG_EVERY_S", 0.0)
    with caplog.at_level("INFO", logger=trainer_mod.__name__):
        run_recipe(_two_stage(teacher_ckpt), cached_run_options(tmp_path, "logged"))
    lines = [r.getMessage() for r in caplog.records if "iteration" in r.getMessage()]
    assert lines[0].startswith("t: iteration 1/9 (stage 1/2), loss ")
    assert lines[-1].startswith("t: iteration 9/9 (stage 2/2), loss ")


def test_cli_shows_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch):
    import argparse
    import io

    from curriculum_search.cli import progress_bars

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_bars(argparse.Namespace(quiet=False))
    monkeypatch.setattr("sys.stderr", Tty())
    assert progress_bars(argparse.Namespace(quiet=False))
    assert not progress_bars(argparse.Namespace(quiet=True))


def test_history_logs_each_kd_term_next_to_the_detection_loss(tmp_path: Path, teacher_ckpt: Path):
    """Issue 12.4: a user sees the KD/detection loss ratio of every stage in history.jsonl."""
    import json

    recipe = _two_stage(teacher_ckpt).replace(
        train=TrainConfig(batch_size=4, lr=2e-3, warmup_iterations=2, checkpoint_every=2, eval_every=3)
    )
    run_recipe(recipe, cached_run_options(tmp_path, "h"))
    rows = [json.loads(line) for line in (tmp_path / "h" / "history.jsonl").read_text().splitlines()]
    # evaluations at 3 and 6, the end of stage 1 at 5, the final evaluation at 9
    assert [(r["iteration"], r["stage"], r.get("stage_end", False)) for r in rows] == [
        (3, 0, False),
        (5, 0, True),
        (6, 1, False),
        (9, 1, False),
    ]
    assert [r["loss_steps"] for r in rows] == [3, 2, 1, 3]
    for r in rows:
        assert set(r["losses"]) == {"det", "kd_feature", "kd_cls", "kd_box"}
        assert r["losses"]["det"] > 0 and r["losses"]["kd_feature"] > 0
    assert "ap" in rows[0] and "ap" not in rows[1]
