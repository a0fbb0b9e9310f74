"""Helpers shared by test modules (instead of test files importing each other)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from curriculum_search.distill.cache import CacheConfig
from curriculum_search.errors import StudyError
from curriculum_search.search.options import SearchOptions

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
    """Quiet single-threaded search options for a tiny study under ``studies``."""
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
