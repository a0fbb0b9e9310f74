"""Charts of the curricula the search tried: the stages of the top trials on one timeline,
which teacher each position holds among the best trials, and the AP of each teacher chain.
Pure functions from study frames to plotly figures (see :mod:`curriculum_search.dashboard.charts`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from curriculum_search.dashboard.chart_style import (
    AP_FORMAT,
    SEARCH_COLOR,
    STUDENT_COLOR,
    apply_layout,
    empty_figure,
    hover_text,
    ranked_trials,
)


def curriculum_timeline(
    trials: pd.DataFrame,
    stages: pd.DataFrame,
    colors: Mapping[str, str],
    *,
    top_k: int = 10,
    maximize: bool = True,
) -> go.Figure:
    """Gantt chart of the stages of the top-K finished trials (best on top), coloured by teacher."""
    ranked = ranked_trials(trials, maximize).head(top_k)
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
    return apply_layout(
        fig, f"Curricula of the top {len(ranked)} trials", height=max(260, 60 + 32 * len(ranked))
    )


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
    return apply_layout(
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
                hovertext=hover_text(v),
                hoverinfo="text+x",
                showlegend=False,
            )
        )
    fig.update_xaxes(title="final proxy AP", tickformat=AP_FORMAT)
    return apply_layout(
        fig, "AP by teacher chain (most frequent; best median on top)", height=max(260, 110 + 34 * len(med))
    )
