"""Pure functions from study frames (see :mod:`.data`) to plotly figures.

No Streamlit and no I/O here: every function takes frames / plain values and returns a
``plotly.graph_objects.Figure`` (an explanatory empty figure when there is nothing to draw), so
each one is tested and benchmarked on its own. Teachers keep one colour across all charts
(:func:`teacher_colors`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

#: Colour of searched trials, baselines, the best trial and the full run.
SEARCH_COLOR = "#1f77b4"
BEST_COLOR = "#d62728"
FULL_COLOR = "#2ca02c"
MUTED = "rgba(120,120,120,0.35)"
STUDENT_COLOR = "#9e9e9e"
BASELINE_STYLE = {
    "student_only": ("#7f7f7f", "square"),
    "direct_strongest": ("#ff7f0e", "diamond"),
    "weak_to_strong": ("#9467bd", "star"),
    "heuristic": ("#8c564b", "triangle-up"),
}
_HEIGHT = 420
#: Tick format of AP axes: 3 significant digits, no SI prefix (tiny APs would read "150µ").
AP_FORMAT = ".3~g"


def _layout(
    fig: go.Figure,
    title: str | None = None,
    height: int = _HEIGHT,
    margin: dict[str, int] | None = None,
    **kwargs: Any,
) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        margin=margin or {"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0},
        hovermode="closest",
        **kwargs,
    )
    return fig


def empty_figure(message: str, title: str | None = None, height: int = 260) -> go.Figure:
    """A blank figure that says why there is nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 14}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=height)


def teacher_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per teacher name (pool order), ``student`` grey."""
    palette = qualitative.Safe + qualitative.Vivid
    out = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    out.setdefault("student", STUDENT_COLOR)
    return out


def _baseline_label(name: str) -> str:
    from curriculum_search.dashboard.data import BASELINE_LABELS

    return BASELINE_LABELS.get(name, name)


def _hover(df: pd.DataFrame) -> list[str]:
    return [
        f"#{int(n)} · AP {v:.4f}<br>{d}"
        if isinstance(v, float) and not math.isnan(v)
        else f"#{int(n)}<br>{d}"
        for n, v, d in zip(df["number"], df["value"], df["description"])
    ]


def _ranked(trials: pd.DataFrame, maximize: bool) -> pd.DataFrame:
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    return done.sort_values(["value", "number"], ascending=[not maximize, True])


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
            hovertext=_hover(search),
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
                    name=_baseline_label(name),
                    legendgroup=name,
                    marker={
                        "color": color,
                        "symbol": symbol,
                        "size": 12,
                        "line": {"width": 1, "color": "white"},
                    },
                    hovertext=[
                        f"baseline {_baseline_label(name)} (#{int(row['number'])}): AP {value:.4f}<br>{row.get('description', '')}"
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
                name=_baseline_label(name),
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
    return _layout(fig, "Optimisation history")


# -- learning curves ------------------------------------------------------------------------------


def _pick_curves(
    curves: pd.DataFrame, trials: pd.DataFrame, top_k: int, sample: int, maximize: bool, seed: int
) -> tuple[list[int], list[int]]:
    """Top-K finished trials and a random sample of the other trials that have a curve."""
    ranked = _ranked(trials, maximize)
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
    return _layout(fig, "Learning curves (intermediate AP; stage starts marked, best trial's stages shaded)")


# -- curricula ------------------------------------------------------------------------------------


def curriculum_timeline(
    trials: pd.DataFrame,
    stages: pd.DataFrame,
    colors: Mapping[str, str],
    *,
    top_k: int = 10,
    maximize: bool = True,
) -> go.Figure:
    """Gantt chart of the stages of the top-K finished trials (best on top), coloured by teacher."""
    ranked = _ranked(trials, maximize).head(top_k)
    if ranked.empty:
        return empty_figure("No finished trial yet.", "Curricula of the best trials")
    labels = {
        int(r.number): f"#{int(r.number)} · {r.value:.3f}" + (f" ({r.baseline})" if r.baseline else "")
        for r in ranked.itertuples()
    }
    order = list(labels.values())
    sub = stages[stages["number"].isin(list(labels))]
    fig = go.Figure()
    present = set(sub["teacher"])
    pool = [t for t in colors if t in present] + sorted(present - set(colors))
    for teacher in pool:
        g = sub[sub["teacher"] == teacher]
        fig.add_trace(
            go.Bar(
                y=[labels[int(n)] for n in g["number"]],
                x=g["iterations"],
                base=g["start"],
                orientation="h",
                name=str(teacher),
                marker={
                    "color": colors.get(str(teacher), STUDENT_COLOR),
                    "line": {"width": 1, "color": "white"},
                },
                text=[f"{teacher} ({int(i)})" for i in g["iterations"]],
                textposition="inside",
                insidetextanchor="middle",
                customdata=g["end"],
                hovertemplate=f"{teacher}: iterations %{{base}}–%{{customdata}}<extra>%{{y}}</extra>",
            )
        )
    student = ranked[~ranked["number"].isin(sub["number"])]
    if len(student):
        fig.add_trace(
            go.Bar(
                y=[labels[int(n)] for n in student["number"]],
                x=student["total_iterations"].fillna(1).to_numpy(dtype=float),
                base=0,
                orientation="h",
                name="student only (no teacher)",
                marker={"color": STUDENT_COLOR},
                hoverinfo="y",
            )
        )
    fig.update_layout(barmode="overlay")
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], title=None)
    fig.update_xaxes(title="global iteration")
    return _layout(fig, f"Curricula of the top {len(ranked)} trials", height=max(260, 60 + 32 * len(ranked)))


def teacher_position_heatmap(
    trials: pd.DataFrame, stages: pd.DataFrame, teachers: Sequence[str]
) -> go.Figure:
    """Mean final AP of finished trials by (teacher, stage position), with counts.

    The last column, ``unused``, averages the trials that do not use the teacher at all, so each
    row reads as "putting this teacher at stage k gives AP x, leaving it out gives y".
    """
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()][["number", "value"]]
    st = stages.merge(done, on="number") if len(stages) else stages
    if done.empty or st.empty:
        return empty_figure("Needs finished trials that use teachers.", "Teacher × stage position")
    positions = sorted(int(p) for p in st["position"].unique())
    names = [t for t in teachers if t in set(st["teacher"])] or sorted(st["teacher"].unique())
    cols = [f"stage {p}" for p in positions] + ["unused"]
    z = np.full((len(names), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in names]
    for i, t in enumerate(names):
        for j, p in enumerate(positions):
            v = st[(st["teacher"] == t) & (st["position"] == p)]["value"]
            if len(v):
                z[i, j] = v.mean()
                text[i][j] = f"{v.mean():.3f}<br>n={len(v)}"
        users = set(st[st["teacher"] == t]["number"])
        v = done[~done["number"].isin(users)]["value"]
        if len(v):
            z[i, -1] = v.mean()
            text[i][-1] = f"{v.mean():.3f}<br>n={len(v)}"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": "mean AP"},
            hovertemplate="%{y} at %{x}: mean AP %{z:.4f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(
        fig, "Which teacher at which stage (mean final AP)", height=max(260, 120 + 60 * len(names))
    )


def chain_box(trials: pd.DataFrame, *, top_n: int = 12, maximize: bool = True) -> go.Figure:
    """Final AP distribution of the ``top_n`` most frequent teacher chains (``a → b``), best median first."""
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna() & (trials["teachers"] != "")]
    if done.empty:
        return empty_figure("Needs finished trials.", "AP by teacher chain")
    freq = done["teachers"].value_counts().head(top_n).index
    sub = done[done["teachers"].isin(freq)]
    med = sub.groupby("teachers")["value"].median().sort_values(ascending=maximize)
    fig = go.Figure()
    for chain in med.index:
        v = sub[sub["teachers"] == chain]
        fig.add_trace(
            go.Box(
                x=v["value"],
                name=f"{chain} (n={len(v)})",
                orientation="h",
                boxpoints="all" if len(v) <= 30 else "outliers",
                jitter=0.4,
                marker={"size": 4, "color": SEARCH_COLOR},
                line={"color": SEARCH_COLOR},
                hovertext=_hover(v),
                hoverinfo="text+x",
                showlegend=False,
            )
        )
    fig.update_xaxes(title="final proxy AP", tickformat=AP_FORMAT)
    return _layout(
        fig, "AP by teacher chain (most frequent; best median on top)", height=max(260, 110 + 34 * len(med))
    )


# -- parameters -----------------------------------------------------------------------------------


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
    return _layout(fig, "Parameter importances for AP", height=max(260, 80 + 26 * len(items)))


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
    done = _ranked(trials, maximize)
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
    return _layout(
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
                hovertext=[f"{h}<br>cost {c:,.0f}" for h, c in zip(_hover(g), g["proxy_cost"])],
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
                hovertext=_hover(f),
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
                name=_baseline_label(name),
                marker={"color": color, "symbol": symbol, "size": 13, "line": {"width": 1, "color": "white"}},
                hovertext=[f"{_baseline_label(name)}: AP {value:.4f}, cost {cost:,.0f}"],
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
    return _layout(fig, "AP vs proxy cost (constraint-aware Pareto front)")


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
    return _layout(fig, "Baselines vs best searched curriculum", height=max(260, 110 + 45 * len(rows)))


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
    return _layout(fig, title, height=360)


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
