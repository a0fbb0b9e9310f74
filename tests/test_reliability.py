"""Reliability, second wave (issue 15): secrets, the dashboard's address, small file-level
guarantees; see also ``test_bad_input.py`` (second bad-input list) and ``test_soak.py``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from curriculum_search.utils.io import atomic_write_text, dump_yaml


# -- 10. small ones -------------------------------------------------------------------------------
def test_atomic_writes_keep_the_usual_file_mode(tmp_path: Path) -> None:
    """``mkstemp`` creates 0600 files: results written atomically (metrics, recipes, status) were
    unreadable to the group / other users sharing a studies folder; they get the umask mode."""
    old = os.umask(0o022)
    try:
        for path in (atomic_write_text(tmp_path / "a.json", "{}"), tmp_path / "b.yaml"):
            if path.name == "b.yaml":
                dump_yaml({"a": 1}, path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "c.json", "{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)
