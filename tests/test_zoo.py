"""The teacher zoo: missing teachers train side by side on a CPU, and a rerun trains nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.helpers import write_space


def test_zoo_trains_teachers_side_by_side_and_a_rerun_trains_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from curriculum_search.models import load_checkpoint
    from curriculum_search.search.encoding import zoo_checkpoint_path
    from curriculum_search.search.space import load_space
    from curriculum_search.search.zoo import build_zoo

    space = load_space(write_space(tmp_path))
    studies = tmp_path / "studies"
    with caplog.at_level(logging.INFO, logger="curriculum_search.search.zoo"):
        infos = build_zoo(
            space, studies, device="cpu", threads=1, processes=2, progress=False, reference=False
        )
    assert "2 at once with 1 thread(s) each" in caplog.text, caplog.text
    assert sorted(i.name for i in infos) == ["a", "b"]
    for name in ("a", "b"):
        ckpt = zoo_checkpoint_path(space, name, studies)
        assert load_checkpoint(ckpt)["state_dict"], name  # complete and verified against its sha256
    assert all(i.ready and i.ap is not None for i in infos), infos
    stamps = {n: zoo_checkpoint_path(space, n, studies).stat().st_mtime_ns for n in ("a", "b")}

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="curriculum_search.search.zoo"):
        build_zoo(space, studies, device="cpu", threads=1, processes=2, progress=False, reference=False)
    assert "training" not in caplog.text, caplog.text
    assert stamps == {n: zoo_checkpoint_path(space, n, studies).stat().st_mtime_ns for n in ("a", "b")}


def test_zoo_parallelism_splits_the_cores_and_keeps_one_process_on_a_gpu() -> None:
    from curriculum_search.search import zoo
    from curriculum_search.search.space import space_from_dict
    from tests.helpers import TINY

    space = space_from_dict(TINY)
    cores = __import__("os").cpu_count() or 1
    assert zoo._zoo_parallelism(space, ["a"], "cpu", None) == (1, 0)  # one teacher: as before
    at_once, per = zoo._zoo_parallelism(space, ["a", "b"], "cpu", None)
    assert at_once == min(2, cores) and per == max(1, cores // at_once)
    assert zoo._zoo_parallelism(space, ["a", "b"], "cpu", cores)[0] == 1  # --threads = all cores
    if __import__("torch").cuda.is_available():
        assert zoo._zoo_parallelism(space, ["a", "b"], "cuda", None)[0] == 1
