"""Bad-input table: every mistake a user can make in a file gets ONE line naming the file and the
field (``error: ...`` from the CLI, exit status 2), or the trial is marked FAILED with its reason,
and whatever was already in the study stays intact.

The cases go through ``curriculum_search.cli.main`` exactly as a user would hit them; library
functions are only called directly where a fault has to be injected (NaN/inf loss, out of memory,
a full disk). Helpers at the top are reused by ``test_security.py``, ``test_concurrency.py`` and
``test_soak.py``.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from curriculum_search.cli import main as cli
from curriculum_search.curriculum.recipe import load_recipe
from curriculum_search.curriculum.trainer import run_recipe
from curriculum_search.distill.cache import CacheConfig
from curriculum_search.distill.feature import _registry as feature_registry
from curriculum_search.errors import StudyError, TrialFailure
from curriculum_search.models import load_checkpoint
from curriculum_search.search.service import SearchOptions, run_search
from curriculum_search.search.space import load_space
from tests.faults import BrokenFeatureLoss
from tests.helpers import (
    CLASSES,
    STUDENT,
    TINY,
    checkpoint_teacher_study,
    coco_data,
    copy_coco,
    one_line_error,
    recipe_dict,
    run_options,
    save_teacher,
    train_args,
    write_space,
    write_yaml,
)


def set_key(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``a.b[0].c`` in a nested dict/list (creating mappings on the way); returns ``data``."""
    node: Any = data
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return data


def del_key(data: dict[str, Any], dotted: str) -> dict[str, Any]:
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return data


def search_args(space: Path, studies: Path, *extra: str) -> list[str]:
    return ["search", "--space", str(space), "--studies-dir", str(studies), "--threads", "1", "-q", *extra]


# -- 1. search-space files ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad file: how to break the valid one, and the message the user must get."""

    id: str
    edit: Callable[[dict[str, Any]], Any] | None  # mutate the parsed YAML (None: ``raw`` is written)
    pattern: str
    raw: bytes | None = None


_TINY_TEXT = (Path(__file__).resolve().parent.parent / "space" / "tiny.yaml").read_text()
assert "\n  a:\n" in _TINY_TEXT and "\n  b:\n" in _TINY_TEXT  # the two pool teachers

SPACE_CASES = [
    Case(
        "malformed-yaml",
        None,
        r"tiny\.yaml: line 2, column 8: malformed YAML \(mapping values",
        b"name: x\nseed: 1: 2\n",
    ),
    Case("tab-indent", None, r"tiny\.yaml: line \d+, column \d+: malformed YAML", b"name: x\n\tseed: 1\n"),
    Case("top-level-list", None, r"tiny\.yaml: expected a mapping at the top level, got list", b"- a\n- b\n"),
    Case("not-utf8", None, r"tiny\.yaml: not a UTF-8 text file", b"name: \xff\xfe\n"),
    Case("empty-file", None, r"tiny\.yaml: student: missing required key", b""),
    Case("unknown-key", lambda d: set_key(d, "trails", 5), r"tiny\.yaml: trails: unknown key \(allowed: "),
    Case(
        "unknown-nested-key", lambda d: set_key(d, "proxy.iters", 5), r"tiny\.yaml: proxy\.iters: unknown key"
    ),
    Case(
        "unknown-key-in-teacher",
        lambda d: set_key(d, "teachers.a.zoo.iteration", 5),
        r"tiny\.yaml: teachers\.a\.zoo\.iteration: unknown key",
    ),
    Case("missing-student", lambda d: del_key(d, "student"), r"tiny\.yaml: student: missing required key"),
    Case(
        "missing-arch",
        lambda d: del_key(d, "student.arch"),
        r"tiny\.yaml: student\.arch: missing required key",
    ),
    Case(
        "trials-string",
        lambda d: set_key(d, "trials", "many"),
        r"tiny\.yaml: trials: expected an integer, got 'many'",
    ),
    Case(
        "trials-float",
        lambda d: set_key(d, "trials", 2.5),
        r"tiny\.yaml: trials: expected an integer, got 2\.5",
    ),
    Case(
        "hflip-string",
        lambda d: set_key(d, "data.hflip", "yes"),
        r"tiny\.yaml: data\.hflip: expected true/false",
    ),
    Case(
        "n-stages-scalar",
        lambda d: set_key(d, "search.n_stages", 2),
        r"tiny\.yaml: search\.n_stages: expected a list",
    ),
    Case(
        "lr-one-item",
        lambda d: set_key(d, "search.lr", [0.1]),
        r"tiny\.yaml: search\.lr: expected 2 items, got 1",
    ),
    Case(
        "teachers-list",
        lambda d: set_key(d, "teachers", ["a", "b"]),
        r"tiny\.yaml: teachers: expected a mapping",
    ),
    Case("trials-zero", lambda d: set_key(d, "trials", 0), r"tiny\.yaml: trials: must be >= 1, got 0"),
    Case(
        "lr-zero",
        lambda d: set_key(d, "search.lr", [0, 0.1]),
        r"tiny\.yaml: search\.lr: range must have 0 < lo",
    ),
    Case(
        "lr-nan",
        lambda d: set_key(d, "search.lr", [float("nan"), 0.1]),
        r"tiny\.yaml: search\.lr: range must be finite",
    ),
    Case(
        "lr-reversed",
        lambda d: set_key(d, "search.lr", [0.1, 0.01]),
        r"tiny\.yaml: search\.lr: range must have lo <= hi",
    ),
    Case(
        "too-many-stages",
        lambda d: set_key(d, "search.n_stages", [1, 5]),
        r"tiny\.yaml: search\.n_stages: at most 2 stage",
    ),
    Case(
        "eval-after-end",
        lambda d: set_key(d, "proxy.eval_every", 100),
        r"tiny\.yaml: proxy\.eval_every: must be in 0\.\.iterations, got 100",
    ),
    Case(
        "image-size-mismatch",
        lambda d: set_key(d, "student.image_size", 128),
        r"tiny\.yaml: student\.image_size: must equal data\.image_size \(64\)",
    ),
    Case(
        "image-size-odd",
        lambda d: set_key(d, "data.image_size", 65),
        r"tiny\.yaml: data\.image_size: must be a multiple of 32",
    ),
    Case(
        "unknown-feature-loss",
        lambda d: set_key(d, "search.feature_losses", ["mgd", "foo"]),
        r"tiny\.yaml: search\.feature_losses\[1\]: unknown feature loss 'foo'",
    ),
    Case(
        "unknown-search-teacher",
        lambda d: set_key(d, "search.teachers", ["a", "zz"]),
        r"tiny\.yaml: search\.teachers\[1\]: unknown teacher 'zz'",
    ),
    Case(
        "teacher-two-sources",
        lambda d: set_key(d, "teachers.a.checkpoint", "x.pt"),
        r"tiny\.yaml: teachers\.a\.checkpoint: give exactly one of checkpoint, spec or zoo",
    ),
    Case(
        "bad-pruner",
        lambda d: set_key(d, "pruner.name", "sometimes"),
        r"tiny\.yaml: pruner\.name: must be one of",
    ),
    Case(
        "bad-sampler-param",
        lambda d: set_key(d, "sampler", {"name": "tpe", "params": {"foo": 1}}),
        r"tiny\.yaml: sampler\.params\.foo: unknown tpe sampler parameter",
    ),
    Case(
        "zoo-iterations-zero",
        lambda d: set_key(d, "teachers.a.zoo.iterations", 0),
        r"teachers\.a\.zoo\.iterations: must be >= 1",
    ),
    Case("negative-timeout", lambda d: set_key(d, "timeout_s", -5), r"tiny\.yaml: timeout_s: must be > 0"),
    Case(
        "duplicate-key",
        None,
        r"tiny\.yaml: line 3, column 1: duplicate key 'seed' \(the first one would be lost\)",
        b"name: x\nseed: 1\nseed: 2\n",
    ),
    Case(
        "duplicate-teacher-name",
        None,
        r"tiny\.yaml: line \d+, column 3: duplicate key 'a'",
        _TINY_TEXT.replace("\n  b:\n", "\n  a:\n").encode(),
    ),
]


@pytest.mark.parametrize("case", SPACE_CASES, ids=[c.id for c in SPACE_CASES])
def test_bad_space_file_is_one_line_naming_file_and_field(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "tiny.yaml"
    if case.raw is not None:
        space.write_bytes(case.raw)
    else:
        data: dict[str, Any] = copy.deepcopy(TINY)
        assert case.edit is not None
        case.edit(data)
        write_yaml(space, data)
    line = one_line_error(cli(search_args(space, tmp_path / "studies")), capsys.readouterr().err)
    assert re.search(case.pattern, line), line
    assert not (tmp_path / "studies" / "tiny").exists()  # nothing was created for a bad file


def test_missing_space_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(
        cli(search_args(tmp_path / "nope.yaml", tmp_path / "studies")), capsys.readouterr().err
    )
    assert re.search(r"nope\.yaml: file not found", line), line


# -- 2. recipes ---------------------------------------------------------------------------------------
RECIPE_CASES = [
    Case(
        "malformed-yaml",
        None,
        r"r\.yaml: line 3, column 33: malformed YAML \(expected ',' or '\]'",
        b"name: x\nstages:\n  - {iterations: 2, teachers: [a}\n",
    ),
    Case("top-level-string", None, r"r\.yaml: expected a mapping at the top level, got str", b"just text\n"),
    Case(
        "unknown-key",
        lambda d: set_key(d, "stages[0].iterationz", 3),
        r"r\.yaml: stages\[0\]\.iterationz: unknown key",
    ),
    Case(
        "unknown-train-key",
        lambda d: set_key(d, "train.learning_rate", 3),
        r"r\.yaml: train\.learning_rate: unknown key",
    ),
    Case("missing-name", lambda d: del_key(d, "name"), r"r\.yaml: name: missing required key"),
    Case("missing-stages", lambda d: del_key(d, "stages"), r"r\.yaml: stages: missing required key"),
    Case(
        "lr-string",
        lambda d: set_key(d, "train.lr", "fast"),
        r"r\.yaml: train\.lr: expected a number, got 'fast'",
    ),
    Case(
        "iterations-string",
        lambda d: set_key(d, "stages[0].iterations", "two"),
        r"r\.yaml: stages\[0\]\.iterations: expected an integer",
    ),
    Case(
        "teachers-string",
        lambda d: set_key(d, "stages[0].teachers", "a"),
        r"r\.yaml: stages\[0\]\.teachers: expected a list",
    ),
    Case(
        "gate-string",
        lambda d: set_key(d, "stages[0].response", {"gate": "on"}),
        r"r\.yaml: stages\[0\]\.response\.gate: expected true/false",
    ),
    Case(
        "iterations-zero",
        lambda d: set_key(d, "stages[0].iterations", 0),
        r"r\.yaml: stages\[0\]\.iterations: must be >= 1, got 0",
    ),
    Case(
        "batch-zero", lambda d: set_key(d, "train.batch_size", 0), r"r\.yaml: train\.batch_size: must be >= 1"
    ),
    Case("lr-negative", lambda d: set_key(d, "train.lr", -1e-3), r"r\.yaml: train\.lr: must be > 0"),
    Case(
        "image-size-odd",
        lambda d: set_key(d, "data.image_size", 33),
        r"r\.yaml: data\.image_size: must be a multiple of 32",
    ),
    Case(
        "decay-floor",
        lambda d: set_key(d, "stages[0].decay", {"floor": 2}),
        r"r\.yaml: stages\[0\]\.decay\.floor: must be in \[0, 1\]",
    ),
    Case(
        "temperature-zero",
        lambda d: set_key(d, "stages[0].response", {"temperature": 0}),
        r"r\.yaml: stages\[0\]\.response\.temperature: must be > 0",
    ),
    Case("no-stages", lambda d: set_key(d, "stages", []), r"r\.yaml: stages: needs at least one stage"),
    Case(
        "unknown-stage-teacher",
        lambda d: set_key(d, "stages[0].teachers", ["zz"]),
        r"r\.yaml: stages\[0\]\.teachers: unknown teacher 'zz'",
    ),
    Case(
        "kd-without-teacher",
        lambda d: set_key(d, "stages[0].teachers", []),
        r"r\.yaml: stages\[0\]\.feature: needs at least one teacher",
    ),
    Case(
        "teacher-two-sources",
        lambda d: set_key(d, "teachers.a.spec", dict(STUDENT)),
        r"r\.yaml: teachers\.a\.checkpoint: give exactly one of checkpoint or spec",
    ),
    Case(
        "bad-optimizer",
        lambda d: set_key(d, "train.optimizer", "adam"),
        r"r\.yaml: train\.optimizer: must be one of 'adamw', 'sgd'",
    ),
    Case("future-format", lambda d: set_key(d, "format", 2), r"r\.yaml: format: unsupported recipe format 2"),
    Case(
        "coco-without-files",
        lambda d: set_key(d, "data.kind", "coco"),
        r"r\.yaml: data\.train_images: required when kind is coco",
    ),
    # found only when the stage is built: still one line naming the file and the stage field
    Case(
        "unknown-feature-loss",
        lambda d: set_key(d, "stages[0].feature.loss", "foo"),
        r"r\.yaml: stages\[0\]\.feature: .*unknown feature loss 'foo'",
    ),
    Case(
        "unknown-feature-param",
        lambda d: set_key(d, "stages[0].feature.params", {"alpha": 1.0}),
        r"r\.yaml: stages\[0\]\.feature: .*unknown parameter of feature loss 'mse'",
    ),
    Case(
        "stage-teacher-twice",
        lambda d: set_key(d, "stages[0].teachers", ["a", "a"]),
        r"r\.yaml: stages\[0\]\.teachers: teacher\(s\) listed twice: a",
    ),
]


@pytest.mark.parametrize("case", RECIPE_CASES, ids=[c.id for c in RECIPE_CASES])
def test_bad_recipe_is_one_line_naming_file_and_field(
    case: Case, tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "r.yaml"
    if case.raw is not None:
        recipe.write_bytes(case.raw)
    else:
        data = recipe_dict(teacher_ckpt)
        assert case.edit is not None
        case.edit(data)
        write_yaml(recipe, data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(case.pattern, line), line
    assert not (tmp_path / "out" / "student.pt").exists()


def test_valid_recipe_trains(tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The baseline every case above breaks is itself valid (so each case tests one mistake)."""
    recipe = write_yaml(tmp_path / "r.yaml", recipe_dict(teacher_ckpt))
    assert cli(train_args(recipe, tmp_path)) == 0, capsys.readouterr().err
    assert load_checkpoint(tmp_path / "out" / "student.pt")["format"] == "curriculum_search/model-v1"


# -- 3. checkpoints --------------------------------------------------------------------------------------
def _flip_byte(path: Path, offset: int = 2000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_with_sidecar(p: Path) -> None:
    _flip_byte(p)


def _truncated(p: Path) -> None:
    p.with_name(p.name + ".sha256").unlink()
    p.write_bytes(p.read_bytes()[:1000])


def _text_file(p: Path) -> None:
    p.with_name(p.name + ".sha256").unlink()
    p.write_text("this is not a checkpoint\n")


def _empty_file(p: Path) -> None:
    p.with_name(p.name + ".sha256").unlink()
    p.write_bytes(b"")


def _plain_state_dict(p: Path) -> None:
    p.with_name(p.name + ".sha256").unlink()
    torch.save({"conv.weight": torch.zeros(2, 2)}, p)


def _missing(p: Path) -> None:
    p.unlink()


CHECKPOINT_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing": (_missing, r"teacher\.pt: checkpoint not found"),
    "sha256-mismatch": (_corrupt_with_sidecar, r"teacher\.pt: corrupt checkpoint \(sha256 does not match"),
    "truncated": (_truncated, r"teacher\.pt: corrupt or unreadable checkpoint"),
    "text-file": (
        _text_file,
        r"teacher\.pt: (corrupt or )?unreadable checkpoint|teacher\.pt: unsafe or unreadable",
    ),
    "empty-file": (_empty_file, r"teacher\.pt: corrupt or unreadable checkpoint"),
    "not-our-format": (_plain_state_dict, r"teacher\.pt: not a curriculum_search model checkpoint"),
}


@pytest.mark.parametrize("kind", list(CHECKPOINT_CASES))
def test_missing_or_corrupt_teacher_checkpoint(
    kind: str, tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "teacher.pt"
    shutil.copy(teacher_ckpt, ckpt)
    shutil.copy(teacher_ckpt.with_name("teacher.pt.sha256"), tmp_path / "teacher.pt.sha256")
    breaker, pattern = CHECKPOINT_CASES[kind]
    breaker(ckpt)
    recipe = write_yaml(tmp_path / "r.yaml", recipe_dict(ckpt))
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(pattern, line), line


def test_checkpoint_of_another_architecture_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Initial student weights from a RetinaNet checkpoint into an FCOS student: one line, no run."""
    other = save_teacher(tmp_path / "retina.pt", arch="retinanet")
    data = recipe_dict(None)
    data["student"]["weights"] = str(other)
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"retina\.pt: checkpoint is for arch='retinanet', the model has 'fcos'", line), line


def test_checkpoint_with_other_shapes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = save_teacher(tmp_path / "wide.pt", fpn_channels=32)
    data = recipe_dict(None)
    data["student"]["weights"] = str(other)
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"wide\.pt: checkpoint is for fpn_channels=32, the model has 16", line), line


def test_corrupt_training_checkpoint_is_reported_and_rebuilt_never_used(
    tmp_path: Path, teacher_ckpt: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged ``last.pt`` is detected (sha256), reported, and the run starts over; the result
    equals a clean run, so nothing of the damaged file was used."""
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", recipe_dict(teacher_ckpt)))
    clean = run_recipe(recipe, run_options(tmp_path, "clean"))
    last = tmp_path / "clean" / "checkpoints" / "last.pt"
    shutil.copytree(tmp_path / "clean", tmp_path / "damaged")
    (tmp_path / "damaged" / "student.pt").unlink()
    _flip_byte(tmp_path / "damaged" / "checkpoints" / "last.pt", offset=last.stat().st_size // 2)
    with caplog.at_level("WARNING"):
        again = run_recipe(recipe, run_options(tmp_path, "damaged"))
    msgs = [r.getMessage() for r in caplog.records]
    assert any("last.pt: corrupt checkpoint" in m and "starting" in m for m in msgs), msgs
    assert again.resumed_from == 0
    a = load_checkpoint(clean.student_path)["state_dict"]
    b = load_checkpoint(again.student_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    load_checkpoint(tmp_path / "damaged" / "checkpoints" / "last.pt")  # rebuilt: valid again


def test_training_checkpoint_of_another_recipe_is_refused(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_yaml(tmp_path / "r.yaml", recipe_dict(teacher_ckpt))
    assert cli(train_args(first, tmp_path)) == 0
    capsys.readouterr()
    before = (tmp_path / "out" / "checkpoints" / "last.pt").read_bytes()
    second = write_yaml(tmp_path / "r2.yaml", set_key(recipe_dict(teacher_ckpt), "train.lr", 1e-3))
    line = one_line_error(cli(train_args(second, tmp_path)), capsys.readouterr().err)
    assert re.search(r"last\.pt: this training checkpoint belongs to another recipe", line), line
    assert (tmp_path / "out" / "checkpoints" / "last.pt").read_bytes() == before  # untouched


def test_corrupt_zoo_teacher_is_rebuilt_not_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``zoo build`` must notice a damaged zoo checkpoint (sha256) and train it again."""
    data: dict[str, Any] = copy.deepcopy(TINY)
    data["teachers"] = {"a": data["teachers"]["a"]}
    data["search"]["n_stages"] = [1, 1]
    space = write_yaml(tmp_path / "tiny.yaml", data)
    studies = tmp_path / "studies"
    args = ["zoo", "build", "--space", str(space), "--studies-dir", str(studies), "--threads", "1", "-q"]
    assert cli(args) == 0
    (ckpt,) = studies.glob("_zoo/a-*/model.pt")
    _flip_byte(ckpt, offset=ckpt.stat().st_size // 2)
    code = cli(args)
    err = capsys.readouterr().err
    assert code == 0, err
    load_checkpoint(ckpt)  # valid again: it was trained anew, not silently kept


# -- 4. COCO data ---------------------------------------------------------------------------------------
def _edit_json(path: Path, edit: Callable[[dict[str, Any]], Any]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _first_image(root: Path, split: str = "train") -> Path:
    return sorted((root / split).iterdir())[0]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (225 Mpx here) in a few bytes: what a
    decompression bomb looks like to a reader before it decodes anything."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


COCO_CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "malformed-json": (
        lambda r: (r / "train.json").write_text('{"images": [}'),
        r"train\.json: line 1, column \d+: malformed JSON",
    ),
    "missing-annotation-file": (
        lambda r: (r / "val.json").unlink(),
        r"val\.json: annotation file not found",
    ),
    "top-level-list": (
        lambda r: (r / "train.json").write_text("[]"),
        r"train\.json: .*(mapping|object|dict)",
    ),
    "images-not-a-list": (
        lambda r: _edit_json(r / "train.json", lambda d: d.update(images={"a": 1})),
        r"train\.json: images: ",
    ),
    "bbox-three-numbers": (
        lambda r: _edit_json(r / "train.json", lambda d: d["annotations"][0].update(bbox=[1, 2, 3])),
        r"train\.json: annotations\[0\].*bbox",
    ),
    "bbox-string": (
        lambda r: _edit_json(r / "train.json", lambda d: d["annotations"][0].update(bbox="1 2 3 4")),
        r"train\.json: annotations\[0\].*bbox",
    ),
    "unknown-category": (
        lambda r: _edit_json(r / "train.json", lambda d: d["annotations"][0].update(category_id=99)),
        r"train\.json: annotations\[0\].*category",
    ),
    "unknown-image-id": (
        lambda r: _edit_json(r / "train.json", lambda d: d["annotations"][0].update(image_id=12345)),
        r"train\.json: annotations\[0\].*image",
    ),
    "duplicate-image-id": (
        lambda r: _edit_json(r / "train.json", lambda d: d["images"][1].update(id=d["images"][0]["id"])),
        r"train\.json: images\[1\].*(duplicate|twice|already)",
    ),
    "missing-image-file": (
        lambda r: _first_image(r).unlink(),
        r"train\.json: images\[0\] \(id 1\): image file not found: .*train/000000\.png",
    ),
    "missing-images-folder": (
        lambda r: shutil.rmtree(r / "val"),
        r"val.*(not found|missing|does not exist)",
    ),
    # pixels are read when an image is used; every validation image is used by the evaluation
    "image-not-an-image": (
        lambda r: _first_image(r, "val").write_bytes(b"not a png at all"),
        r"val/000000\.png: image id 1: cannot read image",  # names the image id too (issue 14)
    ),
    # second list (issue 15): nothing to learn from or nothing to score against, and a bomb
    "empty-dataset": (
        lambda r: _edit_json(r / "train.json", lambda d: d.update(images=[], annotations=[])),
        r"train\.json: annotations: the training set has no annotated image",
    ),
    "all-boxes-dropped": (
        lambda r: _edit_json(
            r / "train.json", lambda d: [a.update(bbox=[500, 500, 10, 10]) for a in d["annotations"]]
        ),
        r"train\.json: annotations: the training set has no usable box \(all \d+ boxes were dropped",
    ),
    "val-without-annotations": (
        lambda r: _edit_json(r / "val.json", lambda d: d.update(annotations=[])),
        # validation images without annotations are negatives (no box anywhere: AP undefined)
        r"val\.json: annotations: the validation set has no usable box \(it has no annotation\): AP would be undefined",
    ),
    "val-boxes-all-dropped": (
        lambda r: _edit_json(
            r / "val.json", lambda d: [a.update(bbox=[500, 500, 10, 10]) for a in d["annotations"]]
        ),
        r"val\.json: annotations: the validation set has no usable box .*AP would be undefined",
    ),
    "decompression-bomb": (
        lambda r: _png_header_only(_first_image(r, "val"), 15000, 15000),
        r"val/000000\.png: image too large to decode safely .*decompression bomb",
    ),
    "image-size-differs-from-json": (
        lambda r: _edit_json(r / "val.json", lambda d: d["images"][0].update(width=65)),
        r"val\.json: image id 1: 000000\.png is 64x64 px but the JSON says 65x64",
    ),
}


@pytest.mark.parametrize("kind", list(COCO_CASES))
def test_bad_coco_dataset_is_one_line(
    kind: str, tmp_path: Path, coco_src: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_coco(coco_src, tmp_path)
    breaker, pattern = COCO_CASES[kind]
    breaker(root)
    data = recipe_dict(teacher_ckpt, data=coco_data(root))
    data["train"]["num_workers"] = 0
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(pattern, line), line


def test_boxes_outside_images_are_dropped_with_one_warning_and_training_runs(
    tmp_path: Path, coco_src: Path, teacher_ckpt: Path
) -> None:
    root = copy_coco(coco_src, tmp_path)

    def outside(doc: dict[str, Any]) -> None:
        doc["annotations"][0]["bbox"] = [500, 500, 20, 20]  # entirely outside a 64 px image
        doc["annotations"][1]["bbox"] = [-10, -10, 30, 30]  # partly outside: clipped

    _edit_json(root / "train.json", outside)
    data = recipe_dict(teacher_ckpt, data=coco_data(root))
    recipe = write_yaml(tmp_path / "r.yaml", data)
    with pytest.warns(UserWarning) as record:
        assert cli(train_args(recipe, tmp_path)) == 0
    texts = [str(w.message) for w in record if "train.json" in str(w.message)]
    assert texts, [str(w.message) for w in record]
    assert all("\n" not in t for t in texts)
    assert any(re.search(r"dropped 1 .*box", t) for t in texts), texts


def test_evaluation_images_without_a_box_fail_instead_of_scoring_minus_one(
    tmp_path: Path, coco_src: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pycocotools scores images without ground truth -1: that must never be reported as an AP
    (a trial would complete with -1 and rank below every real curriculum). The first validation
    image keeps its (empty after dropping) annotation list and is the only one evaluated."""
    root = copy_coco(coco_src, tmp_path)

    def first_image_boxes_outside(doc: dict[str, Any]) -> None:
        first = min(img["id"] for img in doc["images"])
        for a in doc["annotations"]:
            if a["image_id"] == first:
                a["bbox"] = [500, 500, 10, 10]

    _edit_json(root / "val.json", first_image_boxes_outside)
    data = recipe_dict(teacher_ckpt, data=coco_data(root))
    data["train"].update(eval_images=1, num_workers=0)
    recipe = write_yaml(tmp_path / "r.yaml", data)
    with pytest.warns(UserWarning):
        code = cli(train_args(recipe, tmp_path))
    line = one_line_error(code, capsys.readouterr().err)
    assert re.search(r"val\.json: AP is undefined: the 1 evaluated image\(s\) hold no ground-truth box", line)
    assert not (tmp_path / "out" / "metrics.json").exists()


# -- 5. teachers whose classes do not cover the student's --------------------------------------------------
OTHER_CLASSES = ("cat", "dog", "bird", "fish", "cow", "horse")


def test_head_kd_from_teacher_with_disjoint_classes_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = save_teacher(tmp_path / "animals.pt", class_names=OTHER_CLASSES)
    data = recipe_dict(other)
    data["stages"][0] = {"teachers": ["a"], "iterations": 2, "response": {}}
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(
        r"r\.yaml: stages\[0\]\.response: teacher 'a' shares no class name with the student", line
    )


def test_pseudo_labels_from_teacher_with_disjoint_classes_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pseudo-label KD from a teacher that knows none of the student's classes would train the
    student on empty targets: a configuration mistake, reported before training."""
    other = save_teacher(tmp_path / "animals.pt", class_names=OTHER_CLASSES)
    data = recipe_dict(other)
    data["stages"][0] = {"teachers": ["a"], "iterations": 2, "pseudo": {"score_threshold": 0.0}}
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"r\.yaml: stages\[0\]\.pseudo: teacher 'a' shares no class name with the student", line)


def test_teacher_covering_part_of_the_student_classes_distils_on_the_shared_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Different class sets are mapped by name (design): a teacher with 3 of the 6 classes works."""
    partial = save_teacher(
        tmp_path / "half.pt", class_names=(*CLASSES[:3], "cat", "dog", "bird"), num_classes=6
    )
    data = recipe_dict(partial)
    data["stages"][0] = {"teachers": ["a"], "iterations": 2, "response": {}, "feature": {"loss": "mse"}}
    recipe = write_yaml(tmp_path / "r.yaml", data)
    assert cli(train_args(recipe, tmp_path)) == 0, capsys.readouterr().err


def test_student_num_classes_not_matching_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = recipe_dict(None)
    data["student"]["num_classes"] = 3
    data["student"]["class_names"] = []
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"r\.yaml: student\.num_classes is 3 but the dataset has 6 classes", line), line


# -- 6. a study whose teacher pool changed ------------------------------------------------------------------
def test_study_whose_teacher_pool_changed_is_refused_and_left_intact(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher, space, studies, db = checkpoint_teacher_study(tmp_path, teacher_ckpt)
    before = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").user_attrs
    save_teacher(teacher, fpn_channels=32)  # the same name now holds another model
    line = one_line_error(cli(search_args(space, studies)), capsys.readouterr().err)
    assert re.search(r"study\.db: the teacher pool of study 'tiny' changed .*--name NEW", line), line
    after = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert after.user_attrs == before and not after.trials


def test_study_whose_teacher_checkpoint_vanished_names_the_file(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A moved/deleted teacher file is not "a changed pool": the user is told which file is missing."""
    teacher, space, studies, db = checkpoint_teacher_study(tmp_path, teacher_ckpt)
    teacher.unlink()
    teacher.with_name("t.pt.sha256").unlink(missing_ok=True)
    line = one_line_error(cli(search_args(space, studies)), capsys.readouterr().err)
    assert re.search(r"t\.pt: checkpoint not found|teachers\.a\.checkpoint: .*not found", line), line
    assert not optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").trials


# -- 7. NaN / inf loss and out of memory ------------------------------------------------------------------
@pytest.fixture()
def broken_loss(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(feature_registry._REGISTRY, "broken_test", (BrokenFeatureLoss, {}))
    return "broken_test"


@pytest.mark.parametrize("mode", ["nan", "inf"])
def test_non_finite_loss_is_a_trial_failure_naming_iteration_and_term(
    mode: str, tmp_path: Path, teacher_ckpt: Path, broken_loss: str
) -> None:
    data = recipe_dict(teacher_ckpt)
    data["stages"][0]["feature"] = {"loss": broken_loss, "params": {"mode": mode}}
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", data))
    with pytest.raises(TrialFailure, match=rf"non-finite loss at iteration 1 \(stage 1\): kd_feature={mode}"):
        run_recipe(recipe, run_options(tmp_path))
    assert not (tmp_path / "out" / "student.pt").exists()


def test_out_of_memory_is_a_trial_failure(tmp_path: Path, teacher_ckpt: Path, broken_loss: str) -> None:
    data = recipe_dict(teacher_ckpt)
    data["stages"][0]["feature"] = {"loss": broken_loss, "params": {"mode": "oom"}}
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", data))
    with pytest.raises(TrialFailure, match=r"out of memory at iteration 1 \(stage 1\): CUDA out of memory"):
        run_recipe(recipe, run_options(tmp_path))


def test_diverging_lr_in_train_is_one_line(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recipe whose learning rate blows the loss up: one line, not a traceback."""
    data = set_key(recipe_dict(teacher_ckpt), "train.lr", 1e9)
    data["train"].update(warmup_iterations=0, grad_clip=0)
    data["stages"][0]["iterations"] = 6
    recipe = write_yaml(tmp_path / "r.yaml", data)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"r\.yaml: training stopped: non-finite loss at iteration \d+ \(stage 1\)", line), line


SITECUSTOMIZE = """
import os
if os.environ.get("CS_TEST_BROKEN_LOSS"):
    from curriculum_search.distill.feature import _registry as reg
    from tests.faults import BrokenFeatureLoss
    reg._REGISTRY.setdefault("broken_test", (BrokenFeatureLoss, {"mode": os.environ["CS_TEST_BROKEN_LOSS"]}))
"""


@pytest.mark.slow
def test_nan_and_oom_trials_are_failed_with_reason_and_the_study_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trials run in their own processes: the broken loss is registered there by a test-only
    ``sitecustomize`` (PYTHONPATH), so no library code knows about the injection."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(inject), str(repo)]))
    results = {}
    for mode in ("oom", "nan"):
        monkeypatch.setenv("CS_TEST_BROKEN_LOSS", mode)
        monkeypatch.setitem(feature_registry._REGISTRY, "broken_test", (BrokenFeatureLoss, {"mode": mode}))
        data: dict[str, Any] = copy.deepcopy(TINY)
        data.update(name=f"broken-{mode}", trials=2)
        data["search"].update(feature_losses=["broken_test"], response=[False])
        space = write_yaml(tmp_path / f"{mode}.yaml", data)
        studies = tmp_path / "studies"
        run_search(
            load_space(space),
            SearchOptions(
                studies_root=studies,
                cache=CacheConfig(root=studies / "_cache" / "teachers"),
                progress=False,
                threads=1,
                space_file=space,
                echo=lambda s: None,
            ),
        )
        results[mode] = optuna.load_study(
            study_name=f"broken-{mode}", storage=f"sqlite:///{studies / f'broken-{mode}' / 'study.db'}"
        ).get_trials()
    expected = {"oom": r"out of memory at iteration 1 \(stage 1\)", "nan": r"non-finite loss at iteration 1"}
    for mode, trials in results.items():
        states = {t.user_attrs.get("baseline"): t.state for t in trials}
        assert states["student_only"] == TrialState.COMPLETE, states  # the study went on
        failed = [t for t in trials if t.state == TrialState.FAIL]
        assert failed, states
        for t in failed:
            assert re.search(expected[mode], t.user_attrs["failure_reason"]), t.user_attrs["failure_reason"]
            assert "\n" not in t.user_attrs["failure_reason"]


# -- 8. a read-only or full studies folder ---------------------------------------------------------------
def test_studies_folder_that_is_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tests run as root, where ``chmod 0o555`` does not stop writes; a regular file where the
    studies folder should be makes every ``mkdir`` below it fail the same way a read-only
    folder does, so that is the unwritable folder used here (plus chmod when not root)."""
    space = write_space(tmp_path)
    blocker = tmp_path / "studies"
    blocker.write_text("not a folder\n")
    line = one_line_error(cli(search_args(space, blocker)), capsys.readouterr().err)
    assert str(blocker) in line and "a file is in the way of a folder" in line, line
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (see the test above)")
def test_read_only_studies_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    studies.chmod(0o555)
    try:
        line = one_line_error(cli(search_args(space, studies)), capsys.readouterr().err)
    finally:
        studies.chmod(0o755)
    assert str(studies) in line and re.search(r"(permission denied|read-only)", line), line


def test_train_into_unwritable_output_is_one_line(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").write_text("a file where the output folder should be\n")
    recipe = write_yaml(tmp_path / "r.yaml", recipe_dict(teacher_ckpt))
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert str(tmp_path / "out") in line and "a file is in the way of a folder" in line, line


def test_full_disk_during_checkpoint_is_one_line_and_previous_checkpoint_survives(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENOSPC while writing the 3rd training checkpoint: one line naming the file; the 2nd
    checkpoint is intact and verified; re-running (space freed) resumes from it and ends with
    exactly the weights of an uninterrupted run."""
    data = recipe_dict(teacher_ckpt)
    data["stages"][0]["iterations"] = 4
    recipe = write_yaml(tmp_path / "r.yaml", data)
    assert (
        cli(
            [
                *train_args(recipe, tmp_path)[:3],
                "--out",
                str(tmp_path / "reference"),
                *train_args(recipe, tmp_path)[5:],
            ]
        )
        == 0
    )

    import curriculum_search.utils.io as io_mod

    real_fsync = io_mod.os.fsync
    state = {"writes": 0, "full": False}

    def fsync(fd: int) -> None:
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    real_write = io_mod.atomic_write_bytes

    def write(path: str | Path, data: bytes) -> Path:
        if Path(path).name == "last.pt":
            state["writes"] += 1
            state["full"] = state["full"] or state["writes"] == 3
        return real_write(path, data)

    monkeypatch.setattr(io_mod.os, "fsync", fsync)
    import curriculum_search.models.checkpoint as ckpt_mod

    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", write)
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(
        r"checkpoints/last\.pt: no space left on the device; files saved before are intact", line
    )
    monkeypatch.undo()

    last = tmp_path / "out" / "checkpoints" / "last.pt"
    state_2 = load_checkpoint(last)  # verified against its sha256 when the sidecar is there
    assert (state_2["stage"], state_2["step"]) == (0, 2)
    assert not list(last.parent.glob(".*.tmp"))  # the half-written temp file was removed
    assert cli(train_args(recipe, tmp_path)) == 0
    a = load_checkpoint(tmp_path / "reference" / "student.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "out" / "student.pt")["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("content", [b"", b"tables"])
def test_status_of_a_database_without_a_study_schema_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    """A study database caught mid-creation (or not an Optuna one) is reported, not a traceback."""
    import sqlite3

    db = tmp_path / "studies" / "half" / "study.db"
    db.parent.mkdir(parents=True)
    if content:
        with sqlite3.connect(db) as con:  # a real SQLite file whose Optuna tables do not exist yet
            con.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
    else:
        db.write_bytes(content)
    line = one_line_error(
        cli(["status", "half", "--studies-dir", str(tmp_path / "studies")]), capsys.readouterr().err
    )
    assert "study.db" in line and "cannot read study 'half'" in line and "retry in a moment" in line
    if not content:
        assert db.stat().st_size == 0  # the reader created no schema in the file


# -- 9. study names and databases (second list) -----------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--name", "../x"],
        ["run", "--name", "../../x"],
        ["status", "../x"],
        ["export", "--study", "../x"],
        ["worker", "--study", "a/../../x", "--storage", "sqlite:///never.db"],
    ],
    ids=["search", "run", "status", "export", "worker"],
)
def test_study_name_given_on_the_command_line_cannot_be_a_path(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path)
    studies = tmp_path / "deep" / "studies"
    extra = ["--space", str(space)] if argv[0] in ("search", "run") else []
    line = one_line_error(cli([*argv, *extra, "--studies-dir", str(studies)]), capsys.readouterr().err)
    assert re.search(r"study name '[./a]*x': must be a folder name", line), line
    assert not studies.exists() and not (tmp_path / "x").exists() and not (tmp_path / "deep" / "x").exists()


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only for this process: permission bits, or (root ignores them) the
    immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


def test_read_only_study_database_is_one_line_and_left_intact(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, space, studies, db = checkpoint_teacher_study(tmp_path, teacher_ckpt)
    before = db.read_bytes()
    with _read_only(db):
        line = one_line_error(cli(search_args(space, studies)), capsys.readouterr().err)
    assert re.search(r"study\.db: the study database is read-only; nothing was changed", line), line
    assert db.read_bytes() == before


def test_study_database_out_of_disk_is_one_line_and_nothing_told_is_lost(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's file cannot grow (``max_page_count``: what a full disk looks like to SQLite): the
    run stops with one line instead of a traceback, and the study reads back whole."""
    from sqlalchemy import event

    from curriculum_search.search import study as study_mod
    from curriculum_search.search.coordinator import run_search

    _, space, studies, db = checkpoint_teacher_study(tmp_path, teacher_ckpt)
    real_open = study_mod.open_storage

    def full_disk_storage(spec: Any, **kw: Any) -> Any:
        storage = real_open(spec, **kw)
        engine = storage.engine

        @event.listens_for(engine, "connect")
        def cap(dbapi_con: Any, _rec: Any) -> None:
            pages = dbapi_con.execute("PRAGMA page_count").fetchone()[0]
            dbapi_con.execute(f"PRAGMA max_page_count = {pages + 1}")

        engine.dispose()
        return storage

    monkeypatch.setattr(study_mod, "open_storage", full_disk_storage)
    sp = load_space(space)
    options = SearchOptions(
        studies_root=studies, progress=False, threads=1, space_file=space, echo=lambda s: None
    )
    with pytest.raises(
        StudyError, match=r"study\.db: no space left for the study database; every trial told before is kept"
    ):
        run_search(sp, options)
    monkeypatch.undo()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")  # readable, whole
    assert study.user_attrs["initialised"] is True
    import sqlite3

    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
