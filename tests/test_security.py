"""Security: checkpoints and cache entries are unpickled with ``weights_only=True``; YAML is loaded
safely; paths in recipes cannot leave their base folder unless written as absolute paths; the
dashboard binds to localhost and reading a study (dashboard, ``studies``/``status``/``export``)
never changes a file."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from curriculum_search.cli import build_parser
from curriculum_search.cli import main as cli
from curriculum_search.distill.cache import CacheConfig, TeacherCache
from curriculum_search.errors import CheckpointError
from curriculum_search.models import load_checkpoint
from curriculum_search.search.encoding import suggest_curriculum
from curriculum_search.search.space import load_space
from curriculum_search.search.storage import open_storage, storage_spec
from curriculum_search.utils.config import to_dict
from tests.helpers import (
    coco_data,
    copy_coco,
    one_line_error,
    recipe_dict,
    train_args,
    write_space,
    write_yaml,
)

PACKAGE = Path(__file__).resolve().parent.parent / "curriculum_search"


# -- unpickling ---------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this object would create ``marker`` (a stand-in for running arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save(
        {"format": "curriculum_search/model-v1", "spec": {}, "state_dict": {}, "x": _Payload(marker)}, path
    )
    return path


def test_malicious_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(
        CheckpointError, match=r"evil\.pt: unsafe or unreadable checkpoint \(UnpicklingError\)"
    ):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_teacher_via_cli_is_one_line_and_harmless(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    recipe = write_yaml(tmp_path / "r.yaml", recipe_dict(evil))
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"evil\.pt: unsafe or unreadable checkpoint", line), line
    assert not marker.exists()


def test_malicious_training_checkpoint_is_not_resumed_from(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A booby-trapped ``last.pt`` in the output folder is reported and replaced, never executed."""
    marker = tmp_path / "pwned"
    last = tmp_path / "out" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    _evil_checkpoint(last, marker)
    recipe = write_yaml(tmp_path / "r.yaml", recipe_dict(teacher_ckpt))
    assert cli(train_args(recipe, tmp_path)) == 0, capsys.readouterr().err
    assert not marker.exists()
    assert load_checkpoint(last)["format"] == "curriculum_search/train-v1"


def test_malicious_cache_entry_is_rebuilt_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cache = TeacherCache(CacheConfig(root=tmp_path / "cache"), "ns")
    record = {"f0": torch.ones(2, 4, 4, dtype=torch.float16)}
    cache.put(0, 0, record)
    path = cache.path(0, 0)
    assert path is not None and path.is_file()
    buf = io.BytesIO()
    torch.save({"x": _Payload(marker)}, buf)
    path.write_bytes(buf.getvalue())
    fresh = TeacherCache(CacheConfig(root=tmp_path / "cache"), "ns")  # empty memory: reads the disk
    assert fresh.get(0, 0, required={"f0"}) is None
    assert fresh.stats.corrupt_rebuilt == 1
    assert not marker.exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                out.append((f"{f.value.id}.{f.attr}", node))
            elif isinstance(f, ast.Name):
                out.append((f.id, node))
    return out


def test_no_unsafe_deserialisation_anywhere_in_the_package() -> None:
    """Every ``torch.load`` passes ``weights_only=True``; no ``pickle``/unsafe YAML/``shell=True``."""
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, call in _calls(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{call.lineno}"
            kw = {k.arg: k.value for k in call.keywords}
            if name == "torch.load":
                val = kw.get("weights_only")
                if not (isinstance(val, ast.Constant) and val.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
                problems.append(f"{where}: {name} (use yaml.safe_load)")
            if name in ("pickle.load", "pickle.loads", "joblib.load", "eval", "exec"):
                problems.append(f"{where}: {name}")
            shell = kw.get("shell")
            if isinstance(shell, ast.Constant) and shell.value is True:
                problems.append(f"{where}: subprocess with shell=True")
    assert not problems, "\n".join(problems)


# -- YAML ------------------------------------------------------------------------------------------------
YAML_ATTACK = "name: x\nseed: !!python/object/apply:os.mkdir [{marker}]\n"


def test_yaml_python_tags_are_refused_in_space_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    space = tmp_path / "tiny.yaml"
    space.write_text(YAML_ATTACK.format(marker=json.dumps(str(marker))))
    args = ["search", "--space", str(space), "--studies-dir", str(tmp_path / "studies"), "-q"]
    line = one_line_error(cli(args), capsys.readouterr().err)
    assert re.search(r"tiny\.yaml: line 2, column \d+: malformed YAML", line), line
    assert not marker.exists()


def test_yaml_python_tags_are_refused_in_recipes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(YAML_ATTACK.format(marker=json.dumps(str(marker))))
    line = one_line_error(cli(train_args(recipe, tmp_path)), capsys.readouterr().err)
    assert re.search(r"r\.yaml: line 2, column \d+: malformed YAML", line), line
    assert not marker.exists()


# -- paths in recipes ------------------------------------------------------------------------------------
@pytest.fixture()
def layout(tmp_path: Path, teacher_ckpt: Path) -> dict[str, Path]:
    """``work/recipes/`` holds the recipe; ``work/outside/`` is a sibling folder it must not reach
    by a relative path."""
    recipes = tmp_path / "work" / "recipes"
    outside = tmp_path / "work" / "outside"
    recipes.mkdir(parents=True)
    outside.mkdir()
    shutil.copy(teacher_ckpt, outside / "t.pt")
    shutil.copy(teacher_ckpt.with_name("teacher.pt.sha256"), outside / "t.pt.sha256")
    shutil.copy(teacher_ckpt, recipes / "t.pt")
    shutil.copy(teacher_ckpt.with_name("teacher.pt.sha256"), recipes / "t.pt.sha256")
    return {"recipes": recipes, "outside": outside, "studies": tmp_path / "studies", "root": tmp_path}


def _train(recipe: Path, lay: dict[str, Path], out: Path | None = None) -> list[str]:
    args = ["train", "--recipe", str(recipe), "--studies-dir", str(lay["studies"]), "--threads", "1", "-q"]
    return [*args, "--out", str(out)] if out is not None else args


def test_relative_teacher_path_cannot_climb_out(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_yaml(layout["recipes"] / "r.yaml", recipe_dict("../outside/t.pt"))
    line = one_line_error(cli(_train(recipe, layout, layout["root"] / "o")), capsys.readouterr().err)
    assert re.search(r"r\.yaml: teachers\.a\.checkpoint: relative path '\.\./outside/t\.pt' escapes", line), (
        line
    )
    assert "use an absolute path" in line


def test_relative_path_inside_and_absolute_path_outside_are_allowed(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inside = write_yaml(layout["recipes"] / "in.yaml", recipe_dict("t.pt"))
    assert cli(_train(inside, layout, layout["root"] / "o1")) == 0, capsys.readouterr().err
    absolute = write_yaml(layout["recipes"] / "abs.yaml", recipe_dict(str(layout["outside"] / "t.pt")))
    assert cli(_train(absolute, layout, layout["root"] / "o2")) == 0, capsys.readouterr().err


def test_relative_data_paths_cannot_climb_out(
    layout: dict[str, Path], coco_src: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_coco(coco_src, layout["outside"])
    data = coco_data(Path("../outside/coco"))
    recipe = write_yaml(layout["recipes"] / "r.yaml", recipe_dict(teacher_ckpt, data=data))
    line = one_line_error(cli(_train(recipe, layout, layout["root"] / "o")), capsys.readouterr().err)
    assert re.search(r"r\.yaml: data\.train_images: relative path '\.\./outside/coco/train' escapes", line), (
        line
    )


def test_relative_student_weights_cannot_climb_out(
    layout: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``student.weights`` is a path in the recipe like any other: same rule, resolved against the
    recipe's base folder, not the current directory."""
    data = recipe_dict(None)
    data["student"]["weights"] = "../outside/t.pt"
    recipe = write_yaml(layout["recipes"] / "r.yaml", data)
    line = one_line_error(cli(_train(recipe, layout, layout["root"] / "o")), capsys.readouterr().err)
    assert re.search(r"r\.yaml: student\.weights: relative path '\.\./outside/t\.pt' escapes", line), line


def test_recipe_name_cannot_place_the_run_outside_the_studies_folder(
    layout: dict[str, Path], teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--out`` a run goes to ``studies/runs/<name>``: the name must not be a path."""
    recipe = write_yaml(layout["recipes"] / "r.yaml", recipe_dict(teacher_ckpt, name="../../escaped"))
    line = one_line_error(cli(_train(recipe, layout)), capsys.readouterr().err)
    assert re.search(r"r\.yaml: name: ", line), line
    assert not (layout["root"] / "escaped").exists()
    assert not (layout["studies"] / "runs").exists()


def test_study_name_from_space_file_cannot_be_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, name="../escaped")
    line = one_line_error(
        cli(["search", "--space", str(space), "--studies-dir", str(tmp_path / "s")]), capsys.readouterr().err
    )
    assert re.search(r"tiny\.yaml: name: must be a folder name", line), line
    assert not (tmp_path / "escaped").exists()


# -- dashboard -------------------------------------------------------------------------------------------
def test_dashboard_binds_to_localhost_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    args = build_parser().parse_args(["dashboard"])
    assert args.host == "127.0.0.1"
    from curriculum_search import cli as cli_module

    seen: list[list[str]] = []

    def call(cmd: list[str], *args: object, **kwargs: object) -> int:
        seen.append(cmd)
        return 0

    monkeypatch.setattr(cli_module.subprocess, "call", call)
    assert cli(["dashboard", "--studies-dir", str(tmp_path)]) == 0
    (cmd,) = seen
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"


def _fake_study(root: Path) -> Path:
    """A small finished study as the search writes it (WAL SQLite, decoded curricula, run files),
    built without training: what is in it does not matter, only that readers leave it alone."""
    space_file = write_space(root)
    space = load_space(space_file)
    studies = root / "studies"
    spec = storage_spec(studies, "tiny", None)
    storage = open_storage(spec)
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    study.set_user_attr("space", to_dict(space))
    study.set_user_attr("target_trials", 3)
    for i, state in enumerate(("complete", "pruned", "fail")):
        trial = study.ask()
        choice = suggest_curriculum(trial, space)
        run_dir = spec.study_dir / "trials" / f"{choice.key}-s0"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "history.jsonl").write_text(
            json.dumps({"iteration": 4, "stage": 0, "ap": 0.1, "ap50": 0.2}) + "\n"
        )
        (run_dir / "metrics.json").write_text(json.dumps({"ap": 0.1, "ap50": 0.2}))
        (run_dir / "trial.log").write_text("log line\n")
        for k, v in {
            "curriculum": choice.as_dict(),
            "curriculum_key": choice.key,
            "description": choice.describe(),
            "run_dir": str(run_dir.relative_to(spec.study_dir)),
            "stage_boundaries": [0, 8],
        }.items():
            trial.set_user_attr(k, v)
        trial.report(0.1 * (i + 1), 4)
        if state == "complete":
            study.tell(trial, 0.3)
        elif state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr("failure_reason", "non-finite loss at iteration 3 (stage 1): kd_feature=nan")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    storage.engine.dispose()  # type: ignore[attr-defined]  # the writer is gone: -wal is folded back
    return studies


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_dashboard_reading_a_study_changes_no_file(tmp_path: Path) -> None:
    data = pytest.importorskip("curriculum_search.dashboard.data")
    studies = _fake_study(tmp_path)
    assert not (studies / "tiny" / "study.db-wal").exists()
    before = _snapshot(studies)
    found = data.discover(studies)
    assert [s.name for s in found.sources] == ["tiny"], found
    source = found.sources[0]
    for _ in range(2):
        loaded = data.load_study(source)
        for run_dir in loaded.trials["run_dir"]:
            data.load_trial_run(source, run_dir)
    assert _snapshot(studies) == before


def test_read_only_cli_commands_change_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``studies``, ``status`` and ``export`` to stdout read the study: every file stays as it was.
    (A ``mode=ro`` SQLite reader of a WAL database may create SQLite's own ``-wal``/``-shm``
    index files next to it; that is all it may add.)"""
    studies = _fake_study(tmp_path)
    before = _snapshot(studies)
    assert cli(["studies", "--studies-dir", str(studies)]) == 0
    assert cli(["status", "tiny", "--studies-dir", str(studies)]) == 0
    assert cli(["export", "--study", "tiny", "--studies-dir", str(studies)]) == 0
    out = capsys.readouterr().out
    assert "study tiny" in out and "provenance:" in out
    after = _snapshot(studies)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) <= {"tiny/study.db-wal", "tiny/study.db-shm"}
