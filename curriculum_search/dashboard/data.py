"""Read-only loading of studies, trial run files and full runs into pandas / dataclasses.

Nothing here writes: SQLite studies are opened through a read-only URI, so the dashboard never
takes a write lock, never blocks the search that is writing the study, and never creates a file
in the studies folder (see :func:`readonly_sqlite_url`). Every function is plain Python (no
Streamlit) so tests and the benchmark call them directly; :mod:`.pages` caches them.

Studies are read by the package's one study reader (:mod:`curriculum_search.search.reader`:
Optuna's storage API, the same records, count rule and state words as the ``studies`` command);
this module turns its records into frames. :mod:`.pages` keeps one reader per storage
(:func:`open_reader`, :func:`reader_key`) so that a refresh reads only new and unfinished trials.

Frames produced by :func:`load_study` (one row per trial unless said otherwise):

* ``trials``: ``number``, ``state`` (``COMPLETE`` / ``PRUNED`` / ``FAIL`` / ``RUNNING`` /
  ``WAITING``), ``value`` (final proxy AP), ``baseline`` (name or ``""``), ``kind``
  (``baseline`` / ``search``), ``description``, ``teachers`` (``"a → b"``), ``first_teacher``,
  ``last_teacher``, ``n_stages``, ``total_iterations``, ``proxy_cost``, ``constraint`` (largest
  constraint value, ≤ 0 = feasible), ``feasible``, ``wall_time_s``, ``start`` / ``complete``
  (UTC), ``last_step`` / ``last_value`` (latest intermediate AP), ``pruned_at``,
  ``failure_reason``, ``reused_from``, ``retry_of``, ``requeued`` (counted by its retry, not
  itself), ``curriculum_key``, ``run_dir``, ``ap50``
  and one ``param:<name>`` column per Optuna parameter.
* ``curves``: long form ``number``, ``step`` (global iteration), ``value`` (AP).
* ``stages``: long form ``number``, ``position`` (1-based), ``teacher``, ``start``, ``end``,
  ``iterations``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search import reader as R
from curriculum_search.search.reader import StudyReader, TrialCounts, TrialRecord
from curriculum_search.search.storage import SQLITE_MAGIC as _SQLITE_MAGIC
from curriculum_search.search.storage import readonly_sqlite_url, server_connect_url
from curriculum_search.search.storage import redact_url as _redact
from curriculum_search.utils.io import dump_yaml

#: Baseline names in display order (the values of the ``baseline`` trial attribute).
BASELINE_ORDER = ("student_only", "direct_strongest", "weak_to_strong", "heuristic")
#: Human labels of the baselines.
BASELINE_LABELS = {
    "student_only": "student only (no KD)",
    "direct_strongest": "direct KD from the strongest",
    "weak_to_strong": "weak → strong",
    "heuristic": "heuristic order",
}
#: Trial states in display order.
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
#: Folders of ``studies/`` that are not studies (caches, teacher zoo, other runs).
RESERVED_DIRS = ("_cache", "_zoo", "runs")
#: Seconds between reloads of a server-database study (files are reloaded when they change).
SERVER_TTL_S = 10.0
#: Bytes of a trial log shown at most (its tail).
LOG_TAIL_BYTES = 64 * 1024


# -- where studies live ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySource:
    """One study to show: its name, its storage URL and the folder holding its files.

    Attributes:
        name: Optuna study name.
        url: storage URL as given (``sqlite:///abs/path``, ``journal:PATH``, ``postgresql://...``).
        folder: ``studies/<name>/`` (run files, recipe, full run); may not exist for a server study.
    """

    name: str
    url: str
    folder: Path

    @property
    def location(self) -> str:
        """Where the study is read from, password hidden."""
        path = sqlite_path(self.url)
        if path is not None:
            return str(path)
        return redact_url(self.url)

    @property
    def is_local_file(self) -> bool:
        """True for SQLite and journal storages (their change time tells when to reload)."""
        return sqlite_path(self.url) is not None or self.url.startswith("journal:")


@dataclass(frozen=True)
class Problem:
    """Something that could not be read, with a one-line reason for the page."""

    where: str
    message: str


@dataclass(frozen=True)
class Discovery:
    """Studies found under the studies folder and in extra storages, and what failed."""

    sources: tuple[StudySource, ...]
    problems: tuple[Problem, ...]


def redact_url(url: str) -> str:
    """Hide the password of a database URL (``postgresql://user:***@host/db``, ``?password=***``)."""
    return _redact(url)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (``None`` for other storages)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :]
    if rest.startswith("file:"):
        rest = rest[len("file:") :].split("?", 1)[0]
    return Path(rest)


def open_readonly_storage(url: str) -> Any:
    """Open an Optuna storage for reading only.

    SQLite: :func:`readonly_sqlite_url`; ``journal:PATH``: the journal file (never created);
    server databases: :class:`optuna.storages.RDBStorage` without table creation or version
    check (PostgreSQL sessions are also set read-only).

    Raises:
        StudyError: the file is missing or not a database, or the server cannot be reached.
    """
    import optuna

    path = sqlite_path(url)
    if path is not None:
        if not path.is_file():
            raise StudyError(f"{path}: no such study database")
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise StudyError(f"{path}: cannot read the study database ({exc.strerror})") from None
        if head and head != _SQLITE_MAGIC:
            raise StudyError(f"{path}: not an SQLite database (an Optuna study.db was expected)")
        try:
            return optuna.storages.RDBStorage(
                readonly_sqlite_url(path),
                skip_compatibility_check=True,
                skip_table_creation=True,
                engine_kwargs={"connect_args": {"timeout": 10}},
            )
        except Exception as exc:
            raise _storage_error(str(path), exc) from None
    if url.startswith("journal:"):
        jpath = Path(url.split(":", 1)[1]).expanduser()
        if not jpath.is_file():
            raise StudyError(f"{jpath}: no such journal file")
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(jpath)))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {
            "options": "-c default_transaction_read_only=on",
            "connect_timeout": 5,
        }
    try:
        return optuna.storages.RDBStorage(
            server_connect_url(url),
            skip_compatibility_check=True,
            skip_table_creation=True,
            engine_kwargs=engine_kwargs,
        )
    except ImportError as exc:
        raise StudyError(f"{redact_url(url)}: database driver missing ({exc})") from None
    except Exception as exc:
        raise StudyError(f"{redact_url(url)}: cannot open the storage ({_first_line(exc)})") from None


def close_storage(storage: Any) -> None:
    """Release the connections of an RDB storage (no-op for other storages)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def open_reader(url: str) -> StudyReader:
    """A :class:`~curriculum_search.search.reader.StudyReader` on :func:`open_readonly_storage`.

    Keep it (the pages keep one per :func:`reader_key`) to make re-reads fetch only new and
    unfinished trials; :func:`load_study` releases its connections after each read.
    """
    path = sqlite_path(url)
    return StudyReader(open_readonly_storage(url), str(path) if path is not None else redact_url(url))


def reader_key(url: str) -> str:
    """The URL a reader of ``url`` opens now: a SQLite study is read with ``immutable=1`` only while
    no writer has it open (see :func:`readonly_sqlite_url`), so a kept reader is keyed by this."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return url
    return readonly_sqlite_url(path)


def _first_line(exc: BaseException) -> str:
    """First line of the root cause of ``exc`` (Optuna wraps SQLAlchemy wraps sqlite3)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    exc = getattr(exc, "orig", None) or exc
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:200]


def _storage_error(where: str, exc: BaseException) -> StudyError:
    """A one-line :class:`StudyError` explaining why a storage could not be read."""
    if isinstance(exc, StudyError):
        return exc
    msg = _first_line(exc)
    low = msg.lower()
    if "no such table" in low:
        return StudyError(f"{where}: not an Optuna study database ({msg})")
    if "file is not a database" in low or "malformed" in low:
        return StudyError(f"{where}: the database file is damaged or not SQLite ({msg})")
    if "unable to open" in low or "readonly" in low or "permission" in low:
        return StudyError(f"{where}: cannot open the database read-only ({msg})")
    if "locked" in low:
        return StudyError(f"{where}: the database is locked by a writer, retrying at the next refresh")
    return StudyError(f"{where}: cannot read the study ({type(exc).__name__}: {msg})")


def discover(studies_dir: Path, storages: Sequence[str] = ()) -> Discovery:
    """Every study under ``studies_dir`` (``<name>/study.db``) plus every study of ``storages``.

    A folder study is named after its folder. Studies of an extra storage keep their own names;
    their files (run logs, recipe, full run) are looked up in ``studies_dir/<name>/``.
    Unreadable extra storages become :class:`Problem` entries instead of raising.
    """
    import optuna

    sources: list[StudySource] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    if studies_dir.is_dir():
        for child in sorted(studies_dir.iterdir()):
            if not child.is_dir() or child.name.startswith((".", "_")) or child.name in RESERVED_DIRS:
                continue
            db = child / "study.db"
            if db.is_file():
                src = StudySource(child.name, f"sqlite:///{db.resolve()}", child)
                sources.append(src)
                seen.add((src.name, str(db.resolve())))
    for url in storages:
        url = url.strip()
        if not url:
            continue
        where = redact_url(url)
        try:
            reader = open_reader(url)
            try:
                all_names = optuna.get_all_study_names(storage=reader.storage)
                names = reader.names()  # a study's race runs are shown on that study's pages
            finally:
                reader.close()
        except Exception as exc:
            problems.append(Problem(where, str(_storage_error(where, exc))))
            continue
        if not all_names:
            problems.append(Problem(where, f"{where}: holds no study yet"))
        path = sqlite_path(url)
        for name in names:
            ident = (name, str(path.resolve()) if path is not None else url)
            if ident in seen:
                continue
            seen.add(ident)
            sources.append(StudySource(name, url, studies_dir / name))
    return Discovery(tuple(sources), tuple(problems))


def change_token(source: StudySource, now: float | None = None) -> tuple[Any, ...]:
    """A value that changes when the study may have changed: file sizes and change times for
    local storages, a :data:`SERVER_TTL_S` time bucket for server databases. Use it as a cache key.
    """
    files: list[Path] = []
    path = sqlite_path(source.url)
    if path is not None:
        files = [path, path.with_name(path.name + "-wal")]
    elif source.url.startswith("journal:"):
        files = [Path(source.url.split(":", 1)[1]).expanduser()]
    else:
        return ("bucket", int((time.time() if now is None else now) // SERVER_TTL_S))
    return tuple(_stat(p) for p in files)


def files_token(paths: Iterable[Path]) -> tuple[Any, ...]:
    """Size and change time of each path (``None`` when absent): a cache key for file reads."""
    return tuple(_stat(p) for p in paths)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# -- one study ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamInfo:
    """How a parameter is distributed: ``kind`` float/int/categorical, log scale, choices."""

    kind: str
    log: bool = False
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        """The Optuna distribution this summary describes (``None`` if unknown)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int" and self.low is not None and self.high is not None:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        if self.kind == "float" and self.low is not None and self.high is not None:
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        return None


@dataclass
class StudyData:
    """Everything the pages show about one study, as plain picklable data.

    Attributes:
        source: where it was read from.
        direction: ``maximize`` or ``minimize``.
        attrs: study user attributes (``space``, ``teacher_info``, ``target_trials``, ...).
        trials / curves / stages: the frames described in the module docstring.
        trial_attrs: number -> user attributes of the trial (curriculum, metrics, ...).
        trial_params: number -> Optuna parameters of the trial.
        param_info: parameter name -> distribution summary.
        loaded_at: when this was read (UTC).
        constraint_names: names of the trials' constraints.
        tally: the trials counted by the reader's count rule (a re-queued trial is counted by its
            retry); the study table, the overview and ``studies`` all show these numbers.
        race_running / decision: a race run of the selection study is running; the race's decision.
    """

    source: StudySource
    direction: str
    attrs: dict[str, Any]
    trials: pd.DataFrame
    curves: pd.DataFrame
    stages: pd.DataFrame
    trial_attrs: dict[int, dict[str, Any]]
    trial_params: dict[int, dict[str, Any]]
    param_info: dict[str, ParamInfo]
    loaded_at: datetime
    constraint_names: tuple[str, ...] = ()
    tally: TrialCounts = field(default_factory=TrialCounts)
    race_running: bool = False
    decision: dict[str, Any] | None = None

    @property
    def maximize(self) -> bool:
        return self.direction != "minimize"

    def counts(self) -> dict[str, int]:
        """Number of trials in each Optuna state of :data:`STATES` (re-queued trials are FAIL here;
        :attr:`tally` applies the count rule)."""
        vc = self.trials["state"].value_counts() if len(self.trials) else pd.Series(dtype=int)
        return {s: int(vc.get(s, 0)) for s in STATES}

    def complete(self) -> pd.DataFrame:
        """Finished trials with a value, best first."""
        df = self.trials[(self.trials["state"] == "COMPLETE") & self.trials["value"].notna()]
        return df.sort_values(["value", "number"], ascending=[not self.maximize, True])

    def best(self) -> pd.Series | None:
        """The best finished trial (baselines included), or ``None``."""
        df = self.complete()
        return None if df.empty else df.iloc[0]

    def best_search(self) -> pd.Series | None:
        """The best finished searched (non-baseline) trial, or ``None``."""
        df = self.complete()
        df = df[df["kind"] == "search"]
        return None if df.empty else df.iloc[0]

    def baselines(self) -> dict[str, pd.Series]:
        """Baseline name -> its trial (the best finished one, else the latest), in display order.

        A student-only result kept as a study attribute (``student_only`` = ``{"ap": ...}``)
        instead of a trial is returned as a row with ``number`` -1.
        """
        out: dict[str, pd.Series] = {}
        df = self.trials[self.trials["baseline"] != ""]
        for name in BASELINE_ORDER:
            rows = df[df["baseline"] == name]
            if rows.empty:
                continue
            done = rows[(rows["state"] == "COMPLETE") & rows["value"].notna()]
            if not done.empty:
                out[name] = done.sort_values("value", ascending=not self.maximize).iloc[0]
            else:
                out[name] = rows.sort_values("number").iloc[-1]
        if "student_only" not in out:
            row = _attr_baseline(self.attrs.get(A.STUDENT_ONLY_RESULT))
            if row is not None:
                out = {"student_only": row, **out}
        return out

    @property
    def teacher_info(self) -> list[dict[str, Any]]:
        info = self.attrs.get(A.TEACHER_INFO) or []
        return [dict(t) for t in info if isinstance(t, Mapping) and "name" in t]

    @property
    def teacher_names(self) -> list[str]:
        """Teachers ordered by the pool (``teacher_info``), then any other teacher seen in stages."""
        names = [str(t["name"]) for t in self.teacher_info]
        for t in self.stages["teacher"].unique() if len(self.stages) else []:
            if t not in names:
                names.append(str(t))
        return names

    @property
    def target_trials(self) -> int | None:
        return R.target_of(self.attrs)

    @property
    def cost_cap(self) -> float | None:
        """``constraints.max_proxy_cost`` of the study's space, if set."""
        space = self.attrs.get(A.SPACE) or {}
        cap = (space.get("constraints") or {}).get("max_proxy_cost") if isinstance(space, Mapping) else None
        return float(cap) if isinstance(cap, int | float) else None

    @property
    def last_update(self) -> datetime | None:
        """Latest trial start or completion (UTC)."""
        if self.trials.empty:
            return None
        times = pd.concat([self.trials["start"], self.trials["complete"]]).dropna()
        return None if times.empty else times.max().to_pydatetime()


def _attr_baseline(value: Any) -> pd.Series | None:
    """A study-attribute student-only result as a pseudo trial row."""
    if not isinstance(value, Mapping):
        return None
    ap = value.get("ap", value.get("value"))
    if not isinstance(ap, int | float):
        return None
    return pd.Series(
        {
            "number": -1,
            "state": "COMPLETE",
            "value": float(ap),
            "baseline": "student_only",
            "kind": "baseline",
            "description": str(value.get("description", "student only")),
            "proxy_cost": value.get("proxy_cost", math.nan),
            "wall_time_s": value.get("wall_time_s", math.nan),
            "ap50": value.get("ap50", math.nan),
        }
    )


def load_study(source: StudySource, reader: StudyReader | None = None) -> StudyData:
    """Read one study (all trials, with Optuna's storage API) into a :class:`StudyData`.

    ``reader``: a kept reader of the study's storage (:func:`open_reader`); a re-read through it
    fetches only new and unfinished trials. Without one, a reader is opened for this read.

    Raises:
        StudyError: one line saying why the study cannot be read.
    """
    import optuna

    where = source.location
    if reader is None:
        reader = open_reader(source.url)
    try:
        try:
            if not reader.has_study(source.name):
                names = optuna.get_all_study_names(storage=reader.storage)
                found = f"; it holds {', '.join(sorted(names))}" if names else "; it holds no study"
                raise StudyError(f"{where}: no study named {source.name!r}{found}")
            trials = reader.trials(source.name)
            attrs = reader.attrs(source.name)
            direction = reader.direction(source.name)
            race = reader.race(source.name) or ()
            decision = reader.decision(source.name)
        except StudyError as exc:
            if exc.__cause__ is not None:  # the reader's wrapping of a storage error
                raise _storage_error(where, exc.__cause__) from None
            raise
        except Exception as exc:
            raise _storage_error(where, exc) from None
    finally:
        reader.close()
    return build_study_data(
        source,
        direction,
        attrs,
        trials,
        race_running=any(t.state == "RUNNING" for t in race),
        decision=decision,
    )


def build_study_data(
    source: StudySource,
    direction: str,
    attrs: Mapping[str, Any],
    trials: Sequence[Any],
    *,
    race_running: bool = False,
    decision: Mapping[str, Any] | None = None,
) -> StudyData:
    """Turn trial records (or Optuna trials) into the frames of :class:`StudyData` (one pass)."""
    records = [t if isinstance(t, TrialRecord) else TrialRecord.of(t) for t in trials]
    rows: list[dict[str, Any]] = []
    curve_rows: list[tuple[int, int, float]] = []
    stage_rows: list[tuple[int, int, str, int, int, int]] = []
    trial_attrs: dict[int, dict[str, Any]] = {}
    trial_params: dict[int, dict[str, Any]] = {}
    param_info: dict[str, ParamInfo] = {}
    constraint_names: set[str] = set()
    for t in records:
        n = t.number
        trial_attrs[n] = dict(t.user_attrs)
        trial_params[n] = dict(t.params)
        for name, dist in t.distributions.items():
            if name not in param_info:
                param_info[name] = _param_info(dist)
        cur = t.curriculum
        stages = _stages_of(cur, list(t.stage_boundaries))
        for pos, (teacher, start, end) in enumerate(stages, start=1):
            stage_rows.append((n, pos, teacher, start, end, end - start))
        inter = t.intermediate_values
        for step in sorted(inter):
            v = inter[step]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                curve_rows.append((n, int(step), float(v)))
        last_step = max(inter) if inter else None
        constraints = dict(t.constraints)
        constraint_names.update(constraints)
        worst = max(constraints.values()) if constraints else math.nan
        teachers = [s[0] for s in stages]
        baseline = t.baseline or ""
        row: dict[str, Any] = {
            "number": n,
            "state": t.state,
            "value": t.value if t.value is not None else math.nan,
            "baseline": baseline,
            "kind": "baseline" if baseline else "search",
            "description": t.description or _describe(cur),
            "teachers": " → ".join(teachers) if teachers else ("(student only)" if cur else ""),
            "first_teacher": teachers[0] if teachers else "",
            "last_teacher": teachers[-1] if teachers else "",
            "n_stages": len(stages) if cur else math.nan,
            "total_iterations": to_float(cur.get("total_iterations")),
            "proxy_cost": to_float(t.proxy_cost),
            "constraint": worst,
            "feasible": (worst <= 0) if constraints else None,
            "wall_time_s": to_float(t.wall_time_s),
            "start": t.start,
            "complete": t.complete,
            "last_step": last_step,
            "last_value": float(inter[last_step]) if last_step is not None else math.nan,
            "pruned_at": to_float(t.pruned_at),
            "failure_reason": t.failure_reason or "",
            "reused_from": to_float(t.reused_from),
            "retry_of": to_float(t.retry_of),
            "requeued": t.requeued,
            "curriculum_key": str(t.curriculum_key or cur.get("key") or ""),
            "run_dir": t.run_dir or "",
            "ap50": to_float(t.metrics.get("ap50")),
        }
        for name, value in t.params.items():
            row[f"param:{name}"] = value
        rows.append(row)
    df = pd.DataFrame(rows, columns=_TRIAL_COLUMNS) if not rows else pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("number", kind="stable").reset_index(drop=True)
        for col in ("start", "complete"):
            df[col] = pd.to_datetime(df[col], utc=True)
        if df["wall_time_s"].isna().any():
            dur = (df["complete"] - df["start"]).dt.total_seconds()
            df["wall_time_s"] = df["wall_time_s"].fillna(dur)
    curves = pd.DataFrame(curve_rows, columns=["number", "step", "value"])
    stages_df = pd.DataFrame(
        stage_rows, columns=["number", "position", "teacher", "start", "end", "iterations"]
    )
    return StudyData(
        source=source,
        direction=direction,
        attrs=dict(attrs),
        trials=df,
        curves=curves,
        stages=stages_df,
        trial_attrs=trial_attrs,
        trial_params=trial_params,
        param_info=param_info,
        loaded_at=datetime.now(UTC),
        constraint_names=tuple(sorted(constraint_names)),
        tally=R.count_trials(records),
        race_running=race_running,
        decision=dict(decision) if decision is not None else None,
    )


_TRIAL_COLUMNS = [
    "number",
    "state",
    "value",
    "baseline",
    "kind",
    "description",
    "teachers",
    "first_teacher",
    "last_teacher",
    "n_stages",
    "total_iterations",
    "proxy_cost",
    "constraint",
    "feasible",
    "wall_time_s",
    "start",
    "complete",
    "last_step",
    "last_value",
    "pruned_at",
    "failure_reason",
    "reused_from",
    "retry_of",
    "requeued",
    "curriculum_key",
    "run_dir",
    "ap50",
]


def as_mapping(value: Any) -> dict[str, Any]:
    """``value`` as a dict when it is a mapping, else an empty dict (attributes may be anything)."""
    return dict(value) if isinstance(value, Mapping) else {}


def to_float(value: Any) -> float:
    """``value`` as a float; ``nan`` for None, booleans and non-numbers."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _param_info(dist: Any) -> ParamInfo:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return ParamInfo("categorical", choices=tuple(dist.choices))
    if isinstance(dist, IntDistribution):
        return ParamInfo("int", log=dist.log, low=dist.low, high=dist.high, step=dist.step)
    if isinstance(dist, FloatDistribution):
        return ParamInfo("float", log=dist.log, low=dist.low, high=dist.high, step=dist.step)
    return ParamInfo("unknown")


def _stages_of(curriculum: Mapping[str, Any], boundaries: Any) -> list[tuple[str, int, int]]:
    """``(teacher, start, end)`` of each stage in global iterations.

    Uses ``stage_boundaries`` (start of each stage + total) when it matches the stage count,
    otherwise the cumulative stage iterations.
    """
    ps = curriculum.get("pseudo_steps")
    if isinstance(ps, Mapping):  # two-step pseudo-label KD: the fused stage, then the fine-tune
        a, b = int(ps.get("pseudo_iterations", 0)), int(ps.get("finetune_iterations", 0))
        fused = "+".join(str(t) for t in ps.get("teachers", []))
        return [(f"pseudo labels of {fused}", 0, a), ("fine-tune", a, a + b)]
    stages = curriculum.get("stages") or []
    if not isinstance(stages, list):
        return []
    names = [str(s.get("teacher", "?")) if isinstance(s, Mapping) else str(s) for s in stages]
    if (
        isinstance(boundaries, list)
        and len(boundaries) == len(stages) + 1
        and all(isinstance(b, int | float) for b in boundaries)
    ):
        return [(names[i], int(boundaries[i]), int(boundaries[i + 1])) for i in range(len(names))]
    out, pos = [], 0
    for name, s in zip(names, stages):
        its = int(s.get("iterations", 0)) if isinstance(s, Mapping) else 0
        out.append((name, pos, pos + its))
        pos += its
    return out


def _describe(curriculum: Mapping[str, Any]) -> str:
    """A short description when the trial has no ``description`` attribute."""
    if not curriculum:
        return ""
    try:
        from curriculum_search.search.encoding import choice_from_dict

        return choice_from_dict(curriculum).describe()
    except Exception:
        stages = curriculum.get("stages") or []
        names = [str(s.get("teacher", "?")) for s in stages if isinstance(s, Mapping)]
        return " → ".join(names) if names else "student only"


@dataclass(frozen=True)
class Importances:
    """Parameter importances for the final AP, or the reason there are none."""

    values: dict[str, float]
    message: str = ""
    n_trials: int = 0


def param_importances(data: StudyData) -> Importances:
    """Importances of the parameters for the final AP over finished trials.

    :func:`optuna.importance.get_param_importances` with Optuna 5's default evaluator (PED-ANOVA:
    which parameter values concentrate in the best trials; no scikit-learn needed). The finished
    trials are rebuilt in an in-memory study (no second read of the storage); fixed parameters (one
    choice) are left out. Needs at least two finished trials; any failure becomes ``message``.
    """
    import optuna

    done = data.complete()
    if len(done) < 2:
        return Importances({}, f"needs at least 2 finished trials (the study has {len(done)})", len(done))
    dists = {
        n: d
        for n, info in data.param_info.items()
        if (d := info.distribution()) is not None
        and not (info.kind == "categorical" and len(info.choices) < 2)
    }
    study = optuna.create_study(direction="minimize" if not data.maximize else "maximize")
    trials = []
    for n, v in zip(done["number"], done["value"]):
        params = {k: p for k, p in data.trial_params.get(int(n), {}).items() if k in dists}
        trials.append(
            optuna.create_trial(value=float(v), params=params, distributions={k: dists[k] for k in params})
        )
    try:
        study.add_trials(trials)
        values = optuna.importance.get_param_importances(study)
    except Exception as exc:
        return Importances({}, f"could not be computed ({type(exc).__name__}: {_first_line(exc)})", len(done))
    if not values:
        return Importances({}, "no parameter varies between the finished trials", len(done))
    return Importances({k: float(v) for k, v in values.items()}, "", len(done))


# -- files next to the study ----------------------------------------------------------------------


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
        raise _storage_error(source.location, exc.__cause__ or exc) from None
    except Exception as exc:
        raise _storage_error(source.location, exc) from None
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


# -- study table ----------------------------------------------------------------------------------


def study_state(data: StudyData, full: FullRun | None) -> str:
    """One word for where a study stands: the reader's
    :func:`~curriculum_search.search.reader.study_state` (the ``studies`` command shows the same).

    ``empty`` (no trial), ``full run`` / ``done`` / ``full run failed`` / ``full run interrupted``
    (full-length run state), ``searching`` (a trial is running), ``selecting`` (a race run is
    running), ``selected`` (the race decided), ``searched`` (target reached) or ``stopped`` (fewer
    finished trials than targeted and nothing running: re-run the command to resume).
    """
    return R.study_state(
        data.tally,
        data.target_trials,
        full=full.state if full is not None else None,
        race_running=data.race_running,
        decided=data.decision is not None,
    )


def summary_row(data: StudyData, full: FullRun | None) -> dict[str, Any]:
    """The study-table row of a study (counts by the reader's count rule)."""
    tally = data.tally
    best = data.best()
    target = data.target_trials
    full_ap = to_float((full.metrics or {}).get("ap")) if full is not None else math.nan
    return {
        "study": data.source.name,
        "state": study_state(data, full),
        "best AP": float(best["value"]) if best is not None else math.nan,
        "best trial": int(best["number"]) if best is not None else None,
        "progress": tally.finished / target if target else math.nan,
        "finished": tally.finished,
        "target": target,
        "complete": tally.complete,
        "pruned": tally.pruned,
        "failed": tally.failed,
        "running": tally.running,
        "compute (h)": float(data.trials["wall_time_s"].sum(skipna=True)) / 3600.0
        if len(data.trials)
        else 0.0,
        "proxy cost": float(data.trials["proxy_cost"].sum(skipna=True)) if len(data.trials) else 0.0,
        "full-run AP": full_ap,
        "last update": data.last_update,
        "location": data.source.location,
    }


def error_row(source: StudySource, message: str) -> dict[str, Any]:
    """The study-table row of a study that could not be read."""
    return {"study": source.name, "state": R.UNREADABLE, "location": source.location, "error": message}


# -- recipes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeText:
    """A recipe YAML to download; ``exact`` is False for the curriculum-dict fallback."""

    text: str
    file_name: str
    exact: bool
    note: str = ""


def recipe_yaml(
    source: StudySource, studies_dir: Path, trial_number: int | None, data: StudyData | None = None
) -> RecipeText:
    """The recipe YAML of a trial (the best one when ``trial_number`` is None).

    Uses ``curriculum_search.search.service.export_recipe`` (the same text as the ``export``
    command). If it is unavailable or fails, falls back to the trial's decoded curriculum as YAML
    (``exact=False`` and a ``note`` saying why).
    """
    label = "best" if trial_number is None else f"trial{trial_number}"
    file_name = f"{source.name}-{label}.yaml"
    storage = None if source.folder / "study.db" == sqlite_path(source.url) else source.url
    note = ""
    try:
        from curriculum_search.search.service import export_recipe

        text = export_recipe(source.name, storage, studies_dir, trial_number=trial_number, proxy=False)
        return RecipeText(str(text), file_name, True)
    except ImportError:
        note = "the recipe exporter (curriculum_search.search.service) is not available"
    except Exception as exc:
        note = f"the recipe exporter failed ({_first_line(exc)})"
    if data is None:
        data = load_study(source)
    if trial_number is None:
        best = data.best()
        if best is None:
            raise StudyError(f"{source.location}: no finished trial to export yet")
        trial_number = int(best["number"])
    attrs = data.trial_attrs.get(trial_number)
    if attrs is None:
        raise StudyError(f"{source.location}: no trial {trial_number}")
    payload = {
        "study": source.name,
        "trial": trial_number,
        "description": attrs.get(A.DESCRIPTION, ""),
        "curriculum": attrs.get(A.CURRICULUM, {}),
        "params": data.trial_params.get(trial_number, {}),
        "note": f"curriculum only: {note}",
    }
    return RecipeText(dump_yaml(payload), file_name, False, note)
