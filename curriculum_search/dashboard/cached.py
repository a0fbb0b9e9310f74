"""Cached reads for the dashboard's pages: everything read from disk goes through
``st.cache_data`` keyed by a *change token* (file sizes and change times of the study database, a
10 s bucket for server databases), so a live refresh costs nothing while the study is unchanged and
re-reads it once when it changes; one study reader per storage is kept (``st.cache_resource``).
See :mod:`curriculum_search.dashboard.pages`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from curriculum_search.dashboard import data as dd


@dataclass(frozen=True)
class Loaded:
    """A study or the one-line reason it could not be read."""

    data: dd.StudyData | None
    error: str | None = None


def source_key(src: dd.StudySource) -> tuple[str, str, str]:
    return (src.name, src.url, str(src.folder))


def _source(key: tuple[str, str, str]) -> dd.StudySource:
    return dd.StudySource(key[0], key[1], Path(key[2]))


@st.cache_data(ttl=5, show_spinner=False, max_entries=32)
def cached_discovery(studies_dir: str, storages: tuple[str, ...]) -> dd.Discovery:
    return dd.discover(Path(studies_dir), storages)


@st.cache_resource(show_spinner=False, max_entries=64)
def cached_reader(read_url: str, url: str) -> dd.StudyReader:
    """One study reader per storage and read URL, kept across reruns: Optuna caches finished trials
    (they cannot change), so a re-read after a change fetches only new and unfinished trials."""
    return dd.open_reader(url)


def reader(src: dd.StudySource) -> dd.StudyReader:
    return cached_reader(dd.reader_key(src.url), src.url)


@st.cache_data(ttl=3600, show_spinner=False, max_entries=64)
def cached_study(key: tuple[str, str, str], token: tuple[Any, ...]) -> Loaded:
    """Read a study (once per change token)."""
    try:
        src = _source(key)
        return Loaded(dd.load_study(src, reader(src)))
    except Exception as exc:
        return Loaded(None, str(exc) if isinstance(exc, dd.StudyError) else f"{type(exc).__name__}: {exc}")


@st.cache_data(ttl=3600, show_spinner=False, max_entries=64)
def cached_importances(key: tuple[str, str, str], token: tuple[Any, ...]) -> dd.Importances:
    loaded = cached_study(key, token)
    if loaded.data is None:
        return dd.Importances({}, loaded.error or "study not readable")
    return dd.param_importances(loaded.data)


@st.cache_data(ttl=600, show_spinner=False, max_entries=256)
def cached_trial_run(key: tuple[str, str, str], run_dir: str, token: tuple[Any, ...]) -> dd.TrialRun:
    return dd.load_trial_run(_source(key), run_dir)


@st.cache_data(ttl=600, show_spinner=False, max_entries=64)
def cached_full_run(key: tuple[str, str, str], token: tuple[Any, ...]) -> dd.FullRun | None:
    return dd.load_full_run(_source(key))


def load(src: dd.StudySource) -> Loaded:
    return cached_study(source_key(src), dd.change_token(src))


def full_run(src: dd.StudySource) -> dd.FullRun | None:
    folder = src.folder / "full"
    token = dd.files_token(
        [folder / n for n in ("status.json", "history.jsonl", "metrics.json", "recipe.yaml")]
        + [src.folder / "best_recipe.yaml"]
    )
    return cached_full_run(source_key(src), token)


def trial_run(src: dd.StudySource, run_dir: str) -> dd.TrialRun:
    files = dd.trial_run_files(src, run_dir)
    token = dd.files_token(files) if files else ()
    return cached_trial_run(source_key(src), run_dir, token)
