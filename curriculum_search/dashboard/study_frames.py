"""One study as pandas frames and plain data (:class:`StudyData`), read through the package's one
study reader; parameter importances. See :mod:`curriculum_search.dashboard.data`.

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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from curriculum_search.dashboard.sources import StudySource, first_line, open_reader, storage_error
from curriculum_search.errors import StudyError
from curriculum_search.search import attrs as A
from curriculum_search.search import reader as R
from curriculum_search.search.reader import StudyReader, TrialCounts, TrialRecord

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
                raise storage_error(where, exc.__cause__) from None
            raise
        except Exception as exc:
            raise storage_error(where, exc) from None
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
        return Importances({}, f"could not be computed ({type(exc).__name__}: {first_line(exc)})", len(done))
    if not values:
        return Importances({}, "no parameter varies between the finished trials", len(done))
    return Importances({k: float(v) for k, v in values.items()}, "", len(done))
