"""The dashboard charts' shared look: colours (one per teacher across all charts, one per
baseline), the common layout, the empty figure that says why, hover texts and the trial ranking.
See :mod:`curriculum_search.dashboard.charts`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
DEFAULT_HEIGHT = 420
#: Tick format of AP axes: 3 significant digits, no SI prefix (tiny APs would read "150µ").
AP_FORMAT = ".3~g"


def apply_layout(
    fig: go.Figure,
    title: str | None = None,
    height: int = DEFAULT_HEIGHT,
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
    return apply_layout(fig, title, height=height)


def teacher_colors(names: Sequence[str]) -> dict[str, str]:
    """A fixed colour per teacher name (pool order), ``student`` grey."""
    palette = qualitative.Safe + qualitative.Vivid
    out = {n: palette[i % len(palette)] for i, n in enumerate(names)}
    out.setdefault("student", STUDENT_COLOR)
    return out


def baseline_label(name: str) -> str:
    from curriculum_search.dashboard.study_frames import BASELINE_LABELS

    return BASELINE_LABELS.get(name, name)


def hover_text(df: pd.DataFrame) -> list[str]:
    return [
        f"#{int(n)} · AP {v:.4f}<br>{d}"
        if isinstance(v, float) and not math.isnan(v)
        else f"#{int(n)}<br>{d}"
        for n, v, d in zip(df["number"], df["value"], df["description"])
    ]


def ranked_trials(trials: pd.DataFrame, maximize: bool) -> pd.DataFrame:
    done = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    return done.sort_values(["value", "number"], ascending=[not maximize, True])
