"""Pure functions from study frames (see :mod:`.data`) to plotly figures.

No Streamlit and no I/O here: every function takes frames / plain values and returns a
``plotly.graph_objects.Figure`` (an explanatory empty figure when there is nothing to draw), so
each one is tested and benchmarked on its own. Teachers keep one colour across all charts
(:func:`teacher_colors`).

By subject: this module draws the search over time (history, learning curves) and the runs
(baselines, run progress, the race); :mod:`.curriculum_charts` the curricula,
:mod:`.param_charts` the parameters, :mod:`.chart_style` holds the shared look. It re-exports
their names (the pages use them as ``ch.<name>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from curriculum_search.dashboard.chart_style import (
    AP_FORMAT,
    BASELINE_STYLE,
    BEST_COLOR,
    FULL_COLOR,
    MUTED,
    SEARCH_COLOR,
    STUDENT_COLOR,
    apply_layout,
    baseline_label,
    empty_figure,
    hover_text,
    ranked_trials,
    teacher_colors,
)
from curriculum_search.dashboard.curriculum_charts import (
    chain_box,
    curriculum_timeline,
    teacher_position_heatmap,
)
from curriculum_search.dashboard.param_charts import (
    cost_scatter,
    parallel_coordinates,
    param_importance_bar,
    pareto_front,
)

# -- optimisation history -------------------------------------------------------------------------


def optimization_history(
    trials: pd.DataFrame,
    baselines: Mapping[str, pd.Series] | None = None,
    teachers: Sequence[Mapping[str, Any]] = (),
    maximize: bool = True,
) -> go.Figure:
    """Final proxy AP of every trial against its number, with the best-so-far line.

    Baseline trials get their own marker and a dashed horizontal line at their AP; pruned trials
    are shown (legend-toggled) at their last reported AP; teacher APs are optional reference lines.
    """
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    if done.empty:
        return empty_figure(
            "No finished trial yet: points appear as trials complete.", "Optimisation history"
        )
    fig = go.Figure()
    pruned = trials[(trials["state"] == "PRUNED") & trials["last_value"].notna()]
    if not pruned.empty:
        fig.add_trace(
            go.Scatter(
                x=pruned["number"],
                y=pruned["last_value"],
                mode="markers",
                name="pruned (last AP)",
                marker={"color": MUTED, "size": 5, "symbol": "x-thin", "line": {"width": 1, "color": MUTED}},
                hovertext=[
                    f"#{n} pruned at {s}: AP {v:.4f}"
                    for n, s, v in zip(pruned["number"], pruned["last_step"], pruned["last_value"])
                ],
                hoverinfo="text",
                visible="legendonly",
            )
        )
    search = done[done["kind"] == "search"]
    fig.add_trace(
        go.Scatter(
            x=search["number"],
            y=search["value"],
            mode="markers",
            name="searched",
            marker={"color": SEARCH_COLOR, "size": 6, "opacity": 0.75},
            hovertext=hover_text(search),
            hoverinfo="text",
        )
    )
    order = done.sort_values("number")
    best = order["value"].cummax() if maximize else order["value"].cummin()
    fig.add_trace(
        go.Scatter(
            x=order["number"],
            y=best,
            mode="lines",
            name="best so far",
            line={"color": BEST_COLOR, "width": 2, "shape": "hv"},
            hoverinfo="skip",
        )
    )
    x_max = float(trials["number"].max())
    for name, row in (baselines or {}).items():
        value = row.get("value")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        color, symbol = BASELINE_STYLE.get(name, ("#333333", "circle"))
        if int(row.get("number", -1)) >= 0:
            fig.add_trace(
                go.Scatter(
                    x=[row["number"]],
                    y=[value],
                    mode="markers",
                    name=baseline_label(name),
                    legendgroup=name,
                    marker={
                        "color": color,
                        "symbol": symbol,
                        "size": 12,
                        "line": {"width": 1, "color": "white"},
                    },
                    hovertext=[
                        f"baseline {baseline_label(name)} (#{int(row['number'])}): AP {value:.4f}<br>{row.get('description', '')}"
                    ],
                    hoverinfo="text",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[0, x_max],
                y=[value, value],
                mode="lines",
                line={"color": color, "dash": "dash", "width": 1},
                name=baseline_label(name),
                legendgroup=name,
                showlegend=int(row.get("number", -1)) < 0,
                hoverinfo="skip",
            )
        )
    for t in teachers:
        ap = t.get("ap")
        if isinstance(ap, int | float):
            fig.add_trace(
                go.Scatter(
                    x=[0, x_max],
                    y=[ap, ap],
                    mode="lines",
                    line={"color": "#555", "dash": "dot", "width": 1},
                    name=f"teacher {t['name']} ({ap:.3f})",
                    hoverinfo="name",
                    visible="legendonly",
                )
            )
    fig.update_xaxes(title="trial")
    fig.update_yaxes(title="proxy AP", tickformat=AP_FORMAT)
    return apply_layout(fig, "Optimisation history")


# -- learning curves ------------------------------------------------------------------------------


def _pick_curves(
    curves: pd.DataFrame, trials: pd.DataFrame, top_k: int, sample: int, maximize: bool, seed: int
) -> tuple[list[int], list[int]]:
    """Top-K finished trials and a random sample of the other trials that have a curve."""
    ranked = ranked_trials(trials, maximize)
    top = [int(n) for n in ranked["number"].head(top_k)]
    have = set(curves["number"].unique().tolist())
    top = [n for n in top if n in have]
    rest = sorted(have - set(top))
    if len(rest) > sample:
        rng = np.random.default_rng(seed)
        rest = sorted(int(x) for x in rng.choice(rest, size=sample, replace=False))
    return top, rest


def intermediate_curves(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    stages: pd.DataFrame,
    colors: Mapping[str, str],
    *,
    top_k: int = 8,
    sample: int = 150,
    highlight: int | None = None,
    maximize: bool = True,
    seed: int = 0,
) -> go.Figure:
    """Intermediate AP (what the pruner sees) against global iteration.

    The top-K finished trials are drawn in colour, with a marker where each of their stages starts;
    a random sample of up to ``sample`` other trials is drawn in grey (one trace, so 1,000 trials
    stay cheap). The stages of ``highlight`` (default: the best trial) are shaded by teacher.
    """
    if curves.empty:
        return empty_figure("No intermediate AP reported yet.", "Learning curves (intermediate AP)")
    top, rest = _pick_curves(curves, trials, top_k, sample, maximize, seed)
    grouped = {int(n): g for n, g in curves.groupby("number", sort=False)}
    fig = go.Figure()
    if rest:
        xs: list[float | None] = []
        ys: list[float | None] = []
        for n in rest:
            g = grouped[n]
            xs.extend([*g["step"].tolist(), None])
            ys.extend([*g["value"].tolist(), None])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=f"other trials (sample of {len(rest)})",
                line={"color": MUTED, "width": 1},
                hoverinfo="skip",
            )
        )
    if highlight is None and top:
        highlight = top[0]
    if highlight is not None and len(stages):
        for _, s in stages[stages["number"] == highlight].iterrows():
            fig.add_vrect(
                x0=s["start"],
                x1=s["end"],
                fillcolor=colors.get(s["teacher"], STUDENT_COLOR),
                opacity=0.12,
                line_width=0,
                annotation_text=f"#{highlight}: {s['teacher']}",
                annotation_position="top left",
                annotation_font_size=10,
            )
    info = trials.set_index("number")
    palette = qualitative.Dark24
    for i, n in enumerate(top):
        g = grouped[n]
        color = BEST_COLOR if i == 0 else palette[i % len(palette)]
        desc = info.at[n, "description"] if n in info.index else ""
        fig.add_trace(
            go.Scatter(
                x=g["step"],
                y=g["value"],
                mode="lines+markers",
                name=f"#{n}" + (" (best)" if i == 0 else ""),
                line={"color": color, "width": 3 if i == 0 else 1.5},
                marker={"size": 4},
                hovertemplate=f"#{n} · iteration %{{x}} · AP %{{y:.4f}}<br>{desc}<extra></extra>",
            )
        )
        st = stages[stages["number"] == n] if len(stages) else stages
        starts = st[st["position"] > 1]
        if len(starts):
            sx = starts["start"].to_numpy(dtype=float)
            sy = np.interp(sx, g["step"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float))
            fig.add_trace(
                go.Scatter(
                    x=sx,
                    y=sy,
                    mode="markers",
                    marker={"symbol": "line-ns-open", "size": 14, "color": color, "line": {"width": 2}},
                    name=f"#{n} stage starts",
                    showlegend=False,
                    hovertext=[
                        f"#{n}: stage {p} ({t}) starts at {int(x)}"
                        for p, t, x in zip(starts["position"], starts["teacher"], sx)
                    ],
                    hoverinfo="text",
                )
            )
    fig.update_xaxes(title="global iteration")
    fig.update_yaxes(title="AP", tickformat=AP_FORMAT)
    return apply_layout(
        fig, "Learning curves (intermediate AP; stage starts marked, best trial's stages shaded)"
    )


# -- baselines and runs ---------------------------------------------------------------------------


def baseline_bars(
    rows: Sequence[Mapping[str, Any]],
    teachers: Sequence[Mapping[str, Any]] = (),
    reference: float | None = None,
) -> go.Figure:
    """Horizontal bars of the baselines, the best searched curriculum and the full run.

    Args:
        rows: dicts with ``label``, ``value`` (AP) and ``kind`` (``baseline`` / ``search`` / ``full``).
        teachers: teacher records (``name``, ``ap``) drawn as dotted reference lines.
        reference: AP the bar texts are compared with (the student-only baseline), if known.
    """
    rows = [r for r in rows if isinstance(r.get("value"), int | float) and not math.isnan(float(r["value"]))]
    if not rows:
        return empty_figure("No baseline or searched trial has finished yet.", "Baselines vs search")
    colors = {"baseline": "#9e9e9e", "search": SEARCH_COLOR, "full": FULL_COLOR}
    texts = []
    for r in rows:
        text = f"{r['value']:.4f}"
        if reference is not None and r.get("label") != "student only (no KD)":
            text += f" ({r['value'] - reference:+.4f})"
        texts.append(text)
    fig = go.Figure(
        go.Bar(
            x=[r["value"] for r in rows],
            y=[r["label"] for r in rows],
            orientation="h",
            marker={"color": [colors.get(str(r.get("kind")), "#9e9e9e") for r in rows]},
            text=texts,
            textposition="inside",
            insidetextanchor="end",
            hovertemplate="%{y}: AP %{x:.4f}<extra></extra>",
        )
    )
    for t in teachers:
        ap = t.get("ap")
        if isinstance(ap, int | float):
            fig.add_vline(
                x=ap,
                line_dash="dot",
                line_color="#777",
                annotation_text=str(t["name"]),
                annotation_position="top",
            )
    xmax = max(
        [float(r["value"]) for r in rows]
        + [float(t["ap"]) for t in teachers if isinstance(t.get("ap"), int | float)]
    )
    fig.update_xaxes(title="AP", range=[0, xmax * 1.18], tickformat=AP_FORMAT)
    fig.update_yaxes(autorange="reversed")
    return apply_layout(fig, "Baselines vs best searched curriculum", height=max(260, 110 + 45 * len(rows)))


def run_progress(
    history: Sequence[Mapping[str, Any]],
    boundaries: Sequence[int] = (),
    stage_names: Sequence[str] = (),
    colors: Mapping[str, str] | None = None,
    *,
    title: str = "Run progress",
    reference: Mapping[str, float] | None = None,
) -> go.Figure:
    """AP and AP50 of a run (``history.jsonl`` records) against iteration, stages shaded.

    Args:
        history: records with ``iteration``, ``ap`` and optionally ``ap50``.
        boundaries: start of each stage plus the total (global iterations).
        stage_names: teacher of each stage (colours and labels of the shaded areas).
        reference: horizontal reference lines, label -> AP.
    """
    evals = [
        h
        for h in history
        if isinstance(h.get("iteration"), int | float) and isinstance(h.get("ap"), int | float)
    ]
    if not evals:
        return empty_figure("No evaluation recorded yet.", title)
    colors = colors or {}
    fig = go.Figure()
    for i in range(len(boundaries) - 1):
        name = stage_names[i] if i < len(stage_names) else f"stage {i + 1}"
        fig.add_vrect(
            x0=boundaries[i],
            x1=boundaries[i + 1],
            fillcolor=colors.get(name, STUDENT_COLOR),
            opacity=0.14,
            line_width=0,
            annotation_text=name,
            annotation_position="top left",
            annotation_font_size=11,
        )
    x = [h["iteration"] for h in evals]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[h["ap"] for h in evals],
            mode="lines+markers",
            name="AP",
            line={"color": SEARCH_COLOR, "width": 2.5},
        )
    )
    if any(isinstance(h.get("ap50"), int | float) for h in evals):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[h.get("ap50") for h in evals],
                mode="lines+markers",
                name="AP50",
                line={"color": "#17becf", "dash": "dash"},
            )
        )
    for label, value in (reference or {}).items():
        fig.add_hline(
            y=value,
            line_dash="dot",
            line_color="#777",
            annotation_text=label,
            annotation_position="bottom right",
        )
    fig.update_xaxes(title="global iteration", range=[0, max([*x, *(boundaries or [0])]) * 1.02])
    fig.update_yaxes(title="AP", tickformat=AP_FORMAT)
    return apply_layout(fig, title, height=360)


def race_chart(rungs: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Per rung, each arm's AP per seed (dots) and mean (bar); the paired difference to the
    incumbent with its interval in the hover text."""
    fig = go.Figure()
    palette = qualitative.Plotly
    labels: list[str] = []
    for rung in rungs:
        for arm in rung.get("arms", []):
            if arm["label"] not in labels:
                labels.append(arm["label"])
    for i, label in enumerate(labels):
        xs, ys, texts, px, py = [], [], [], [], []
        for rung in rungs:
            x = f"{rung['iterations']} it"
            for arm in rung.get("arms", []):
                if arm["label"] != label or arm.get("mean") is None:
                    continue
                xs.append(x)
                ys.append(arm["mean"])
                iv = arm.get("delta_interval")
                delta = arm.get("delta_mean")
                texts.append(
                    f"{label} ({arm['role']})<br>mean AP {arm['mean']:.4f}"
                    + (f"<br>Δ vs incumbent {delta:+.4f}" if delta is not None else "")
                    + (f" [{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv else "")
                    + f"<br>{arm.get('fate', '')}"
                )
                for v in arm.get("values") or []:
                    px.append(x)
                    py.append(v)
        color = palette[i % len(palette)]
        fig.add_trace(go.Bar(x=xs, y=ys, name=label, marker_color=color, hovertext=texts, hoverinfo="text"))
        fig.add_trace(
            go.Scatter(
                x=px,
                y=py,
                mode="markers",
                marker={"color": "black", "size": 6},
                showlegend=False,
                hoverinfo="y",
            )
        )
    fig.update_layout(
        barmode="group",
        title="Selection race: AP on the selection split per rung (bars: mean, dots: seeds)",
        yaxis_title="AP",
        height=380,
        margin={"t": 50, "b": 40},
    )
    return fig


__all__ = [
    "AP_FORMAT",
    "BASELINE_STYLE",
    "BEST_COLOR",
    "FULL_COLOR",
    "MUTED",
    "SEARCH_COLOR",
    "STUDENT_COLOR",
    "baseline_bars",
    "chain_box",
    "cost_scatter",
    "curriculum_timeline",
    "empty_figure",
    "intermediate_curves",
    "optimization_history",
    "parallel_coordinates",
    "param_importance_bar",
    "pareto_front",
    "race_chart",
    "run_progress",
    "teacher_colors",
    "teacher_position_heatmap",
]
