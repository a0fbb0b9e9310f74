"""Streamlit rendering: the sidebar, the study table and the five study pages.

Everything read from disk goes through ``st.cache_data`` keyed by a *change token* (file sizes and
change times of the study database, a 10 s bucket for server databases), so a live refresh costs
nothing while the study is unchanged and re-reads it once when it changes. The main area is a
fragment re-run every few seconds when "Live refresh" is on.

By job: this module is the app (sidebar, study table, study selector); :mod:`.cached` the cached
reads, :mod:`.study_pages` the five pages of the selected study.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from curriculum_search.dashboard import AppArgs, exposure_refusal, is_loopback, parse_app_args
from curriculum_search.dashboard import data as dd
from curriculum_search.dashboard.cached import Loaded, cached_discovery, full_run, load
from curriculum_search.dashboard.study_pages import RENDERERS, Context

PAGES = ("Overview", "Curricula", "Parameters", "Trials", "Baselines & full run")
REFRESH_CHOICES = (5, 10, 30, 60)

START_HELP = """\
No study yet in `{studies}`. Start one (it appears here as soon as its first trial is created):

```bash
python -m curriculum_search run                  # embedded default: synthetic data, own teacher zoo
python -m curriculum_search run --space space/my.yaml --trials 50
```

Studies on a server database: add its URL in the sidebar or start the app with
`streamlit run app.py -- --storage postgresql://user@host/db`.
"""


# -- page scaffolding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Sidebar choices."""

    studies_dir: Path
    storages: tuple[str, ...]
    live: bool
    interval: int


def main(argv: list[str] | None = None) -> None:
    """Render the whole app (the body of ``app.py``)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st.set_page_config(page_title="curriculum_search dashboard", page_icon="🎓", layout="wide")
    args = parse_app_args(argv)
    refusal = exposure_refusal(_server_address(), _client_ip(), args.expose)
    if refusal is not None:
        st.error(refusal, icon="🔒")
        st.stop()
    settings = sidebar(args)
    body = st.fragment(render_body, run_every=settings.interval if settings.live else None)
    body(settings)


def sidebar(args: AppArgs) -> Settings:
    """Studies folder, extra storage, live refresh; returns the choices."""
    sb = st.sidebar
    sb.title("curriculum_search")
    sb.caption("Curriculum search for multi-teacher detector distillation")
    folder = sb.text_input(
        "Studies folder",
        value=str(args.studies_dir),
        key="studies_dir",
        help="Every `<name>/study.db` under it is a study.",
    )
    extra = sb.text_input(
        "Extra storage URL",
        value="",
        key="extra_storage",
        placeholder="postgresql://user@host/db, sqlite:///path.db or journal:PATH",
        help="Also list the studies of this Optuna storage (read-only).",
    )
    storages = tuple(args.storages) + ((extra.strip(),) if extra.strip() else ())
    for url in args.storages:
        sb.caption(f"storage: `{dd.redact_url(url)}`")
    live = sb.toggle(
        "Live refresh",
        value=True,
        key="live",
        help="Re-read the studies while they run (read-only; never blocks the search).",
    )
    interval = sb.select_slider(
        "Refresh every (s)", options=list(REFRESH_CHOICES), value=10, key="interval", disabled=not live
    )
    address = _server_address()
    if is_loopback(address):
        sb.caption(f"🔒 Serving on {address}: this machine only.")
    elif args.expose:
        sb.warning(
            f"Exposed (`--expose`): listening on {address or 'every interface'}, other machines can "
            "read these studies."
        )
    else:
        sb.warning(
            f"Listening on {address or 'every interface'} without `--expose`: only browsers on this "
            "machine are served. Restart with `--server.address 127.0.0.1`."
        )
    return Settings(Path(folder or "studies"), storages, bool(live), int(interval))


def _client_ip() -> str | None:
    """The browser's address (``None`` for this machine, as Streamlit reports it)."""
    try:
        return st.context.ip_address
    except Exception:
        return None


def _server_address() -> str:
    try:
        return str(st.get_option("server.address") or "")
    except Exception:
        return ""


def render_body(settings: Settings) -> None:
    """Study table, study selector and the selected page (the live-refreshed fragment)."""
    st.title("Curriculum search studies")
    found = cached_discovery(str(settings.studies_dir), settings.storages)
    for p in found.problems:
        st.error(f"**Cannot read {p.where}**: {p.message}", icon="⚠️")
    if not found.sources:
        if not settings.studies_dir.exists():
            st.info(f"The studies folder `{settings.studies_dir}` does not exist yet.", icon="📂")
        st.markdown(START_HELP.format(studies=settings.studies_dir))
        return
    loaded = {src: load(src) for src in found.sources}
    rows = []
    for src, res in loaded.items():
        if res.data is not None:
            rows.append(dd.summary_row(res.data, full_run(src)))
        else:
            rows.append(dd.error_row(src, res.error or "unreadable"))
    study_table(pd.DataFrame(rows))
    for src, res in loaded.items():
        if res.error:
            st.error(f"**{src.name}** cannot be read: {res.error}", icon="🚫")
    names = [
        src.name if _unique_name(src, found.sources) else f"{src.name} ({src.location})"
        for src in found.sources
    ]
    default = _default_study(loaded)
    choice = st.selectbox("Study", names, index=default, key="study")
    src = found.sources[names.index(choice)] if choice in names else found.sources[default]
    res = loaded[src]
    if res.data is None:
        st.warning(
            f"Study **{src.name}** is not readable, see the reason above. Fix the file or pick another study."
        )
        return
    data = res.data
    if data.trials.empty:
        st.info(
            f"Study **{src.name}** has no trial yet. The first points appear when its first proxy run "
            "reports an evaluation; the baselines run first.",
            icon="⏳",
        )
        return
    view = st.segmented_control("View", PAGES, default=PAGES[0], key="view", label_visibility="collapsed")
    page = view if view in PAGES else PAGES[0]
    ctx = Context(src, data, settings.studies_dir)
    RENDERERS[page](ctx)
    st.caption(f"Read {data.loaded_at.astimezone().strftime('%H:%M:%S')} from `{src.location}` (read-only).")


def _unique_name(src: dd.StudySource, sources: tuple[dd.StudySource, ...]) -> bool:
    return sum(1 for s in sources if s.name == src.name) == 1


def _default_study(loaded: Mapping[dd.StudySource, Loaded]) -> int:
    """Index of the most recently updated readable study."""
    best, best_t = 0, None
    for i, res in enumerate(loaded.values()):
        t = res.data.last_update if res.data is not None else None
        if t is not None and (best_t is None or t > best_t):
            best, best_t = i, t
    return best


def study_table(df: pd.DataFrame) -> None:
    cols = [
        "study",
        "state",
        "best AP",
        "best trial",
        "progress",
        "finished",
        "target",
        "complete",
        "pruned",
        "failed",
        "running",
        "compute (h)",
        "proxy cost",
        "full-run AP",
        "last update",
        "location",
    ]
    cols = [c for c in cols if c in df.columns]
    cc = st.column_config
    st.dataframe(
        df[cols],
        hide_index=True,
        key="study_table",
        column_config={
            "best AP": cc.NumberColumn(format="%.4f", help="best final proxy AP (baselines included)"),
            "full-run AP": cc.NumberColumn(
                format="%.4f", help="AP of the full-length run of the best curriculum"
            ),
            "progress": cc.ProgressColumn(
                format="percent", min_value=0.0, max_value=1.0, help="finished / target trials"
            ),
            "compute (h)": cc.NumberColumn(format="%.2f", help="sum of the trials' wall time"),
            "proxy cost": cc.NumberColumn(format="compact", help="sum of GFLOPs × iterations over trials"),
            "last update": cc.DatetimeColumn(format="distance"),
            "best trial": cc.NumberColumn(format="%d"),
        },
    )
