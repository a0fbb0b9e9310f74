"""Listing studies and reporting one study (the ``studies`` and ``status`` commands)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from curriculum_search.search.results import best_trial
from curriculum_search.search.selection import decision_lines, is_selection_study, load_decision
from curriculum_search.search.storage import StorageSpec, load_study_readonly, storage_spec
from curriculum_search.search.study import FINISHED


@dataclass
class StudyRow:
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


def status_json(name: str, studies_root: Path, storage: str | None = None) -> dict[str, Any]:
    """One study as JSON: trial counts, the selection decision, fidelity, the final held-out report.

    ``selection``/``fidelity``/``final`` are ``null`` until a selection has finished.
    """
    spec = storage_spec(studies_root, name, storage)
    study = load_study_readonly(spec, name)
    trials = study.get_trials(deepcopy=False)
    decision = load_decision(spec, name) or {}
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
        "trials": {st.name.lower(): sum(1 for t in trials if t.state == st) for st in TrialState},
        "selection": {k: v for k, v in selection.items() if k != "rungs"} if selection else None,
        "race": selection.get("rungs") if selection else None,
        "fidelity": decision.get("fidelity"),
        "final": final or {"ap": None, "split": None},
    }


def list_studies(studies_root: Path, storage: str | None = None) -> list[StudyRow]:
    """Every study under ``studies_root`` (and in ``storage``), read-only."""
    rows: list[StudyRow] = []
    if studies_root.is_dir():
        for db in sorted(studies_root.glob("*/study.db")):
            rows.extend(_rows(storage_spec(studies_root, db.parent.name, None), studies_root))
    if storage:
        rows.extend(_rows(storage_spec(studies_root, "_remote", storage), studies_root))
    return rows


def _rows(spec: StorageSpec, studies_root: Path) -> list[StudyRow]:
    from curriculum_search.search.storage import open_readonly

    try:
        summaries = optuna.get_all_study_summaries(open_readonly(spec), include_best_trial=False)
    except Exception as exc:
        return [
            StudyRow(
                spec.study_dir.name,
                spec.display,
                f"unreadable: {str(exc).splitlines()[0][:80]}",
                None,
                0,
                0,
                0,
                0,
                None,
                None,
                None,
            )
        ]
    out = []
    for s in summaries:
        if is_selection_study(s.study_name):  # a study's race runs, shown with the study itself
            continue
        study = load_study_readonly(spec, s.study_name)
        trials = study.get_trials(deepcopy=False)
        count = {st: sum(1 for t in trials if t.state == st) for st in TrialState}
        bt = best_trial(study)
        target = study.user_attrs.get("target_trials")
        done = sum(1 for t in trials if t.state in FINISHED and not t.user_attrs.get("requeued"))
        finished = done
        full = studies_root / s.study_name / "full" / "metrics.json"
        full_ap = json.loads(full.read_text()).get("ap") if full.is_file() else None
        updated = max(
            (t.datetime_complete or t.datetime_start for t in trials if t.datetime_start), default=None
        )
        state = (
            "running" if count[TrialState.RUNNING] else ("done" if target and done >= target else "paused")
        )
        if full_ap is not None:
            state = "done + full run"
        out.append(
            StudyRow(
                s.study_name,
                spec.display,
                state,
                bt.value if bt else None,
                finished,
                count[TrialState.PRUNED],
                count[TrialState.FAIL],
                count[TrialState.RUNNING],
                target,
                full_ap,
                updated.isoformat(timespec="seconds") if updated else None,
            )
        )
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
        lines.append(
            f"{r.name:<20}{r.state:<18}{best:>8}{done:>6}{r.pruned:>7}{r.failed:>7}{r.running:>8}{full:>8}  {r.updated or '-'}"
        )
    return "\n".join(lines)


def study_status(name: str, studies_root: Path, storage: str | None = None) -> str:
    """A readable report of one study: counts, top trials, baselines, full run."""
    spec = storage_spec(studies_root, name, storage)
    study = load_study_readonly(spec, name)
    trials = study.get_trials(deepcopy=False)
    lines = [f"study {name}  ({spec.display})"]
    count = {st.name.lower(): sum(1 for t in trials if t.state == st) for st in TrialState}
    lines.append("trials: " + ", ".join(f"{v} {k}" for k, v in count.items() if v))
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -(t.value or 0))
    if done:
        lines.append("top trials:")
        for t in done[:5]:
            lines.append(
                f"  #{t.number:<4} AP {t.value:.4f}  {t.user_attrs.get('baseline') or 'search':<16} {t.user_attrs.get('description', '')}"
            )
        base = [t for t in done if t.user_attrs.get("baseline")]
        if base:
            lines.append("baselines:")
            for t in sorted(base, key=lambda t: t.number):
                lines.append(f"  {t.user_attrs['baseline']:<18} AP {t.value:.4f}  (#{t.number})")
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("requeued")]
    for t in failed[-3:]:
        lines.append(f"failed #{t.number}: {t.user_attrs.get('failure_reason', '?')}")
    decision = load_decision(spec, name)
    if decision is not None:
        lines.extend(decision_lines(decision))
    full = spec.study_dir / "full"
    if (full / "metrics.json").is_file():
        m = json.loads((full / "metrics.json").read_text())
        lines.append(
            f"full run: AP {m['ap']:.4f} AP50 {m['ap50']:.4f} on the {m.get('split', 'val')} split ({full / 'student.pt'})"
        )
    elif (full / "status.json").is_file():
        lines.append(f"full run: {json.loads((full / 'status.json').read_text())['state']}")
    return "\n".join(lines)
