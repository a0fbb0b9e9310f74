"""The five pages of one study (Overview, Curricula, Parameters, Trials, Baselines & full run),
each a function of a :class:`Context`; :data:`RENDERERS` maps the page names to them.
See :mod:`curriculum_search.dashboard.pages`."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from curriculum_search.dashboard import charts as ch
from curriculum_search.dashboard import data as dd
from curriculum_search.dashboard.cached import cached_importances, full_run, reader, source_key, trial_run
from curriculum_search.search import attrs as A

PLOTLY_CONFIG = {"displaylogo": False, "scrollZoom": False}


@dataclass
class Context:
    """The selected study and what every page needs."""

    src: dd.StudySource
    data: dd.StudyData
    studies_dir: Path

    @property
    def colors(self) -> dict[str, str]:
        return ch.teacher_colors(self.data.teacher_names)

    @property
    def key(self) -> tuple[str, str, str]:
        return source_key(self.src)


def _plot(fig: Any, key: str) -> None:
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG)


def _fmt(v: Any, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def _recipe_button(ctx: Context, number: int | None, label: str, key: str) -> None:
    """Download button for a trial's recipe YAML (built on click)."""
    src, studies = ctx.src, ctx.studies_dir
    fname = f"{src.name}-{'best' if number is None else f'trial{number}'}.yaml"

    def build() -> str:
        return dd.recipe_yaml(src, studies, number).text

    st.download_button(
        label, data=build, file_name=fname, mime="application/x-yaml", key=key, on_click="ignore", icon="⬇️"
    )
    if importlib.util.find_spec("curriculum_search.search.service") is None:
        st.caption("The recipe exporter is not installed: the file holds the decoded curriculum only.")


def page_overview(ctx: Context) -> None:
    data = ctx.data
    tally = data.tally  # the reader's count rule, as in the study table and `studies`
    best = data.best()
    bases = data.baselines()
    ref = bases.get("student_only")
    ref_ap = float(ref["value"]) if ref is not None and not math.isnan(float(ref["value"])) else None
    finished = tally.finished
    target = data.target_trials
    full = full_run(ctx.src)
    c = st.columns(6)
    if best is not None:
        vs = f"; the student-only baseline's proxy AP is {ref_ap:.4f}" if ref_ap is not None else ""
        c[0].metric(
            "Best proxy AP",
            _fmt(float(best["value"])),
            help=f"trial #{int(best['number'])}: one short single-seed run{vs}. Proxy differences are "
            "within seed noise; the selection race decides what ships.",
        )
    else:
        c[0].metric("Best proxy AP", "–")
    c[1].metric("Finished trials", f"{finished}" + (f" / {target}" if target else ""))
    c[2].metric("Pruned / failed", f"{tally.pruned} / {tally.failed}")
    c[3].metric("Running", str(tally.running + tally.waiting))
    c[4].metric("Compute", f"{data.trials['wall_time_s'].sum(skipna=True) / 3600:.2f} h")
    c[5].metric("Full run", full.state if full is not None else "not started")
    if target:
        st.progress(min(1.0, finished / target), text=f"search progress: {finished}/{target} trials")
    decision = data.decision  # read with the study (same storage, same change token)
    if decision is not None:
        sel = decision["selection"]
        st.markdown(
            f"**Best curriculum (selected by the race, shipped)**: {sel['winner']} — `{sel['winner_description']}`"
        )
        _recipe_button(ctx, None, "Download the best recipe (YAML)", key="dl_best")
    elif best is not None:
        st.markdown(
            f"**Best curriculum so far** (best proxy value, not selected yet: trial #{int(best['number'])}"
            f"{', baseline ' + best['baseline'] if best['baseline'] else ''}): `{best['description']}`"
        )
        _recipe_button(ctx, None, "Download the best recipe (YAML)", key="dl_best")
    _plot(ch.optimization_history(data.trials, bases, data.teacher_info, data.maximize), "history")
    _plot(
        ch.intermediate_curves(data.curves, data.trials, data.stages, ctx.colors, maximize=data.maximize),
        "curves",
    )
    if data.teacher_info:
        with st.expander("Teacher pool"):
            st.dataframe(pd.DataFrame(data.teacher_info), hide_index=True)


def page_curricula(ctx: Context) -> None:
    data = ctx.data
    n_done = len(data.complete())
    top_k = st.slider(
        "Top-K trials",
        min_value=1,
        max_value=max(2, min(40, n_done)),
        value=min(10, max(1, n_done)),
        key="top_k",
    )
    _plot(
        ch.curriculum_timeline(data.trials, data.stages, ctx.colors, top_k=top_k, maximize=data.maximize),
        "timeline",
    )
    left, right = st.columns(2)
    with left:
        _plot(ch.teacher_position_heatmap(data.trials, data.stages, data.teacher_names), "teacher_position")
    with right:
        _plot(ch.chain_box(data.trials, maximize=data.maximize), "chains")


def page_parameters(ctx: Context) -> None:
    data = ctx.data
    imp = cached_importances(ctx.key, dd.change_token(ctx.src))
    if imp.values:
        _plot(ch.param_importance_bar(imp.values), "importances")
        st.caption(
            f"Over {imp.n_trials} finished trials; `order_key.*` set the teacher order, `frac.*` the stage lengths."
        )
    else:
        st.info(f"Parameter importances: {imp.message}.", icon="ℹ️")
    _plot(
        ch.parallel_coordinates(data.trials, data.param_info, importances=imp.values, maximize=data.maximize),
        "parcoords",
    )
    _plot(ch.cost_scatter(data.trials, data.baselines(), data.cost_cap, maximize=data.maximize), "pareto")
    if data.constraint_names:
        st.caption(f"Constraints: {', '.join(data.constraint_names)} (feasible when ≤ 0).")


def page_trials(ctx: Context) -> None:
    data = ctx.data
    df = data.trials
    c1, c2 = st.columns([2, 3])
    states = c1.multiselect(
        "States",
        list(dd.STATES),
        default=[s for s in dd.STATES if (df["state"] == s).any()],
        key="trial_states",
    )
    text = c2.text_input("Filter by curriculum", key="trial_filter", placeholder="e.g. pvt, mgd, → medium")
    view = df[df["state"].isin(states)]
    if text:
        view = view[view["description"].str.contains(text, case=False, regex=False)]
    cols = [
        "number",
        "state",
        "value",
        "baseline",
        "description",
        "proxy_cost",
        "feasible",
        "wall_time_s",
        "last_step",
        "failure_reason",
        "start",
    ]
    cc = st.column_config
    event = st.dataframe(
        view[cols],
        hide_index=True,
        key="trial_table",
        on_select="rerun",
        selection_mode="single-row",
        height=300,
        column_config={
            "number": cc.NumberColumn("#", format="%d"),
            "value": cc.NumberColumn("AP", format="%.4f"),
            "proxy_cost": cc.NumberColumn("proxy cost", format="compact"),
            "wall_time_s": cc.NumberColumn("wall time (s)", format="%.0f"),
            "last_step": cc.NumberColumn("last eval", format="%d"),
            "failure_reason": cc.TextColumn("failure"),
            "start": cc.DatetimeColumn("started", format="distance"),
        },
    )
    numbers = [int(n) for n in df["number"]]
    rows = getattr(getattr(event, "selection", None), "rows", None) or []
    picked = int(view.iloc[rows[0]]["number"]) if rows and rows[0] < len(view) else None
    if picked is not None and st.session_state.get("_picked") != picked:
        st.session_state["trial"] = picked
    st.session_state["_picked"] = picked
    best = data.best()
    default = int(best["number"]) if best is not None else numbers[-1]
    if st.session_state.get("trial") not in numbers:
        st.session_state["trial"] = default
    labels = _trial_labels(df)
    number = st.selectbox("Trial", numbers, key="trial", format_func=lambda n: labels.get(n, f"#{n}"))
    trial_detail(ctx, int(number))


def _trial_labels(df: pd.DataFrame) -> dict[int, str]:
    """``#n · state · AP · description`` of every trial (the trial selector's labels)."""
    out = {}
    for n, state, value, desc in zip(df["number"], df["state"], df["value"], df["description"]):
        ap = f" · AP {value:.4f}" if not math.isnan(value) else ""
        out[int(n)] = f"#{int(n)} · {str(state).lower()}{ap} · {str(desc)[:90]}"
    return out


def trial_detail(ctx: Context, number: int) -> None:
    """Decoded curriculum, loss weights, per-stage metrics, failure reason, logs, recipe."""
    data = ctx.data
    row = data.trials[data.trials["number"] == number].iloc[0]
    attrs = data.trial_attrs.get(number, {})
    cur = dd.as_mapping(attrs.get(A.CURRICULUM))
    st.subheader(
        f"Trial #{number} — {row['state'].lower()}"
        + (f" · baseline {row['baseline']}" if row["baseline"] else "")
    )
    st.markdown(f"`{row['description']}`" if row["description"] else "_no curriculum recorded_")
    state = row["state"]
    if row["failure_reason"]:
        st.error(f"**Failure:** {row['failure_reason']}", icon="💥")
    elif state == "FAIL":
        st.error("Failed without a recorded reason; see the log below.", icon="💥")
    if state == "PRUNED":
        at = row["pruned_at"] if not math.isnan(row["pruned_at"]) else row["last_step"]
        st.warning(
            f"Pruned at iteration {_fmt(at, '.0f')} (last AP {_fmt(row['last_value'])}): below the median of earlier trials.",
            icon="✂️",
        )
    if state == "RUNNING":
        st.info(
            f"Running: last AP {_fmt(row['last_value'])} at iteration {_fmt(row['last_step'], '.0f')}.",
            icon="⏳",
        )
    if not math.isnan(row["reused_from"]):
        st.info(f"Result reused from trial #{int(row['reused_from'])} (same decoded curriculum).", icon="♻️")
    if not math.isnan(row["retry_of"]):
        st.caption(f"Retry of trial #{int(row['retry_of'])}.")
    m = st.columns(5)
    m[0].metric("Final AP", _fmt(row["value"]))
    m[1].metric("AP50", _fmt(row["ap50"]))
    m[2].metric("Proxy cost", _fmt(row["proxy_cost"], ",.0f"))
    m[3].metric("Wall time", f"{_fmt(row['wall_time_s'], '.0f')} s")
    feas = row["feasible"]
    m[4].metric(
        "Constraint",
        "–"
        if feas is None or (isinstance(feas, float) and math.isnan(feas))
        else ("feasible" if feas else "infeasible"),
    )
    stages = data.stages[data.stages["number"] == number]
    left, right = st.columns(2)
    with left:
        st.markdown("**Curriculum**")
        if len(stages):
            st.dataframe(
                stages[["position", "teacher", "start", "end", "iterations"]].rename(
                    columns={"position": "stage"}
                ),
                hide_index=True,
            )
        elif cur:
            st.markdown("Student only (no teacher).")
    with right:
        st.markdown("**Loss weights & settings**")
        st.dataframe(settings_frame(cur), hide_index=True)
    run = trial_run(ctx.src, str(row["run_dir"]))
    history: list[dict[str, Any]] = run.history or [
        {"iteration": int(s), "ap": float(v)} for s, v in zip(*_curve_of(data.curves, number))
    ]
    bounds = list(attrs.get(A.STAGE_BOUNDARIES) or []) or (
        [int(stages["start"].min()), *stages["end"].tolist()] if len(stages) else []
    )
    _plot(
        ch.run_progress(
            history,
            bounds,
            stages["teacher"].tolist(),
            ctx.colors,
            title=f"Trial #{number}: AP during the proxy run",
        ),
        f"trial_progress_{number}",
    )
    if len(stages):
        st.markdown("**Per-stage metrics**")
        st.dataframe(
            dd.stage_metrics(history, stages),
            hide_index=True,
            column_config={
                k: st.column_config.NumberColumn(format="%.4f")
                for k in ("ap_end", "ap50_end", "best_ap", "gain")
            },
        )
    metrics = attrs.get(A.METRICS) or run.metrics
    if metrics:
        with st.expander("Final metrics"):
            st.json(metrics)
    with st.expander("Log" + (f" ({run.run_dir})" if run.run_dir else ""), expanded=state == "FAIL"):
        if run.log_tail:
            st.code(run.log_tail, language="log")
        elif run.log_tail == "":
            st.caption("trial.log is empty.")
        else:
            st.caption(
                "No trial.log for this trial"
                + (f" in {run.run_dir}." if run.run_dir else " (no run folder recorded).")
            )
    with st.expander("Parameters and attributes"):
        st.json({"params": data.trial_params.get(number, {}), "user_attrs": attrs}, expanded=False)
    if cur:
        _recipe_button(ctx, number, f"Download trial #{number}'s recipe (YAML)", key=f"dl_trial_{number}")


def _curve_of(curves: pd.DataFrame, number: int) -> tuple[list[int], list[float]]:
    g = curves[curves["number"] == number]
    return g["step"].tolist(), g["value"].tolist()


def settings_frame(cur: Mapping[str, Any]) -> pd.DataFrame:
    """The method settings of a decoded curriculum as a two-column table."""
    if not cur:
        return pd.DataFrame({"setting": [], "value": []})

    def f(v: Any) -> str:
        if v is None:
            return "off"
        if isinstance(v, bool):
            return "on" if v else "off"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    response = (
        f"cls ×{f(cur.get('cls_weight'))}, box ×{f(cur.get('box_weight'))}, T {f(cur.get('temperature'))}"
        if cur.get("response")
        else "off"
    )
    feature = (
        f"{cur.get('feature_loss')} ×{f(cur.get('feature_weight'))}" if cur.get("feature_loss") else "off"
    )
    decay = str(cur.get("decay", "–"))
    if decay not in ("constant", "–"):
        decay += f" → floor {f(cur.get('decay_floor'))}"
    items = [
        ("feature KD", feature),
        ("response KD (gated)", response),
        ("pseudo labels", f(cur.get("pseudo"))),
        ("distillation decay", decay),
        ("learning rate", f(cur.get("lr"))),
        ("total iterations", f(cur.get("total_iterations"))),
    ]
    return pd.DataFrame(items, columns=["setting", "value"])


def page_baselines(ctx: Context) -> None:
    data = ctx.data
    bases = data.baselines()
    best = data.best_search()
    ref = bases.get("student_only")
    ref_ap = float(ref["value"]) if ref is not None and not math.isnan(float(ref["value"])) else None
    rows: list[dict[str, Any]] = []
    for name, r in bases.items():
        rows.append(_compare_row(dd.BASELINE_LABELS.get(name, name), "baseline", r, ref_ap))
    if best is not None:
        rows.append(_compare_row(f"best search (#{int(best['number'])})", "search", best, ref_ap))
    full = full_run(ctx.src)
    full_ap = dd.to_float((full.metrics or {}).get("ap")) if full is not None else math.nan
    if full is not None and not math.isnan(full_ap):
        rows.append(
            {
                "label": "full run of the best",
                "kind": "full",
                "trial": None,
                "state": full.state,
                "value": full_ap,
                "Δ vs student only": math.nan,
                "description": "full-length training (not comparable to proxy AP)",
            }
        )
    if not rows:
        st.info("No baseline has run yet: the study enqueues them first.", icon="⏳")
    else:
        cc = st.column_config
        table = pd.DataFrame(rows)
        st.dataframe(
            table[
                [
                    c
                    for c in (
                        "label",
                        "trial",
                        "state",
                        "value",
                        "Δ vs student only",
                        "ap50",
                        "proxy_cost",
                        "wall_time_s",
                        "description",
                    )
                    if c in table
                ]
            ],
            hide_index=True,
            column_config={
                "label": cc.TextColumn("run"),
                "trial": cc.NumberColumn("#", format="%d"),
                "value": cc.NumberColumn("AP", format="%.4f"),
                "Δ vs student only": cc.NumberColumn(format="%+.4f"),
                "ap50": cc.NumberColumn("AP50", format="%.4f"),
                "proxy_cost": cc.NumberColumn("proxy cost", format="compact"),
                "wall_time_s": cc.NumberColumn("wall time (s)", format="%.0f"),
            },
        )
        proxy_rows = [r for r in rows if r["kind"] != "full"]
        _plot(ch.baseline_bars(proxy_rows, data.teacher_info, ref_ap), "baselines")
        done_bases = {n: float(r["value"]) for n, r in bases.items() if not math.isnan(float(r["value"]))}
        if best is not None and done_bases:
            top = max(done_bases, key=lambda n: done_bases[n])
            gap = float(best["value"]) - done_bases[top]
            label = dd.BASELINE_LABELS.get(top, top)
            st.info(
                f"Proxy values (one short run each): best searched {_delta(gap)} AP against the best baseline "
                f"({label}). A proxy difference is no evidence — seed noise is of the same size; the "
                "selection race below decides what ships.",
                icon="🎲",
            )
    race_section(ctx)
    st.subheader("Shipped student (full run)")
    if full is None:
        st.info(
            "No full run yet. `python -m curriculum_search run` (or `select`) races the best curricula and "
            "ships the winner's full-length run "
            f"when the search ends (or `python -m curriculum_search train --recipe {ctx.src.folder / 'best_recipe.yaml'}`).",
            icon="🏁",
        )
        if (ctx.src.folder / "best_recipe.yaml").is_file():
            st.caption(f"Exported recipe: `{ctx.src.folder / 'best_recipe.yaml'}`")
        return
    status = full.status or {}
    state = full.state
    icon = {"running": "⏳", "done": "✅", "failed": "💥", "interrupted": "⏸️"}.get(state, "ℹ️")
    line = (
        f"**{state}**"
        + (f" · trial #{status['trial']}" if status.get("trial") is not None else "")
        + (f" · updated {_when(status.get('updated'))}" if status.get("updated") else "")
    )
    if state in ("failed", "interrupted"):
        st.error(f"{line}: {status.get('error') or 'see the run folder'}", icon=icon)
    else:
        st.markdown(f"{icon} {line}")
    if full.metrics:
        keys = [
            k
            for k in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")
            if isinstance(full.metrics.get(k), int | float)
        ]
        cols = st.columns(max(1, len(keys)))
        for col, k in zip(cols, keys):
            col.metric(k.upper().replace("_", " "), f"{full.metrics[k]:.4f}")
    _plot(
        ch.run_progress(
            full.history, full.boundaries, full.stage_names, ctx.colors, title="Full run: AP during training"
        ),
        "full_progress",
    )
    if full.student_exists:
        st.caption(f"Student weights: `{full.folder / 'student.pt'}`")


def race_section(ctx: Context) -> None:
    """The selection race: the decision in plain words, every race run, the paired differences."""
    from curriculum_search.search.selection import decision_lines

    st.subheader("Selection race (common seeds, held-out report)")
    try:
        race = dd.load_race(ctx.src, reader(ctx.src))
    except Exception as exc:  # an unreadable race never hides the rest of the page
        st.error(str(exc).splitlines()[0], icon="💥")
        return
    if race is None or race.runs.empty:
        st.info(
            "No race yet: `python -m curriculum_search select` (run by `run` after the search) races the "
            "shortlist and every distilling baseline against the baseline the proxy ranks first, on common seeds.",
            icon="🏁",
        )
        return
    if race.decision:
        lines = decision_lines(race.decision)
        sel = race.decision["selection"]
        beats = not sel["winner_is_baseline"] or sel["winner"] != sel["best_baseline"]
        (st.success if beats else st.info)(lines[0], icon="🏆" if beats else "⚖️")
        for line in lines[1:]:
            (st.warning if line.startswith("warning:") else st.markdown)(line)
        _plot(ch.race_chart(race.decision["selection"].get("rungs", [])), "race")
    else:
        st.info("The race is running (or was interrupted); re-run `select` to resume it.", icon="⏳")
    cc = st.column_config
    st.dataframe(
        race.runs,
        hide_index=True,
        column_config={
            "number": cc.NumberColumn("#", format="%d"),
            "value": cc.NumberColumn("AP (selection split)", format="%.4f"),
            "report_ap": cc.NumberColumn("AP (report split)", format="%.4f"),
        },
    )


def _delta(gap: float) -> str:
    """An AP difference: 4 decimals, or 2 significant digits when smaller than 0.0001."""
    return f"{gap:+.4f}" if gap == 0 or abs(gap) >= 1e-4 else f"{gap:+.2g}"


def _when(stamp: Any) -> str:
    """An ISO timestamp as local ``YYYY-MM-DD HH:MM:SS`` plus how long ago."""
    try:
        t = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    ago = (datetime.now(UTC) - t).total_seconds()
    rel = (
        f"{ago:.0f} s ago"
        if ago < 120
        else f"{ago / 60:.0f} min ago"
        if ago < 7200
        else f"{ago / 3600:.1f} h ago"
    )
    return f"{t.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({rel})"


def _compare_row(label: str, kind: str, r: pd.Series, ref_ap: float | None) -> dict[str, Any]:
    value = float(r.get("value", math.nan))
    return {
        "label": label,
        "kind": kind,
        "trial": int(r["number"]) if int(r.get("number", -1)) >= 0 else None,
        "state": str(r.get("state", "")).lower(),
        "value": value,
        "Δ vs student only": value - ref_ap
        if ref_ap is not None and label != dd.BASELINE_LABELS["student_only"]
        else math.nan,
        "ap50": r.get("ap50", math.nan),
        "proxy_cost": r.get("proxy_cost", math.nan),
        "wall_time_s": r.get("wall_time_s", math.nan),
        "description": r.get("description", ""),
    }


RENDERERS = {
    "Overview": page_overview,
    "Curricula": page_curricula,
    "Parameters": page_parameters,
    "Trials": page_trials,
    "Baselines & full run": page_baselines,
}
