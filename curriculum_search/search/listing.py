"""Listing studies and reporting one study (the ``studies`` and ``status`` commands)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curriculum_search.errors import StudyError
from curriculum_search.search.reader import UNREADABLE, StudyReader, StudyRecord
from curriculum_search.search.selection import decision_lines
from curriculum_search.search.storage import StorageSpec, live_state, open_readonly, storage_spec


@dataclass(frozen=True)
class StudyRow:
    """One line of ``studies``: a :class:`~curriculum_search.search.reader.StudyRecord` flattened.

    ``finished``/``failed`` follow the reader's count rule (a re-queued trial is counted by its
    retry); ``state`` is one of the reader's state words (the dashboard shows the same).
    """

    name: str
    storage: str
    state: str
    best_ap: float | None
    finished: int
    pruned: int
    failed: int
    running: int
    target: int | None
    full_ap: float | None
    updated: str | None
    error: str | None = None

    @classmethod
    def of(cls, r: StudyRecord) -> StudyRow:
        return cls(
            r.name,
            r.storage,
            r.state,
            r.best_value,
            r.counts.finished,
            r.counts.pruned,
            r.counts.failed,
            r.counts.running,
            r.target,
            r.full_ap,
            r.updated.strftime("%Y-%m-%dT%H:%M:%S") if r.updated else None,
        )

    @classmethod
    def unreadable(cls, name: str, storage: str, exc: BaseException) -> StudyRow:
        reason = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        return cls(name, storage, UNREADABLE, None, 0, 0, 0, 0, None, None, None, reason)


def _reader(spec: StorageSpec, name: str) -> StudyReader:
    """A reader of ``spec``; a database that cannot be opened (being created, not Optuna's) is one line."""
    try:
        return StudyReader(open_readonly(spec), spec.display)
    except StudyError:
        raise
    except Exception as exc:  # e.g. opened while another process is still creating the schema
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise StudyError(
            f"{spec.display}: cannot read study {name!r} ({type(exc).__name__}: {first}); if it is being "
            "created right now, retry in a moment, otherwise the file is not an Optuna study"
        ) from exc


def status_json(name: str, studies_root: Path, storage: str | None = None) -> dict[str, Any]:
    """One study as JSON: state, trial counts, the selection decision, fidelity, the final report.

    ``selection``/``fidelity``/``final`` are ``null`` until a selection has finished.
    """
    spec = storage_spec(studies_root, name, storage)
    reader = _reader(spec, name)
    try:
        record = reader.record(name, spec.study_dir)
    finally:
        reader.close()
    decision = dict(record.decision or {})
    full = spec.study_dir / "full" / "metrics.json"
    final = dict(decision.get("final") or {})
    if full.is_file():
        m = json.loads(full.read_text())
        final.setdefault("ap", m.get("ap"))
        final.setdefault("split", m.get("split"))
    selection = decision.get("selection")
    return {
        "study": name,
        "storage": spec.display,
        "state": record.state,
        "trials": record.counts.as_dict(),
        "selection": {k: v for k, v in selection.items() if k != "rungs"} if selection else None,
        "race": selection.get("rungs") if selection else None,
        "fidelity": decision.get("fidelity"),
        "final": final or {"ap": None, "split": None},
    }


def list_studies(studies_root: Path, storage: str | None = None) -> list[StudyRow]:
    """Every study under ``studies_root`` (and in ``storage``), read-only."""
    return [
        StudyRow.unreadable(name, display, rec) if isinstance(rec, BaseException) else StudyRow.of(rec)
        for name, display, rec in study_records(studies_root, storage)
    ]


def study_records(
    studies_root: Path, storage: str | None = None
) -> list[tuple[str, str, StudyRecord | BaseException]]:
    """``(name, storage, record or the error reading it)`` of every study under ``studies_root``
    (``<name>/study.db``) and in ``storage``; selection studies are not studies of their own."""
    out: list[tuple[str, str, StudyRecord | BaseException]] = []
    if studies_root.is_dir():
        for db in sorted(studies_root.glob("*/study.db")):
            out.extend(_records(storage_spec(studies_root, db.parent.name, None), studies_root))
    if storage:
        out.extend(_records(storage_spec(studies_root, "_remote", storage), studies_root))
    return out


def _records(spec: StorageSpec, studies_root: Path) -> list[tuple[str, str, StudyRecord | BaseException]]:
    try:
        reader = StudyReader(open_readonly(spec), spec.display)
        names = reader.names()
    except Exception as exc:
        return [(spec.study_dir.name, spec.display, exc)]
    out: list[tuple[str, str, StudyRecord | BaseException]] = []
    try:
        for name in names:
            try:
                out.append((name, spec.display, reader.record(name, studies_root / name)))
            except Exception as exc:
                out.append((name, spec.display, exc))
    finally:
        reader.close()
    return out


def format_studies(rows: list[StudyRow]) -> str:
    if not rows:
        return "no studies yet: start one with `python -m curriculum_search run`"
    head = f"{'study':<20}{'state':<18}{'best AP':>8}{'done':>6}{'pruned':>7}{'failed':>7}{'running':>8}{'full AP':>8}  updated (UTC)"
    lines = [head, "-" * len(head)]
    for r in rows:
        best = f"{r.best_ap:.3f}" if r.best_ap is not None else "-"
        full = f"{r.full_ap:.3f}" if r.full_ap is not None else "-"
        done = f"{r.finished}/{r.target}" if r.target else str(r.finished)
        why = f"  ({r.error})" if r.error else ""
        lines.append(
            f"{r.name:<20}{r.state:<18}{best:>8}{done:>6}{r.pruned:>7}{r.failed:>7}{r.running:>8}{full:>8}  {r.updated or '-'}{why}"
        )
    return "\n".join(lines)


def study_status(name: str, studies_root: Path, storage: str | None = None) -> str:
    """A readable report of one study: state, counts, top trials, baselines, selection, full run."""
    spec = storage_spec(studies_root, name, storage)
    reader = _reader(spec, name)
    try:
        trials = reader.trials(name)
        record = reader.record(name, spec.study_dir, trials=trials)
    finally:
        reader.close()
    lines = [f"study {name}  ({spec.display})", f"state: {record.state}"]
    lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in record.counts.as_dict().items() if v))
    done = sorted(
        (t for t in trials if t.state == "COMPLETE" and t.value is not None), key=lambda t: -(t.value or 0)
    )
    if done:
        lines.append("top trials:")
        for t in done[:5]:
            lines.append(
                f"  #{t.number:<4} AP {t.value:.4f}  {t.baseline or 'search':<16} {t.description or ''}"
            )
        base = [t for t in done if t.baseline]
        if base:
            lines.append("baselines:")
            for t in sorted(base, key=lambda t: t.number):
                lines.append(f"  {t.baseline:<18} AP {t.value:.4f}  (#{t.number})")
    failed = [t for t in trials if t.state == "FAIL" and t.counted]
    for t in failed[-3:]:
        lines.append(f"failed #{t.number}: {t.failure_reason or '?'}")
    if record.decision is not None:
        lines.extend(decision_lines(record.decision))
    full = spec.study_dir / "full"
    if (full / "metrics.json").is_file():
        m = json.loads((full / "metrics.json").read_text())
        lines.append(
            f"full run: AP {m['ap']:.4f} AP50 {m['ap50']:.4f} on the {m.get('split', 'val')} split ({full / 'student.pt'})"
        )
    elif (full / "status.json").is_file():
        lines.append(f"full run: {live_state(json.loads((full / 'status.json').read_text()))}")
    return "\n".join(lines)
