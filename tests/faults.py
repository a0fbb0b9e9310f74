"""Faults injected into trial processes by the reliability tests (never imported by the package).

A test puts a folder holding a ``sitecustomize.py`` that calls :func:`install` first on the
trial processes' ``PYTHONPATH`` and names the fault in ``CS_TEST_FAULT``:

* ``disk_full`` - every run fails at its first checkpoint with ENOSPC;
* ``hang_once`` - the first trial process stops itself (SIGSTOP) before training, as a hung
  loader or a stale mount would; its PID goes to the file named by ``CS_TEST_MARKER``.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import torch

from curriculum_search.distill.feature import FeatureLoss

SITECUSTOMIZE = """
import os
if os.environ.get("CS_TEST_FAULT"):
    from tests.faults import install
    install(os.environ["CS_TEST_FAULT"])
"""


def install(mode: str) -> None:
    from curriculum_search.curriculum import trainer

    real = trainer.run_recipe

    def disk_full(recipe: Any, options: Any) -> Any:
        path = Path(options.out_dir) / "checkpoints" / "last.pt"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def hang_once(recipe: Any, options: Any) -> Any:
        marker = Path(os.environ["CS_TEST_MARKER"])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return real(recipe, options)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGSTOP)
        return real(recipe, options)

    trainer.run_recipe = {"disk_full": disk_full, "hang_once": hang_once}[mode]


def inject(folder: Path, monkeypatch: Any, mode: str, **env: str) -> None:
    """Make trial processes started from now on (children) run with fault ``mode``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(repo)]))
    monkeypatch.setenv("CS_TEST_FAULT", mode)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


class BrokenFeatureLoss(FeatureLoss):
    """Test-only feature loss: returns a non-finite value or raises out-of-memory (registered as
    ``broken_test`` by ``test_bad_input.py``, in its own process and in trial processes)."""

    def __init__(self, student_channels: int, teacher_channels: int, num_levels: int, *, mode: str = "nan"):
        super().__init__(student_channels, teacher_channels, num_levels)
        self.mode = mode

    def compute(
        self, student: list[torch.Tensor], teacher: list[torch.Tensor], targets: Any, image_size: Any
    ):
        if self.mode == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        bad = float("nan") if self.mode == "nan" else float("inf")
        return sum(s.mean() for s in student) * 0 + bad
