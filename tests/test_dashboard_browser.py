"""The dashboard in a real browser: ``streamlit run app.py`` on 127.0.0.1, opened in Debian's
headless Chromium driven by Playwright; waits for the charts, saves screenshots, checks the page.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and ``pip install playwright`` (no
``playwright install``: the system Chromium is used). Skipped with the reason when either is missing.
Screenshots go to the test's tmp folder, or to ``$DASHBOARD_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout:.0f}s")


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A generated study served by ``streamlit run app.py`` on 127.0.0.1 (stopped afterwards)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    spec = importlib.util.spec_from_file_location(
        "dashboard_render", ROOT / "benchmarks" / "dashboard_render.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    studies = tmp_path / "studies"
    bench.make_fake_study(studies / "demo", 60, seed=5, full_run="done")
    port = _free_port()
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(ROOT / "app.py"),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--",
        "--studies-dir",
        str(studies),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _shots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wait_plots(page, count: int, timeout_ms: int = 90_000) -> None:  # type: ignore[no-untyped-def]
    """Wait until ``count`` plotly charts have drawn their traces."""
    page.wait_for_function(
        "n => [...document.querySelectorAll('.js-plotly-plot')].filter("
        "p => p.querySelector('.trace, .parcoords, .hm')).length >= n",
        arg=count,
        timeout=timeout_ms,
    )


def _svg_texts(page, selector: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Text of SVG elements (plotly titles, legends), which ``inner_text`` does not give."""
    return list(page.locator(selector).evaluate_all("els => els.map(e => e.textContent)"))


def test_dashboard_in_headless_chromium(served: tuple[str, Path]) -> None:
    import optuna
    from optuna.trial import TrialState
    from playwright.sync_api import sync_playwright

    url, tmp_path = served
    shots = _shots_dir(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 2400})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text("Curriculum search studies").wait_for(timeout=90_000)
            _wait_plots(page, 2)
            page.wait_for_timeout(1500)  # let plotly finish its transitions before the screenshot
            overview = shots / "dashboard_overview.png"
            page.screenshot(path=str(overview), full_page=True)
            assert overview.stat().st_size > 20_000

            # the study table (a canvas data grid; its accessible table holds the text) lists the
            # study, its state and its best AP
            table = page.locator('[data-testid="stDataFrame"]').first
            table.wait_for(timeout=30_000)
            assert table.is_visible() and table.bounding_box()["height"] > 60  # type: ignore[index]
            grid_text = table.locator("table").first.text_content() or ""
            assert "best AP" in grid_text and "demo" in grid_text and "done" in grid_text
            # charts: optimisation history and learning curves with their titles and traces
            titles = _svg_texts(page, ".js-plotly-plot .gtitle")
            assert "Optimisation history" in titles
            assert any(t.startswith("Learning curves") for t in titles)
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 5
            assert page.get_by_text("Best proxy AP").is_visible()
            assert page.get_by_text("serving on 127.0.0.1").is_visible()
            assert page.locator('[data-testid="stException"]').count() == 0

            # live refresh: a trial finished by a writer shows up without reloading the page
            db = tmp_path / "studies" / "demo" / "study.db"
            study = optuna.load_study(study_name="demo", storage=f"sqlite:///{db}")
            done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
            target = int(study.user_attrs["target_trials"])
            page.get_by_text(f"{done} / {target}", exact=True).wait_for(timeout=10_000)
            study.add_trial(
                optuna.create_trial(state=TrialState.FAIL, user_attrs={"failure_reason": "late failure"})
            )
            page.get_by_text(f"{done + 1} / {target}", exact=True).wait_for(timeout=60_000)

            # another page: the curriculum Gantt chart coloured by teacher
            page.get_by_role("radio", name="Curricula", exact=True).click()  # the page selector
            page.locator(".js-plotly-plot .gtitle", has_text="Curricula of the top").wait_for(timeout=60_000)
            _wait_plots(page, 3)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "dashboard_curricula.png"), full_page=True)
            legend = _svg_texts(page, ".js-plotly-plot .legendtext")
            assert {"medium", "pvt"} <= set(legend)  # the default pool, which the generated study samples
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
