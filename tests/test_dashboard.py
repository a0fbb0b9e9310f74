"""Dashboard: read-only loading (WAL-safe, no file created), charts, and every page through
``streamlit.testing.v1.AppTest`` on a small real study produced by the search service (plus a
generated study with failed / running / constrained trials)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from curriculum_search.dashboard import STUDIES_ENV, dashboard_command, parse_app_args
from curriculum_search.dashboard import charts as ch
from curriculum_search.dashboard import data as dd
from curriculum_search.errors import StudyError

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ("Overview", "Curricula", "Parameters", "Trials", "Baselines & full run")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "dashboard_render", ROOT / "benchmarks" / "dashboard_render.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def real_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny study run by the search service (baselines + searched trials) and its full run."""
    from curriculum_search.search.service import run_full, run_search
    from curriculum_search.search.space import load_space
    from tests.helpers import TINY, opts, write_space

    tmp = tmp_path_factory.mktemp("dash_real")
    space_file = write_space(  # space/tiny.yaml with median pruning and 7 trials
        tmp,
        pruner={"name": "median", "params": {"n_startup_trials": 2}},
        trials=7,
        train={**TINY["train"], "checkpoint_every": 4},
    )
    studies = tmp / "studies"
    options = opts(studies, space_file)
    space = load_space(space_file)
    run_search(space, options)
    run_full(space, options)
    return studies


@pytest.fixture(scope="module")
def fake_studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated 80-trial study: pruned, failed, running trials, a cost constraint, a full run."""
    studies = tmp_path_factory.mktemp("dash_fake") / "studies"
    _bench().make_fake_study(studies / "fake", 80, seed=3, full_run="done")
    return studies


def _source(studies: Path, name: str) -> dd.StudySource:
    found = dd.discover(studies)
    return next(s for s in found.sources if s.name == name)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


# -- read-only loading ----------------------------------------------------------------------------


def test_real_study_loads_like_optuna_reads_it(real_studies: Path) -> None:
    src = _source(real_studies, "tiny")
    data = dd.load_study(src)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{real_studies / 'tiny' / 'study.db'}")
    trials = study.get_trials()
    assert list(data.trials["number"]) == [t.number for t in trials]
    assert data.counts()["COMPLETE"] == sum(t.state == TrialState.COMPLETE for t in trials)
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert data.best() is not None and float(data.best()["value"]) == pytest.approx(best.value)
    assert set(data.baselines()) == {"student_only", "direct_strongest", "weak_to_strong", "heuristic"}
    for t in trials:
        rows = data.stages[data.stages["number"] == t.number].sort_values("position")
        bounds = t.user_attrs.get("stage_boundaries", [])
        if t.user_attrs.get("baseline") == "student_only":
            assert rows.empty  # no teacher
        else:
            assert [*rows["start"], int(rows["end"].iloc[-1])] == bounds
            assert list(rows["teacher"]) == [s["teacher"] for s in t.user_attrs["curriculum"]["stages"]]
        curve = data.curves[data.curves["number"] == t.number]
        assert dict(zip(curve["step"], curve["value"])) == pytest.approx(t.intermediate_values)
    assert data.target_trials == 7
    assert [t["name"] for t in data.teacher_info] == ["a", "b"]


def test_reader_equals_optunas_own_get_trials(fake_studies: Path) -> None:
    """The dashboard reads with Optuna's storage API (no SQL of its own): the same frames as
    Optuna's own ``study.get_trials()``, and a re-read through a kept reader is the same again."""
    src = _source(fake_studies, "fake")
    reader = dd.open_reader(src.url)
    data = dd.load_study(src, reader)
    trials = optuna.load_study(study_name="fake", storage=f"sqlite:///{fake_studies / 'fake' / 'study.db'}")
    ref = dd.build_study_data(src, "maximize", {}, trials.get_trials())
    again = dd.load_study(src, reader)  # finished trials from Optuna's cache, the rest re-read
    for other in (ref, again):
        pd.testing.assert_frame_equal(data.trials, other.trials)
        pd.testing.assert_frame_equal(data.curves, other.curves)
        pd.testing.assert_frame_equal(data.stages, other.stages)
        assert data.trial_attrs == other.trial_attrs and data.trial_params == other.trial_params
        assert data.tally == other.tally
    assert data.constraint_names == ("proxy_cost",)
    # constraint value = proxy cost - cap, feasible when <= 0
    cap = data.cost_cap
    done = data.trials[data.trials["state"] == "COMPLETE"]
    assert cap is not None and np.allclose(done["constraint"], done["proxy_cost"] - cap)
    assert list(done["feasible"]) == list(done["proxy_cost"] <= cap)
    assert not hasattr(dd, "_fast_rdb_trials")


def test_reading_creates_no_file_and_leaves_a_checkpointed_wal_study_alone(tmp_path: Path) -> None:
    folder = tmp_path / "odd dir %20 #x" / "s"  # characters a URI must escape
    _bench().make_fake_study(folder, 12, seed=1, full_run=None)
    assert not (folder / "study.db-wal").exists()  # writer closed: everything in the main file
    before = _snapshot(folder)
    url = dd.readonly_sqlite_url(folder / "study.db")
    assert "mode=ro" in url and "immutable=1" in url
    data = dd.load_study(dd.StudySource("s", f"sqlite:///{folder / 'study.db'}", folder))
    assert len(data.trials) == 12
    assert _snapshot(folder) == before  # no -wal / -shm / journal created, nothing modified


def test_rollback_journal_databases_are_read_with_locks(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    optuna.create_study(study_name="r", storage=f"sqlite:///{db}")  # default journal mode: delete
    url = dd.readonly_sqlite_url(db)
    assert "mode=ro" in url and "immutable" not in url
    before = _snapshot(tmp_path)
    assert dd.load_study(dd.StudySource("r", f"sqlite:///{db}", tmp_path)).trials.empty
    assert _snapshot(tmp_path) == before


WRITER = textwrap.dedent(
    """
    import sys, time, optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(sys.argv[1], engine_kwargs={"connect_args": {"timeout": 5}})
    study = optuna.load_study(study_name="w", storage=storage)
    worst, n = 0.0, 0
    end = time.time() + float(sys.argv[2])
    while time.time() < end:
        t0 = time.time()
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("curriculum", {"stages": [{"teacher": "a", "iterations": 4}], "total_iterations": 4})
        for step in (2, 4):
            trial.report(0.1 * step, step)
        study.tell(trial, 0.5)
        worst, n = max(worst, time.time() - t0), n + 1
    print(n, worst)
    """
)


def test_live_reads_never_block_a_writing_study(tmp_path: Path) -> None:
    """A writer keeps adding trials (WAL); repeated dashboard loads all succeed, see a growing
    study, and the writer never fails on a lock."""
    import sqlite3

    folder = tmp_path / "w"
    folder.mkdir()
    db = folder / "study.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="w", storage=url, direction="maximize")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), url, "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    src = dd.StudySource("w", url, folder)
    seen: list[int] = []
    try:
        deadline = time.time() + 120  # read for as long as the writer writes (its start-up may be slow)
        while proc.poll() is None and time.time() < deadline:
            seen.append(len(dd.load_study(src).trials))
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    n_written, worst = out.split()
    assert seen == sorted(seen) and seen[-1] > seen[0]  # it grew while we read, never went back
    assert len(dd.load_study(src).trials) == int(n_written)
    assert float(worst) < 5.0  # no write waited for the busy timeout


def test_journal_storage_url_is_read_without_writing(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "j" / "study.journal"
    path.parent.mkdir()
    study = optuna.create_study(
        study_name="jour", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    )
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    before = _snapshot(path.parent)
    found = dd.discover(tmp_path / "studies", [f"journal:{path}"])
    assert [(s.name, s.folder) for s in found.sources] == [("jour", tmp_path / "studies" / "jour")]
    data = dd.load_study(found.sources[0])
    assert data.counts()["COMPLETE"] == 3 and data.best() is not None
    assert dd.change_token(found.sources[0]) == dd.files_token([path])
    assert _snapshot(path.parent) == before


def test_unreadable_databases_give_one_line_reasons(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    (studies / "garbage").mkdir(parents=True)
    (studies / "garbage" / "study.db").write_bytes(b"this is not sqlite at all" * 10)
    (studies / "empty").mkdir()
    (studies / "empty" / "study.db").write_bytes(b"")
    (studies / "_zoo" / "x").mkdir(parents=True)
    (studies / "_zoo" / "x" / "study.db").write_bytes(b"")
    found = dd.discover(
        studies, ["sqlite:////nonexistent/dir/study.db", "postgresql://bob:secret@127.0.0.1:1/db"]
    )
    assert [s.name for s in found.sources] == ["empty", "garbage"]  # _zoo skipped
    with pytest.raises(StudyError, match=r"garbage/study.db: not an SQLite database"):
        dd.load_study(found.sources[1])
    with pytest.raises(StudyError, match=r"empty/study.db: not an Optuna study database"):
        dd.load_study(found.sources[0])
    messages = [p.message for p in found.problems]
    assert len(messages) == 2
    assert "/nonexistent/dir/study.db: no such study database" in messages[0]
    assert "secret" not in messages[1] and "bob:***@127.0.0.1" in messages[1]
    assert all("\n" not in m for m in messages)


def test_missing_study_name_lists_what_the_database_holds(fake_studies: Path) -> None:
    src = _source(fake_studies, "fake")
    with pytest.raises(StudyError, match=r"no study named 'other'; it holds fake"):
        dd.load_study(dd.StudySource("other", src.url, src.folder))


def test_multi_seed_run_folders_show_the_first_seed(tmp_path: Path) -> None:
    src = dd.StudySource("s", "sqlite:///x", tmp_path)
    run = tmp_path / "trials" / "k"
    for seed, ap in (("seed1", 0.2), ("seed0", 0.1)):
        (run / seed).mkdir(parents=True)
        (run / seed / "history.jsonl").write_text(json.dumps({"iteration": 4, "ap": ap}) + "\n")
    (run / "trial.log").write_text("started\n")
    loaded = dd.load_trial_run(src, "trials/k")
    assert [h["ap"] for h in loaded.history] == [0.1] and loaded.log_tail == "started\n"
    assert loaded.run_dir == run and dd.load_trial_run(src, "").run_dir is None


def test_stage_metrics_by_hand() -> None:
    history = [
        {"iteration": 2, "ap": 0.10, "ap50": 0.2},
        {"iteration": 4, "ap": 0.30, "ap50": 0.5},
        {"iteration": 6, "ap": 0.25, "ap50": 0.45},
        {"iteration": 8, "ap": 0.40, "ap50": 0.6},
    ]
    stages = pd.DataFrame(
        {
            "number": [0, 0],
            "position": [1, 2],
            "teacher": ["a", "b"],
            "start": [0, 4],
            "end": [4, 8],
            "iterations": [4, 4],
        }
    )
    m = dd.stage_metrics(history, stages)
    assert list(m["evals"]) == [2, 2]
    assert list(m["ap_end"]) == [0.30, 0.40]
    assert list(m["best_ap"]) == [0.30, 0.40]
    assert math.isnan(m["gain"][0]) and m["gain"][1] == pytest.approx(0.10)
    assert list(m["iterations"]) == ["0–4", "4–8"]


def test_recipe_stages_of_the_full_run(real_studies: Path, tmp_path: Path) -> None:
    full = dd.load_full_run(_source(real_studies, "tiny"))
    assert full is not None and full.state == "done" and full.student_exists
    recipe = yaml.safe_load((real_studies / "tiny" / "full" / "recipe.yaml").read_text())
    its = [s["iterations"] for s in recipe["stages"]]
    assert full.boundaries == [0, *np.cumsum(its).tolist()] and full.boundaries[-1] == 8
    assert len(full.stage_names) == len(its)
    odd = tmp_path / "r.yaml"
    odd.write_text("stages:\n- {teachers: [{name: big}], iterations: 5}\n- {teachers: [], iterations: 3}\n")
    assert dd.recipe_stages(odd) == ([0, 5, 8], ["big", "student"])
    odd.write_text("stages: [{iterations: x}]")
    assert dd.recipe_stages(odd) == ([], [])


def test_read_jsonl_skips_a_half_written_line(tmp_path: Path) -> None:
    p = tmp_path / "history.jsonl"
    p.write_text('{"iteration": 1, "ap": 0.1}\n\n{"iteration": 2, "ap": 0.2}\n{"iteration": 3, "a')
    assert [r["iteration"] for r in dd.read_jsonl(p)] == [1, 2]
    assert dd.read_jsonl(tmp_path / "missing.jsonl") == []
    log = tmp_path / "trial.log"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    tail = dd.tail_text(log, 100)
    assert tail is not None and tail.startswith("…\n") and tail.rstrip().endswith("line 9999")


def test_importances_need_two_finished_trials(fake_studies: Path) -> None:
    data = dd.load_study(_source(fake_studies, "fake"))
    imp = dd.param_importances(data)
    assert imp.values and sum(imp.values.values()) == pytest.approx(1.0)
    assert set(imp.values) <= set(data.param_info) and imp.n_trials == len(data.complete())
    dists = {
        "x": optuna.distributions.FloatDistribution(0, 1),
        "noise": optuna.distributions.FloatDistribution(0, 1),
        "fixed": optuna.distributions.CategoricalDistribution([False]),
    }
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(40):
        x, noise = float(rng.random()), float(rng.random())
        params = {"x": x, "noise": noise, "fixed": False}
        trials.append(optuna.create_trial(value=x, params=params, distributions=dists))
    many = dd.build_study_data(data.source, "maximize", {}, trials)
    res = dd.param_importances(many)
    assert set(res.values) == {"x", "noise"}  # a parameter with one choice cannot matter
    assert res.values["x"] > res.values["noise"]  # AP = x
    res = dd.param_importances(dd.build_study_data(data.source, "maximize", {}, trials[:1]))
    assert not res.values and "needs at least 2 finished trials (the study has 1)" in res.message


def test_study_state_words() -> None:
    src = dd.StudySource("s", "sqlite:///x.db", Path("x"))
    fd = optuna.distributions.FloatDistribution(0, 1)
    done = optuna.create_trial(value=0.3, params={"x": 0.1}, distributions={"x": fd})
    running = optuna.create_trial(state=TrialState.RUNNING, params={"x": 0.2}, distributions={"x": fd})
    assert dd.study_state(dd.build_study_data(src, "maximize", {}, []), None) == "empty"
    assert (
        dd.study_state(dd.build_study_data(src, "maximize", {"target_trials": 5}, [done, running]), None)
        == "searching"
    )
    assert (
        dd.study_state(dd.build_study_data(src, "maximize", {"target_trials": 5}, [done]), None) == "stopped"
    )
    assert (
        dd.study_state(dd.build_study_data(src, "maximize", {"target_trials": 1}, [done]), None) == "searched"
    )
    full = dd.FullRun(Path("f"), {"state": "failed"}, [], None, False, [])
    assert dd.study_state(dd.build_study_data(src, "maximize", {}, [done]), full) == "full run failed"


# -- charts ---------------------------------------------------------------------------------------


def test_charts_on_a_generated_study(fake_studies: Path) -> None:
    data = dd.load_study(_source(fake_studies, "fake"))
    colors = ch.teacher_colors(data.teacher_names)
    assert list(colors)[:3] == ["small", "medium", "pvt"]
    done = data.complete()

    hist = ch.optimization_history(data.trials, data.baselines(), data.teacher_info)
    best_line = next(t for t in hist.data if t.name == "best so far")
    order = done.sort_values("number")
    assert list(best_line.y) == pytest.approx(list(order["value"].cummax()))
    assert {t.name for t in hist.data} >= {"searched", "student only (no KD)", "weak → strong"}

    curves = ch.intermediate_curves(data.curves, data.trials, data.stages, colors, top_k=5, sample=20)
    grey = next(t for t in curves.data if str(t.name).startswith("other trials"))
    assert sum(1 for x in grey.x if x is None) == 20  # one break per sampled trial
    assert next(
        t.name for t in curves.data if str(t.name).startswith("#") and "stage" not in str(t.name)
    ).endswith("(best)")
    assert len(curves.layout.shapes) == len(data.stages[data.stages["number"] == int(done.iloc[0]["number"])])

    tl = ch.curriculum_timeline(data.trials, data.stages, colors, top_k=6)
    ys = {y for t in tl.data for y in t.y}
    assert len(ys) == 6
    for n in done["number"].head(6):
        # the stage bars of a trial cover exactly its budget
        bars = [
            (b, x)
            for t in tl.data
            for y, b, x in zip(t.y, t.base if t.base is not None else [0] * len(t.y), t.x)
            if y.startswith(f"#{n} ")
        ]
        assert sum(x for _, x in bars) == data.trials.set_index("number").at[n, "total_iterations"]

    pareto = ch.cost_scatter(data.trials, data.baselines(), data.cost_cap)
    infeasible = next(t for t in pareto.data if str(t.name).startswith("infeasible"))
    assert len(infeasible.x) == int((done["feasible"] == False).sum())  # noqa: E712
    front = next(t for t in pareto.data if str(t.name).startswith("Pareto"))
    assert all(c <= data.cost_cap for c in front.x)  # the front only holds feasible trials

    pc = ch.parallel_coordinates(data.trials, data.param_info, importances={"lr": 1.0, "decay": 0.5})
    labels = [d.label for d in pc.data[0].dimensions]
    assert (
        labels[-1] == "AP" and "lr (log)" in labels and not any(lbl.startswith("order_key") for lbl in labels)
    )
    assert labels.index("lr (log)") < labels.index("decay")

    for fig in (
        ch.teacher_position_heatmap(data.trials, data.stages, data.teacher_names),
        ch.chain_box(data.trials),
        ch.param_importance_bar({"a": 0.7, "b": 0.3}),
    ):
        assert len(fig.data) >= 1


def test_teacher_position_heatmap_by_hand() -> None:
    trials = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE"] * 3, "value": [0.2, 0.4, 0.9]})
    stages = pd.DataFrame(
        {
            "number": [0, 0, 1, 2],
            "position": [1, 2, 1, 1],
            "teacher": ["a", "b", "a", "b"],
            "start": [0, 5, 0, 0],
            "end": [5, 10, 10, 10],
            "iterations": [5, 5, 10, 10],
        }
    )
    fig = ch.teacher_position_heatmap(trials, stages, ["a", "b"])
    z = np.asarray(fig.data[0].z, dtype=float)
    assert list(fig.data[0].x) == ["stage 1", "stage 2", "unused"]
    assert z[0, 0] == pytest.approx(0.3) and math.isnan(z[0, 1]) and z[0, 2] == pytest.approx(0.9)
    assert z[1, 0] == pytest.approx(0.9) and z[1, 1] == pytest.approx(0.2) and z[1, 2] == pytest.approx(0.4)


def test_pareto_front_by_hand() -> None:
    cost = np.array([1.0, 2.0, 3.0, 2.5, np.nan, 0.5])
    value = np.array([0.3, 0.5, 0.6, 0.4, 0.9, 0.1])
    assert list(ch.pareto_front(cost, value)) == [5, 0, 1, 2]
    assert list(ch.pareto_front(cost, value, maximize=False)) == [5]


def test_empty_inputs_give_explanatory_figures() -> None:
    data = dd.build_study_data(dd.StudySource("s", "sqlite:///x", Path("x")), "maximize", {}, [])
    figs = [
        ch.optimization_history(data.trials),
        ch.intermediate_curves(data.curves, data.trials, data.stages, {}),
        ch.curriculum_timeline(data.trials, data.stages, {}),
        ch.cost_scatter(data.trials),
        ch.run_progress([]),
    ]
    for fig in figs:
        assert not fig.data and fig.layout.annotations[0].text


# -- command line ---------------------------------------------------------------------------------


def test_dashboard_command_binds_localhost_and_forwards_args(tmp_path: Path) -> None:
    cmd = dashboard_command(port=8600, storage="postgresql://u@h/db", studies_dir=tmp_path)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4].endswith("app.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    app_args = cmd[cmd.index("--") + 1 :]
    assert parse_app_args(app_args).storages == ("postgresql://u@h/db",)
    assert parse_app_args(app_args).studies_dir == tmp_path


def test_app_args_default_to_the_env_var_and_ignore_foreign_args(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(STUDIES_ENV, str(tmp_path))
    args = parse_app_args(["-q", "tests/x.py", "--storage", "journal:/j.log", "--storage", "sqlite:///a.db"])
    assert args.studies_dir == tmp_path and args.storages == ("journal:/j.log", "sqlite:///a.db")
    monkeypatch.delenv(STUDIES_ENV)
    assert parse_app_args([]).studies_dir == Path("studies")


def test_recipe_download_is_the_export_command_text(
    real_studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curriculum_search.search import service

    src = _source(real_studies, "tiny")
    best = dd.load_study(src).best()
    assert best is not None
    text = dd.recipe_yaml(src, real_studies, None)
    assert text.exact and text.file_name == "tiny-best.yaml"

    def strip(t: str) -> dict:
        d = yaml.safe_load(t)
        d["provenance"].pop("exported", None)
        return d

    assert strip(text.text) == strip(service.export_recipe("tiny", None, real_studies, None))
    # once the race has decided, "the best recipe" is the shipped curriculum, not the best proxy value
    from curriculum_search.search.selection import load_decision
    from curriculum_search.search.storage import storage_spec

    decision = load_decision(storage_spec(real_studies, "tiny", None), "tiny")
    assert decision is not None
    prov = yaml.safe_load(text.text)["provenance"]
    assert prov["trial"] == decision["selection"]["winner_trial"]
    assert prov["selection"]["winner"] == decision["selection"]["winner"]
    trial = dd.recipe_yaml(src, real_studies, 2)
    assert yaml.safe_load(trial.text)["provenance"]["trial"] == 2

    def broken(*a: object, **k: object) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "export_recipe", broken)
    fallback = dd.recipe_yaml(src, real_studies, 2)
    assert not fallback.exact and "boom" in fallback.note
    assert yaml.safe_load(fallback.text)["curriculum"]["stages"][0]["teacher"] in ("a", "b")


# -- pages (AppTest) ------------------------------------------------------------------------------


def _app(studies: Path, monkeypatch: pytest.MonkeyPatch, page: str | None = None):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(STUDIES_ENV, str(studies))
    at = AppTest.from_file(APP, default_timeout=120)
    if page is not None:
        at.session_state["view"] = page
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> str:  # type: ignore[no-untyped-def]
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(m.label) + " " + str(m.value) for m in at.metric]
    return "\n".join(parts)


def _plot_count(at) -> int:  # type: ignore[no-untyped-def]
    return len(at.get("plotly_chart"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_the_real_study(
    real_studies: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    at = _app(real_studies, monkeypatch, page)
    table = at.dataframe[0].value
    assert list(table["study"]) == ["tiny"] and table["state"][0] == "done"
    assert int(table["finished"][0]) == 7 and not at.error
    text = _texts(at)
    expected_plots = {"Overview": 2, "Curricula": 3, "Parameters": 3, "Trials": 1, "Baselines & full run": 3}[
        page
    ]
    assert _plot_count(at) == expected_plots
    if page == "Overview":
        assert "Best proxy AP" in text and "Best curriculum" in text
        assert [b.label for b in at.get("download_button")] == ["Download the best recipe (YAML)"]
    if page == "Trials":
        assert "Loss weights & settings" in text and "Trial #" in text
    if page == "Baselines & full run":
        runs = list(at.dataframe[1].value["label"])
        assert runs[:4] == list(dd.BASELINE_LABELS.values()) and any(
            r.startswith("best search") for r in runs
        )
        assert "**done**" in text and "Student weights" in text
        data = dd.load_study(_source(real_studies, "tiny"))
        best_base = max(float(r["value"]) for r in data.baselines().values())
        best_search = data.best_search()
        assert best_search is not None and best_base >= 0
        # a proxy difference is never called a win (issue: selection you can trust)
        assert "A proxy difference is no evidence" in text and "✅ The best searched" not in text
        # the race decides, in plain words, with its interval; its runs are listed
        from curriculum_search.search.selection import decision_lines, load_decision
        from curriculum_search.search.storage import storage_spec

        decision = load_decision(storage_spec(real_studies, "tiny", None), "tiny")
        assert decision is not None
        assert decision_lines(decision)[0] in text
        race = at.dataframe[2].value
        assert (
            set(race["arm"]) >= {decision["selection"]["best_baseline"]}
            and (race["state"] == "complete").all()
        )


def test_trial_detail_of_a_pruned_real_trial(real_studies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(real_studies, "tiny")
    data = dd.load_study(src)
    pruned = data.trials[data.trials["state"] == "PRUNED"]
    n = int(pruned["number"].iloc[0]) if len(pruned) else int(data.trials["number"].iloc[-1])
    run_dir = dd.trial_run_dir(src, str(data.trials.set_index("number").at[n, "run_dir"]))
    assert run_dir is not None and (run_dir / "history.jsonl").is_file()
    with open(run_dir / "trial.log", "a") as fh:  # as a trial writing its log would
        fh.write("iteration 4: a line the dashboard must show\n")
    at = _app(real_studies, monkeypatch, "Trials")
    at.selectbox(key="trial").set_value(n).run()
    assert not at.exception
    text = _texts(at)
    assert f"Trial #{n}" in text
    if len(pruned):
        assert "Pruned at iteration" in text
    settings = next(df.value for df in at.dataframe if list(df.value.columns) == ["setting", "value"])
    assert "feature KD" in list(settings["setting"])
    assert any(e.label.startswith("Log") for e in at.expander)
    log = "\n".join(str(c.value) for c in at.code)
    assert log.rstrip().endswith("iteration 4: a line the dashboard must show")
    assert f"Download trial #{n}'s recipe (YAML)" in [b.label for b in at.get("download_button")]


def test_failed_and_running_trials_explain_themselves(
    fake_studies: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = dd.load_study(_source(fake_studies, "fake"))
    failed = data.trials[data.trials["state"] == "FAIL"].iloc[0]
    at = _app(fake_studies, monkeypatch, "Trials")
    at.selectbox(key="trial").set_value(int(failed["number"])).run()
    assert failed["failure_reason"] and any(failed["failure_reason"] in str(e.value) for e in at.error)
    running = int(data.trials[data.trials["state"] == "RUNNING"]["number"].iloc[0])
    at.selectbox(key="trial").set_value(running).run()
    assert any("Running: last AP" in str(e.value) for e in at.info)


def test_constrained_study_parameters_page(fake_studies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(fake_studies, monkeypatch, "Parameters")
    assert _plot_count(at) == 3
    assert "Constraints: proxy_cost (feasible when ≤ 0)." in _texts(at)


def test_no_study_yet_says_how_to_start_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(tmp_path / "nothing", monkeypatch)
    text = _texts(at)
    assert "does not exist yet" in text
    assert "No study yet" in text and "python -m curriculum_search run" in text
    assert not at.dataframe and _plot_count(at) == 0


def test_unreadable_study_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "study.db").write_bytes(b"\x00garbage" * 100)
    at = _app(tmp_path, monkeypatch)
    assert at.dataframe[0].value["state"][0] == "unreadable"
    errors = [str(e.value) for e in at.error]
    assert any("broken" in e and "not an SQLite database" in e for e in errors)


def test_empty_study_waits_for_its_first_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "new").mkdir()
    optuna.create_study(study_name="new", storage=f"sqlite:///{tmp_path / 'new' / 'study.db'}")
    at = _app(tmp_path, monkeypatch)
    assert at.dataframe[0].value["state"][0] == "empty"
    assert any("has no trial yet" in str(e.value) for e in at.info)


def test_page_shows_new_trials_on_the_next_refresh(
    fake_studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = tmp_path / "studies"
    shutil.copytree(fake_studies / "fake", studies / "fake")
    at = _app(studies, monkeypatch)
    before = int(at.dataframe[0].value["finished"][0])
    study = optuna.load_study(study_name="fake", storage=f"sqlite:///{studies / 'fake' / 'study.db'}")
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"failure_reason": "late"}))
    del study
    at.run()  # what the live-refresh fragment does every few seconds
    assert int(at.dataframe[0].value["finished"][0]) == before + 1


def test_extra_storage_url_in_the_sidebar(
    fake_studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(tmp_path / "none", monkeypatch)
    at.text_input(key="extra_storage").input(f"sqlite:///{fake_studies / 'fake' / 'study.db'}").run()
    assert not at.exception
    assert list(at.dataframe[0].value["study"]) == ["fake"]
    assert _plot_count(at) == 2


def test_json_status_of_a_failed_full_run(
    fake_studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = tmp_path / "studies"
    shutil.copytree(fake_studies / "fake", studies / "fake")
    status = {
        "state": "failed",
        "trial": 3,
        "updated": "2024-01-01T00:00:00+00:00",
        "error": "CUDA out of memory",
    }
    (studies / "fake" / "full" / "status.json").write_text(json.dumps(status))
    at = _app(studies, monkeypatch, "Baselines & full run")
    assert at.dataframe[0].value["state"][0] == "full run failed"
    assert any("CUDA out of memory" in str(e.value) for e in at.error)
