"""Streamlit dashboard: studies, curricula, trials, baselines and the full run.

``streamlit run app.py`` (from a checkout) or ``python -m curriculum_search dashboard`` (which
runs :func:`dashboard_command`). Modules: :mod:`.data` (read-only loading into pandas; by job
:mod:`.sources`, :mod:`.study_frames`, :mod:`.run_files`), :mod:`.charts` (pure plotly figures;
with :mod:`.curriculum_charts`, :mod:`.param_charts`, :mod:`.chart_style`), :mod:`.pages`
(Streamlit rendering; with :mod:`.cached`, :mod:`.study_pages`). Arguments for the app go
after ``--``: ``streamlit run app.py -- --studies-dir DIR --storage URL [--storage URL2]``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Environment variable naming the studies folder (shared with the CLI's ``--studies-dir``).
STUDIES_ENV = "CURRICULUM_SEARCH_STUDIES"


@dataclass(frozen=True)
class AppArgs:
    """What the app shows: the studies folder and extra Optuna storage URLs."""

    studies_dir: Path
    storages: tuple[str, ...] = ()
    expose: bool = False


def app_path() -> Path:
    """The Streamlit script: the repository's ``app.py``, or the packaged copy when installed."""
    repo_app = Path(__file__).resolve().parents[2] / "app.py"
    if repo_app.is_file():
        return repo_app
    return Path(__file__).resolve().with_name("streamlit_app.py")


def parse_app_args(argv: Sequence[str] | None = None) -> AppArgs:
    """Parse the script arguments (those after ``--`` on the ``streamlit run`` line).

    Unknown arguments are ignored (under ``AppTest`` or other hosts ``sys.argv`` is not ours).
    Defaults: ``$CURRICULUM_SEARCH_STUDIES`` or ``./studies``, no extra storage.
    """
    p = argparse.ArgumentParser(prog="app.py", add_help=False)
    p.add_argument("--studies-dir", type=Path, default=None)
    p.add_argument("--storage", action="append", default=[])
    p.add_argument("--expose", action="store_true")
    args, _ = p.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    studies = args.studies_dir or Path(os.environ.get(STUDIES_ENV) or "studies")
    return AppArgs(
        studies_dir=studies, storages=tuple(s for s in args.storage if s), expose=bool(args.expose)
    )


def is_loopback(address: str | None) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``)."""
    if not address:
        return False  # Streamlit's default (unset) listens on every interface
    if address.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_refusal(address: str | None, client_ip: str | None, expose: bool) -> str | None:
    """Why the page must not be shown to this browser, or ``None`` to show it.

    The dashboard serves this machine only unless it was started with the explicit ``--expose``
    app flag: a server that listens beyond loopback without it (``streamlit run app.py`` with a
    ``~/.streamlit`` or ``--server.address`` setting) still shows the studies to browsers on this
    machine (``client_ip`` loopback, or ``None``: Streamlit's value for a local connection) and
    refuses every other one.
    """
    if expose or is_loopback(address) or client_ip is None or is_loopback(client_ip):
        return None
    where = address or "every network interface"
    return (
        f"This dashboard serves this machine only, but its server listens on {where}. Restart it "
        "with `--server.address 127.0.0.1`, or add `-- --expose` (or `dashboard --expose`) to "
        "let other machines read these studies."
    )


def dashboard_command(
    host: str = "127.0.0.1",
    port: int = 8501,
    storage: str | None = None,
    studies_dir: str | Path | None = None,
    *,
    open_browser: bool = True,
    expose: bool = False,
) -> list[str]:
    """The command line that serves the dashboard (run it with ``subprocess``).

    Binds to ``host`` (default ``127.0.0.1``: this machine only), turns usage statistics off and
    passes ``--storage`` / ``--studies-dir`` to the app after ``--``.

    Args:
        host: address to bind; anything else than a loopback address exposes the studies.
        port: TCP port.
        storage: an extra Optuna storage URL whose studies are listed too.
        studies_dir: the studies folder (default: the app's default, ``./studies`` or the env var).
        open_browser: open a browser tab on start (``--server.headless false``).
        expose: serve other machines; required for a ``host`` that is not a loopback address.

    Raises:
        ConfigError: ``host`` is not a loopback address and ``expose`` is false.
    """
    if not expose and not is_loopback(host):
        from curriculum_search.errors import ConfigError

        raise ConfigError(
            None,
            "--host",
            f"{host} lets other machines read the studies; add --expose to mean it "
            "(default 127.0.0.1: this machine only)",
        )
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.address",
        str(host),
        "--server.port",
        str(int(port)),
        "--server.headless",
        "false" if open_browser else "true",
        "--browser.gatherUsageStats",
        "false",
        "--",
    ]
    if studies_dir is not None:
        cmd += ["--studies-dir", str(studies_dir)]
    if storage:
        cmd += ["--storage", storage]
    if expose:
        cmd += ["--expose"]
    return cmd


__all__ = [
    "STUDIES_ENV",
    "AppArgs",
    "app_path",
    "dashboard_command",
    "exposure_refusal",
    "is_loopback",
    "parse_app_args",
]
