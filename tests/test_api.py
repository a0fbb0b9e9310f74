"""The public Python API re-exported from ``curriculum_search``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import curriculum_search as cs
from curriculum_search.errors import ConfigError, StudyError
from tests.helpers import REPO


def test_importing_the_package_does_not_import_torch():
    code = "import sys, curriculum_search as cs; cs.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_api_names_are_exported_and_documented():
    for name in (
        "load_space",
        "run",
        "run_search",
        "select",
        "train",
        "export_recipe",
        "list_studies",
        "list_models",
    ):
        fn = getattr(cs, name)
        assert callable(fn) and fn.__doc__
    with pytest.raises(AttributeError):
        _ = cs.no_such_function  # type: ignore[attr-defined]


def test_list_models_names_what_a_space_can_use():
    m = cs.list_models()
    assert {"fcos", "retinanet", "faster_rcnn"} <= set(m["archs"])
    assert "mgd" in m["feature_losses"] and "linear" in m["decays"] and "wbf" in m["fusers"]
    assert "tpe" in m["samplers"] and "median" in m["pruners"]


def test_load_space_and_study_lookups(tmp_path: Path):
    space = cs.load_space(REPO / "space" / "tiny.yaml")
    assert space.name == "tiny" and space.split_names() == ("holdout", "val")
    assert cs.list_studies(tmp_path / "none") == []
    with pytest.raises(StudyError):
        cs.export_recipe("missing", tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstudent: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        cs.load_space(bad)
