"""The files next to a study, read while they may be written: a trial's run folder (history,
metrics, log tail), the full run (``full/``), the selection race and a recipe's stages.
See :mod:`curriculum_search.dashboard.data`."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from curriculum_search.dashboard.sources import StudySource, open_reader, storage_error
from curriculum_search.dashboard.study_frames import to_float
from curriculum_search.errors import StudyError
from curriculum_search.search import reader as R
from curriculum_search.search.reader import StudyReader

#: Bytes of a trial log shown at most (its tail).
LOG_TAIL_BYTES = 64 * 1024


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of a JSON-lines file that is maybe being appended to.

    A missing file gives ``[]``; a malformed line (e.g. half written) is skipped. ``limit`` keeps
    the last records only.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out[-limit:] if limit else out


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or ``None`` when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def tail_text(path: Path, max_bytes: int = LOG_TAIL_BYTES) -> str | None:
    """The last ``max_bytes`` of a text file (from a line start), or ``None`` when missing."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            blob = fh.read()
    except OSError:
        return None
    text = blob.decode("utf-8", errors="replace")
    if size > max_bytes and "\n" in text:
        text = "…\n" + text.split("\n", 1)[1]
    return text


@dataclass
class TrialRun:
    """The files of one trial's proxy run (``run_dir``)."""

    run_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    log_tail: str | None = None

    @property
    def exists(self) -> bool:
        return self.run_dir is not None and self.run_dir.is_dir()


def trial_run_dir(source: StudySource, run_dir: str) -> Path | None:
    """The absolute run folder of a trial (``run_dir`` is relative to the study folder)."""
    if not run_dir:
        return None
    path = Path(run_dir)
    return path if path.is_absolute() else source.folder / path


def trial_run_files(source: StudySource, run_dir: str) -> tuple[Path, Path, Path] | None:
    """``history.jsonl``, ``metrics.json`` and ``trial.log`` of a trial (``None``: no run folder).

    With several seeds per curriculum the history and metrics of the first ``seed*`` subfolder are
    used; the log stays the trial's own.
    """
    path = trial_run_dir(source, run_dir)
    if path is None:
        return None
    files = path
    if not (path / "history.jsonl").is_file() and path.is_dir():
        seeds = sorted(p for p in path.glob("seed*") if (p / "history.jsonl").is_file())
        if seeds:
            files = seeds[0]
    return files / "history.jsonl", files / "metrics.json", path / "trial.log"


def load_trial_run(source: StudySource, run_dir: str) -> TrialRun:
    """History, final metrics and the tail of the log of a trial's run folder."""
    files = trial_run_files(source, run_dir)
    if files is None:
        return TrialRun(None)
    history, metrics, log = files
    return TrialRun(
        log.parent,
        history=read_jsonl(history),
        metrics=read_json(metrics),
        log_tail=tail_text(log),
    )


def stage_metrics(history: Sequence[Mapping[str, Any]], stages: pd.DataFrame) -> pd.DataFrame:
    """Per-stage metrics of a run: the last evaluation inside each stage and the stage's best AP.

    Args:
        history: evaluation records (``iteration``, ``ap``, ``ap50``, optional ``stage``).
        stages: the run's rows of ``StudyData.stages`` (``position``, ``teacher``, ``start``, ``end``).

    Returns:
        One row per stage: ``stage``, ``teacher``, ``iterations`` (``start–end``), ``evals``,
        ``ap_end``, ``ap50_end``, ``best_ap``, ``gain`` (AP at the stage end minus at its start).
    """
    rows = []
    evals = [
        h
        for h in history
        if isinstance(h.get("iteration"), int | float) and isinstance(h.get("ap"), int | float)
    ]
    prev_ap = math.nan
    for _, st_row in stages.sort_values("position").iterrows():
        start, end = int(st_row["start"]), int(st_row["end"])
        inside = [h for h in evals if start < h["iteration"] <= end]
        last = inside[-1] if inside else None
        ap_end = float(last["ap"]) if last else math.nan
        rows.append(
            {
                "stage": int(st_row["position"]),
                "teacher": st_row["teacher"],
                "iterations": f"{start}–{end}",
                "evals": len(inside),
                "ap_end": ap_end,
                "ap50_end": to_float(last.get("ap50")) if last else math.nan,
                "best_ap": max((float(h["ap"]) for h in inside), default=math.nan),
                "gain": ap_end - prev_ap if not math.isnan(prev_ap) else math.nan,
            }
        )
        if not math.isnan(ap_end):
            prev_ap = ap_end
    return pd.DataFrame(
        rows, columns=["stage", "teacher", "iterations", "evals", "ap_end", "ap50_end", "best_ap", "gain"]
    )


@dataclass
class FullRun:
    """The full-length run of the best curriculum (``studies/<name>/full/``)."""

    folder: Path
    status: dict[str, Any] | None
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    student_exists: bool
    boundaries: list[int]
    stage_names: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """``running`` / ``done`` / ``failed`` from ``status.json``; ``done`` if only metrics exist
        (the reader's :func:`~curriculum_search.search.reader.full_run_state`)."""
        return R.full_run_state(self.status, self.metrics, bool(self.history))


def load_full_run(source: StudySource) -> FullRun | None:
    """The full run's status, history and metrics, or ``None`` when it has not started."""
    folder = source.folder / "full"
    if not folder.is_dir():
        return None
    status = read_json(folder / "status.json")
    history = read_jsonl(folder / "history.jsonl")
    metrics = read_json(folder / "metrics.json")
    if status is None and not history and metrics is None:
        return None
    bounds, names = recipe_stages(folder / "recipe.yaml")  # the recipe the full run trains
    if not bounds:
        bounds, names = recipe_stages(source.folder / "best_recipe.yaml")
    return FullRun(
        folder=folder,
        status=status,
        history=history,
        metrics=metrics,
        student_exists=(folder / "student.pt").is_file(),
        boundaries=bounds,
        stage_names=names,
    )


@dataclass(frozen=True)
class Race:
    """The selection race of a study: one row per race run, and the decision once it is made."""

    runs: pd.DataFrame
    decision: dict[str, Any] | None


RACE_COLUMNS = ("number", "state", "arm", "role", "iterations", "seed", "value", "report_ap", "description")


def load_race(source: StudySource, reader: StudyReader | None = None) -> Race | None:
    """The race runs (study ``<name>:selection`` in the same storage), or ``None`` before any."""
    if reader is None:
        reader = open_reader(source.url)
    try:
        race = reader.race(source.name)
        decision = reader.decision(source.name) if race is not None else None
    except StudyError as exc:
        raise storage_error(source.location, exc.__cause__ or exc) from None
    except Exception as exc:
        raise storage_error(source.location, exc) from None
    finally:
        reader.close()
    if race is None:
        return None
    rows = [
        {
            "number": t.number,
            "state": t.state.lower(),
            "arm": t.arm,
            "role": t.role,
            "iterations": t.iterations,
            "seed": t.seed,
            "value": t.value if t.value is not None else math.nan,
            "report_ap": t.report_ap if t.report_ap is not None else math.nan,
            "description": t.description or "",
        }
        for t in race
        if not t.interrupted
    ]
    return Race(pd.DataFrame(rows, columns=list(RACE_COLUMNS)), decision)


def recipe_stages(path: Path) -> tuple[list[int], list[str]]:
    """Stage boundaries (start of each stage plus the total) and stage teachers of a recipe YAML.

    A stage without teacher is called ``student``; ``([], [])`` when the file is missing or odd.
    """
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # missing, unreadable or not YAML
        return [], []
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        return [], []
    bounds, names = [0], []
    for s in stages:
        its = s.get("iterations")
        if not isinstance(its, int):
            return [], []
        bounds.append(bounds[-1] + its)
        teachers = s.get("teachers")
        if isinstance(teachers, list) and teachers:
            t = teachers[0]
            names.append(str(t.get("name", t)) if isinstance(t, dict) else str(t))
        else:
            names.append("student")
    return bounds, names
