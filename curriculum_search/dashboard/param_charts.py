"""Charts of the searched parameters: their importances, parallel coordinates of the finished
trials, and AP against proxy cost with its Pareto front. Pure functions from study frames to
plotly figures (see :mod:`curriculum_search.dashboard.charts`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from curriculum_search.dashboard.chart_style import (
    AP_FORMAT,
    BASELINE_STYLE,
    BEST_COLOR,
    SEARCH_COLOR,
    apply_layout,
    baseline_label,
    empty_figure,
    hover_text,
    ranked_trials,
)


def param_importance_bar(importances: Mapping[str, float]) -> go.Figure:
    """Horizontal bars of parameter importances (largest on top)."""
    if not importances:
        return empty_figure("No importances.", "Parameter importances")
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = go.Figure(
        go.Bar(
            x=[v for _, v in items],
            y=[k for k, _ in items],
            orientation="h",
            marker={"color": SEARCH_COLOR},
            text=[f"{v:.2f}" for _, v in items],
            textposition="outside",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="importance (PED-ANOVA, normalised)")
    return apply_layout(fig, "Parameter importances for AP", height=max(260, 80 + 26 * len(items)))


def _skip_param(name: str) -> bool:
    return name.startswith(("order_key.", "frac."))


def parallel_coordinates(
    trials: pd.DataFrame,
    param_info: Mapping[str, Any],
    *,
    importances: Mapping[str, float] | None = None,
    maximize: bool = True,
    max_dims: int = 10,
) -> go.Figure:
    """Parallel coordinates of the finished trials' settings, coloured by final AP.

    Teacher order keys and stage fractions (encoding internals) are replaced by the decoded
    ``stages``, ``first teacher`` and ``last teacher``; log-scale parameters use a log axis;
    categorical ones are spread over their choices. With ``importances`` the most important
    parameters come first and only ``max_dims`` axes (AP included) are kept.
    """
    done = ranked_trials(trials, maximize)
    if len(done) < 2:
        return empty_figure("Needs at least 2 finished trials.", "Parallel coordinates")
    dims: list[dict[str, Any]] = []
    for label, col in (
        ("stages", "n_stages"),
        ("first teacher", "first_teacher"),
        ("last teacher", "last_teacher"),
    ):
        if col in done and done[col].notna().any():
            dims.append(_dimension(label, done[col], None))
    names = list(param_info)
    if importances:
        names.sort(key=lambda n: -float(importances.get(n, -1.0)))
    for name in names:
        info = param_info[name]
        col = f"param:{name}"
        if _skip_param(name) or col not in done or done[col].isna().all() or name == "n_stages":
            continue
        if getattr(info, "kind", "") == "categorical" and len(getattr(info, "choices", ())) <= 1:
            continue
        dims.append(_dimension(name, done[col], info))
    dims = dims[: max_dims - 1]
    dims.append({"label": "AP", "values": done["value"].to_numpy(dtype=float)})
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": done["value"].to_numpy(dtype=float),
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": "AP"},
            },
            dimensions=dims,
            labelangle=-20,
        )
    )
    return apply_layout(
        fig,
        f"Settings of {len(done)} finished trials",
        height=480,
        margin={"l": 60, "r": 40, "t": 90, "b": 20},
    )


def _dimension(label: str, values: pd.Series, info: Any) -> dict[str, Any]:
    kind = getattr(info, "kind", None)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if kind == "categorical" or not numeric:
        choices = [str(c) for c in getattr(info, "choices", ())] or sorted({str(v) for v in values})
        seen = {str(v) for v in values}
        choices = [c for c in choices if c in seen] + sorted(seen - set(choices))
        index = {c: i for i, c in enumerate(choices)}
        return {
            "label": label,
            "values": [index[str(v)] for v in values],
            "tickvals": list(range(len(choices))),
            "ticktext": choices,
            "range": [-0.3, len(choices) - 0.7] if len(choices) > 1 else [-1, 1],
        }
    arr = values.to_numpy(dtype=float)
    if getattr(info, "log", False) and np.all(arr[~np.isnan(arr)] > 0):
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        ticks = [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
        ticks = sorted({t * m for t in ticks for m in (1, 2, 5) if lo <= t * m <= hi}) or [lo, hi]
        return {
            "label": f"{label} (log)",
            "values": np.log10(arr),
            "tickvals": [math.log10(t) for t in ticks],
            "ticktext": [f"{t:g}" for t in ticks],
        }
    finite = arr[~np.isnan(arr)]
    uniq = np.unique(finite)
    if len(uniq) <= 10 and np.all(uniq == np.round(uniq)):  # a few integers (e.g. stage counts)
        lo, hi = (float(uniq[0]), float(uniq[-1])) if len(uniq) else (0.0, 1.0)
        return {
            "label": label,
            "values": arr,
            "tickvals": [float(u) for u in uniq],
            "ticktext": [f"{int(u)}" for u in uniq],
            "range": [lo - 0.3, hi + 0.3],
        }
    return {"label": label, "values": arr}


def pareto_front(cost: np.ndarray, value: np.ndarray, maximize: bool = True) -> np.ndarray:
    """Indices of the non-dominated points (lower cost, better value), by increasing cost."""
    ok = ~(np.isnan(cost) | np.isnan(value))
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((-value[idx] if maximize else value[idx], cost[idx]))]
    front, best = [], -math.inf
    for i in order:
        v = value[i] if maximize else -value[i]
        if v > best:
            front.append(int(i))
            best = v
    return np.asarray(front, dtype=int)


def cost_scatter(
    trials: pd.DataFrame,
    baselines: Mapping[str, pd.Series] | None = None,
    cap: float | None = None,
    *,
    maximize: bool = True,
) -> go.Figure:
    """AP against proxy cost (GFLOPs × iterations) with the Pareto front and the cost constraint.

    Infeasible trials (a constraint value > 0, ``trial.set_constraint``) are drawn hollow; the cap
    ``constraints.max_proxy_cost`` is a vertical line; baselines are labelled.
    """
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna() & trials["proxy_cost"].notna()]
    if done.empty:
        return empty_figure("Needs finished trials with a proxy cost.", "AP vs proxy cost")
    fig = go.Figure()
    has_constraints = done["feasible"].notna().any()
    groups = (
        [
            ("feasible", done[done["feasible"].eq(True)], "circle"),
            ("infeasible (over the cost cap)", done[done["feasible"].eq(False)], "circle-open"),
        ]
        if has_constraints
        else [("trials", done, "circle")]
    )
    for name, g, symbol in groups:
        if g.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=g["proxy_cost"],
                y=g["value"],
                mode="markers",
                name=name,
                marker={
                    "color": SEARCH_COLOR if symbol == "circle" else "#999999",
                    "symbol": symbol,
                    "size": 7,
                    "opacity": 0.8,
                },
                hovertext=[f"{h}<br>cost {c:,.0f}" for h, c in zip(hover_text(g), g["proxy_cost"])],
                hoverinfo="text",
            )
        )
    pool = done[~done["feasible"].eq(False)] if has_constraints else done
    front = pareto_front(
        pool["proxy_cost"].to_numpy(dtype=float), pool["value"].to_numpy(dtype=float), maximize
    )
    if len(front):
        f = pool.iloc[front]
        fig.add_trace(
            go.Scatter(
                x=f["proxy_cost"],
                y=f["value"],
                mode="lines+markers",
                name="Pareto front" + (" (feasible)" if has_constraints else ""),
                line={"color": BEST_COLOR, "shape": "hv", "width": 2},
                marker={"color": BEST_COLOR, "size": 9},
                hovertext=hover_text(f),
                hoverinfo="text",
            )
        )
    for name, row in (baselines or {}).items():
        cost, value = row.get("proxy_cost"), row.get("value")
        if (
            not isinstance(cost, int | float)
            or not isinstance(value, int | float)
            or math.isnan(cost)
            or math.isnan(value)
        ):
            continue
        color, symbol = BASELINE_STYLE.get(name, ("#333333", "circle"))
        fig.add_trace(
            go.Scatter(
                x=[cost],
                y=[value],
                mode="markers",
                name=baseline_label(name),
                marker={"color": color, "symbol": symbol, "size": 13, "line": {"width": 1, "color": "white"}},
                hovertext=[f"{baseline_label(name)}: AP {value:.4f}, cost {cost:,.0f}"],
                hoverinfo="text",
            )
        )
    if cap is not None:
        fig.add_vline(
            x=cap,
            line_dash="dash",
            line_color="#444",
            annotation_text=f"cost cap {cap:,.0f}",
            annotation_position="top right",
        )
    fig.update_xaxes(title="proxy cost (GFLOPs × iterations)")
    fig.update_yaxes(title="final proxy AP", tickformat=AP_FORMAT)
    return apply_layout(fig, "AP vs proxy cost (constraint-aware Pareto front)")
