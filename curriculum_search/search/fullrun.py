"""The full run: select the curriculum to ship (race), make its full-length run the study's student.

``run`` ends here: :func:`run_full` races the search's shortlist against the best baseline
(:mod:`~curriculum_search.search.selection`, resumable) and ships the winner's first full-length
run as ``<study>/full/student.pt`` with its held-out metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from curriculum_search.search.options import SearchOptions, study_name
from curriculum_search.search.selection import SelectionOutcome, decision_lines, run_selection, ship
from curriculum_search.search.space import SearchSpace
from curriculum_search.search.storage import running_marker, storage_spec
from curriculum_search.utils.io import atomic_write_text


@dataclass(frozen=True)
class FullResult:
    """The shipped student and its report."""

    student_path: Path
    metrics: dict[str, Any]
    outcome: SelectionOutcome

    @property
    def ap(self) -> float | None:
        return self.metrics.get("ap")


def run_full(space: SearchSpace, opts: SearchOptions) -> FullResult:
    """Select (or resume selecting) the curriculum to ship and write ``<study>/full``."""
    name = study_name(space, opts)
    spec = storage_spec(opts.studies_root, name, opts.storage)
    status = spec.study_dir / "full" / "status.json"
    # "running" with this process' PID and the study lock: a reader that finds the lock free (the
    # process was killed) shows "interrupted" instead of "running" forever (storage.live_state)
    if not (status.parent / "metrics.json").is_file():  # a finished full run keeps its "done"
        _status(status, "running", extra=running_marker(spec, name))
    try:
        outcome = run_selection(space, opts)
    except BaseException as exc:
        if status.parent.is_dir():
            _status(status, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", str(exc)[:300])
        raise
    path = ship(space, opts, outcome)
    for line in decision_lines(outcome.summary):
        opts.echo(line)
    metrics = json.loads((path.parent / "metrics.json").read_text())
    return FullResult(path, metrics, outcome)


def _status(path: Path, state: str, error: str | None = None, extra: dict[str, Any] | None = None) -> None:
    atomic_write_text(
        path,
        json.dumps(
            {
                "state": state,
                "trial": None,
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "error": error,
                **(extra or {}),
            }
        ),
    )


__all__ = ["FullResult", "run_full"]
