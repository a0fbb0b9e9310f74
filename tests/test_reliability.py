"""Reliability, second wave (issue 15): secrets, the dashboard's address, small file-level
guarantees; see also ``test_bad_input.py`` (second bad-input list) and ``test_soak.py``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from curriculum_search.dashboard.data import redact_url as dashboard_redact
from curriculum_search.errors import StudyError
from curriculum_search.search.protocol import StorageRef, TrialJob
from curriculum_search.search.storage import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    redact_url,
    secret_env,
    storage_spec,
    study_lock,
)
from curriculum_search.utils.io import atomic_write_text, dump_yaml
from tests.helpers import (
    checkpoint_teacher_study,
    free_port,
    one_line_error,
    opts,
    postgres_server,
    recipe_dict,
    run_options,
    write_space,
    write_yaml,
)


# -- 10. small ones -------------------------------------------------------------------------------
def test_atomic_writes_keep_the_usual_file_mode(tmp_path: Path) -> None:
    """``mkstemp`` creates 0600 files: results written atomically (metrics, recipes, status) were
    unreadable to the group / other users sharing a studies folder; they get the umask mode."""
    old = os.umask(0o022)
    try:
        for path in (atomic_write_text(tmp_path / "a.json", "{}"), tmp_path / "b.yaml"):
            if path.name == "b.yaml":
                dump_yaml({"a": 1}, path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, oct(path.stat().st_mode)
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "c.json", "{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)


# -- 7. secrets ----------------------------------------------------------------------------------------
SECRET = "s3cret-Pw_81"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://user:{SECRET}@db.example/studies",
        f"postgresql+psycopg://user@db.example:5432/studies?sslmode=require&password={SECRET}",
        f"postgresql://user@db.example/studies?PASSWORD={SECRET}&x=1",
    ],
)
def test_passwords_are_redacted_everywhere_a_url_is_shown(url: str) -> None:
    spec = storage_spec(Path("studies"), "tiny", url)
    shown = [spec.display, spec.url, repr(spec), redact_url(url), dashboard_redact(url)]
    assert all(SECRET not in s for s in shown), shown
    assert all("db.example" in s for s in shown)
    assert spec.password == SECRET and SECRET in spec.connect_url  # only for the driver


def test_job_files_carry_no_password_it_goes_by_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)
    spec = storage_spec(tmp_path, "tiny", f"postgresql://user:{SECRET}@h/db")
    ref = StorageRef.of(spec)
    assert SECRET not in repr(ref)
    job = TrialJob("tiny", ref, 1, 0, {}, {}, 1, str(tmp_path), [0], True, {}, "", "")
    job.write(tmp_path / "job.json")
    assert SECRET not in (tmp_path / "job.json").read_text()
    assert secret_env(ref.spec()) == {PASSWORD_ENV: SECRET}  # what spawn() gives the trial process
    back = TrialJob.read(tmp_path / "job.json").storage
    assert back.spec().connect_url == spec.url  # without its environment: no password
    monkeypatch.setenv(PASSWORD_ENV, SECRET)  # what the trial process sees
    assert back.spec().connect_url == spec.connect_url


def test_password_file_must_be_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")
    pw.chmod(0o644)
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(pw))
    with pytest.raises(StudyError, match=r"pw: the database password file is readable by other users"):
        storage_spec(tmp_path, "tiny", "postgresql://user@h/db")
    pw.chmod(0o600)
    assert (
        storage_spec(tmp_path, "tiny", "postgresql://user@h/db").connect_url
        == f"postgresql://user:{SECRET}@h/db"
    )


@pytest.fixture(scope="module")
def postgres_with_password() -> Iterator[str]:
    """A loopback PostgreSQL server that REQUIRES a password (scram), so a trial process that does
    not get it from its coordinator cannot report: the URL returned has no password."""
    with postgres_server(
        "cs-pgpw-", "--auth=scram-sha-256", "--pwfile={root}/pwfile", files={"pwfile": SECRET + "\n"}
    ) as url:
        yield url


@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_database_password_never_reaches_a_file_a_log_or_a_process_argument(
    tmp_path: Path, postgres_with_password: str
) -> None:
    """A search on a password-protected server, password given once in the URL (the command
    warns) and once by environment: the trials report (so the password reached them), and no
    job file, log, recipe, status output or trial process argument holds it."""
    space = write_space(tmp_path, trials=2, name="pw")
    studies = tmp_path / "studies"
    base = [sys.executable, "-m", "curriculum_search"]
    common = ["--studies-dir", str(studies), "--threads", "1", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in (PASSWORD_ENV, PASSWORD_FILE_ENV)}
    with_pw = postgres_with_password.replace("postgres@", f"postgres:{SECRET}@")
    first = subprocess.run(
        [*base, "search", "--space", str(space), "--storage", with_pw, *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=800,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "warning: the --storage URL holds a password" in first.stderr
    second = subprocess.run(
        [
            *base,
            "search",
            "--space",
            str(space),
            "--storage",
            postgres_with_password,
            "--trials",
            "3",
            *common,
        ],
        capture_output=True,
        text=True,
        env={**env, PASSWORD_ENV: SECRET},
        timeout=800,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "warning" not in second.stderr
    status = subprocess.run(
        [*base, "status", "pw", "--storage", postgres_with_password, *common[:2]],
        capture_output=True,
        text=True,
        env={**env, PASSWORD_ENV: SECRET},
        timeout=300,
    )
    assert status.returncode == 0 and "***" not in status.stdout and "postgres@127.0.0.1" in status.stdout
    study = optuna.load_study(study_name="pw", storage=with_pw)
    reported = [t for t in study.get_trials() if t.intermediate_values]
    assert len(reported) >= 2, "trial processes could not reach the database"
    jobs = sorted(studies.rglob("job-*.json"))
    assert jobs and all(json.loads(j.read_text())["storage"]["url"] == postgres_with_password for j in jobs)
    for path in studies.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, status.stdout):
        assert SECRET not in text


# -- 8. the dashboard stays on this machine ---------------------------------------------------------------
def _listening(port: int) -> list[str]:
    """Local addresses of the sockets in LISTEN state on ``port`` (read from /proc/net)."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port and len(addr) == width:
                found.append(_decode_addr(addr))
    return found


def _decode_addr(addr: str) -> str:
    import ipaddress

    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", ["app.py", "curriculum_search/dashboard/streamlit_app.py"])
def test_streamlit_run_from_another_folder_listens_on_loopback_only(tmp_path: Path, script: str) -> None:
    """``streamlit run /abs/path/app.py`` started from an unrelated folder (no ``.streamlit``
    there, none in ``$HOME``): the installed copy listened on every interface."""
    import time

    from curriculum_search.dashboard import is_loopback

    path = Path(__file__).resolve().parent.parent / script
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(path),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        addresses: list[str] = []
        for _ in range(1200):  # until the server listens (or exits)
            addresses = _listening(port)
            if addresses or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert addresses, "the server never listened"
        assert all(is_loopback(a) for a in addresses), addresses
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_server_listening_beyond_loopback_shows_nothing_to_other_machines() -> None:
    from curriculum_search.dashboard import exposure_refusal

    for address in ("", "0.0.0.0", "::", "192.168.1.5"):
        assert exposure_refusal(address, "192.168.1.77", expose=False) is not None
        assert exposure_refusal(address, None, expose=False) is None  # a browser on this machine
        assert exposure_refusal(address, "127.0.0.1", expose=False) is None
        assert exposure_refusal(address, "192.168.1.77", expose=True) is None  # said explicitly
    for address in ("127.0.0.1", "localhost", "::1", "127.0.1.1"):
        assert exposure_refusal(address, "192.168.1.77", expose=False) is None  # cannot happen


def test_dashboard_command_needs_expose_for_a_reachable_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from curriculum_search import cli as cli_module
    from curriculum_search.cli import main as cli
    from curriculum_search.dashboard import parse_app_args

    seen: list[list[str]] = []
    monkeypatch.setattr(cli_module.subprocess, "call", lambda cmd, *a, **k: seen.append(cmd) or 0)
    line = one_line_error(
        cli(["dashboard", "--host", "0.0.0.0", "--studies-dir", str(tmp_path)]), capsys.readouterr().err
    )
    assert "--host: 0.0.0.0 lets other machines read the studies; add --expose" in line and not seen
    assert cli(["dashboard", "--host", "0.0.0.0", "--expose", "--studies-dir", str(tmp_path)]) == 0
    (cmd,) = seen
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert parse_app_args(cmd[cmd.index("--") + 1 :]).expose
    assert not parse_app_args([]).expose


def test_sidebar_says_where_the_dashboard_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from curriculum_search.dashboard import STUDIES_ENV

    monkeypatch.setenv(STUDIES_ENV, str(tmp_path))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.run()
    texts = " ".join(str(e.value) for e in [*at.sidebar.caption, *at.sidebar.warning])
    assert re.search(
        r"Serving on \S+: this machine only\.|without `--expose`: only browsers on this machine", texts
    )


# -- 3. one lock per study, belonging to the database ------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from curriculum_search.search.storage import storage_spec, study_lock
spec = storage_spec(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
with study_lock(spec, sys.argv[2]):
    print("held", flush=True)
    while Path(sys.argv[1], "hold").exists():
        time.sleep(0.05)
"""


@contextlib.contextmanager
def _holder(studies: Path, name: str, storage: str | None = None) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the study's lock until the block ends."""
    studies.mkdir(parents=True, exist_ok=True)
    (studies / "hold").touch()
    repo = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(studies), name, *([storage] if storage else [])],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": repo},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        (studies / "hold").unlink(missing_ok=True)
        proc.wait(timeout=60)


@pytest.mark.parametrize("command", ["search", "run", "select"])
def test_a_second_run_of_a_study_refuses_at_once_naming_the_holder(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same database through another studies folder: still one study, one lock (before: the lock
    lived in the studies folder, so `--storage sqlite:///X` from two folders gave two coordinators).
    The refusal comes before any work (no zoo teacher trained)."""
    from curriculum_search.cli import main as cli

    space = write_space(tmp_path)
    db = tmp_path / "shared" / "tiny.db"
    url = f"sqlite:///{db}"
    with _holder(tmp_path / "studies-a", "tiny", url) as holder:
        code = cli(
            [
                command,
                "--space",
                str(space),
                "--studies-dir",
                str(tmp_path / "studies-b"),
                "--storage",
                url,
                "-q",
            ]
        )
        line = one_line_error(code, capsys.readouterr().err)
    assert f"study 'tiny' ({db}) is in use by pid {holder.pid} on host {socket.gethostname()}" in line, line
    assert "--wait" in line
    assert not (tmp_path / "studies-b" / "_zoo").exists()


def test_wait_queues_behind_the_holder(tmp_path: Path) -> None:
    import threading

    spec = storage_spec(tmp_path / "studies", "tiny", None)
    got = threading.Event()

    def second() -> None:
        with study_lock(spec, "tiny", wait=True):
            got.set()

    with _holder(tmp_path / "studies", "tiny") as holder:
        th = threading.Thread(target=second, daemon=True)
        th.start()
        th.join(timeout=1.0)
        assert not got.is_set() and holder.poll() is None  # still held: the second one waits
    th.join(timeout=60)
    assert got.is_set()


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path: Path) -> None:
    """`run` holds the lock for search, selection and full run; the steps re-enter it."""
    spec = storage_spec(tmp_path, "tiny", None)
    with study_lock(spec, "tiny"), study_lock(spec, "tiny"):
        pass
    with study_lock(spec, "tiny"):  # released: taken again
        pass


def test_zoo_builds_lock_each_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two studies that need one zoo teacher: the second waits for the first's training instead
    of writing the same checkpoint folder at the same time (seen: "corrupt checkpoint")."""
    from curriculum_search.search import zoo
    from curriculum_search.search.space import load_space

    space = load_space(write_space(tmp_path))
    studies = tmp_path / "studies"
    seen: list[tuple[str, bool]] = []

    def fake_run_recipe(recipe: Any, options: Any) -> Any:
        lock = Path(options.out_dir) / ".train.lock"
        held = lock.is_file()
        probe = open(lock, "a+")  # noqa: SIM115
        try:
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        finally:
            probe.close()
        seen.append((recipe.name, held and not free))
        raise RuntimeError("stop here")

    monkeypatch.setattr(zoo, "run_recipe", fake_run_recipe)
    with pytest.raises(RuntimeError, match="stop here"):
        zoo.build_zoo(space, studies, progress=False, processes=1)
    assert seen and seen[0][1], seen  # the teacher's lock was held while it trained


# -- 4 (and issue 12 point 9). the study keeps what decides its results ---------------------------------
def _study(tmp_path: Path, teacher_ckpt: Path) -> tuple[Path, Path]:
    _, space, studies, _ = checkpoint_teacher_study(tmp_path, teacher_ckpt)
    return space, studies


def _edit(space: Path, **changes: Any) -> None:
    import yaml

    data = yaml.safe_load(space.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for k in parents:
            node = node[k]
        node[last] = value
    space.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"proxy__iterations": 12}, "proxy"),
        ({"data__synthetic__num_train": 30}, "data"),
        ({"student__fpn_channels": 32}, "student"),
        ({"train__batch_size": 2}, "train"),
        ({"full__iterations": 16}, "full"),
        ({"seed": 7}, "seed"),
        ({"proxy__iterations": 12, "seed": 3}, "proxy, seed"),
    ],
)
def test_a_changed_space_is_refused_naming_the_changed_keys(
    tmp_path: Path, teacher_ckpt: Path, changes: dict[str, Any], named: str
) -> None:
    from curriculum_search.search.options import SearchOptions
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import open_study

    space, studies = _study(tmp_path, teacher_ckpt)
    db = studies / "tiny" / "study.db"
    before = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").user_attrs
    _edit(space, **changes)
    spec = storage_spec(studies, "tiny", None)
    with pytest.raises(StudyError) as err:
        open_study(load_space(space), SearchOptions(studies_root=studies, space_file=space), spec)
    msg = str(err.value)
    assert f"study 'tiny' was run with another {named} (" in msg and "--name NEW" in msg, msg
    assert "\n" not in msg
    assert optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}").user_attrs == before


def test_a_resumed_search_does_not_redraw_the_first_sessions_proposals(
    tmp_path: Path, teacher_ckpt: Path
) -> None:
    """A seeded sampler restarts from its seed in every process: without a reseed on resume, the
    second session proposed exactly what the first had (seen in a killed and resumed benchmark:
    trials #12-#14 repeated #4-#6)."""
    from curriculum_search.search.options import SearchOptions
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import open_study

    _, space, studies, _ = checkpoint_teacher_study(tmp_path, teacher_ckpt)
    spec = storage_spec(studies, "tiny", None)

    def session() -> list[float]:
        study = open_study(load_space(space), SearchOptions(studies_root=studies, space_file=space), spec)
        out = []
        for _ in range(3):
            trial = study.ask()
            out.append(trial.suggest_float("x", 0.0, 1.0))
            study.tell(trial, 0.5)
        return out

    first, second = session(), session()
    assert len(set(first) | set(second)) == 6, (first, second)


def test_trials_timeout_and_workers_may_change(tmp_path: Path, teacher_ckpt: Path) -> None:
    from curriculum_search.search.options import SearchOptions
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import open_study

    space, studies = _study(tmp_path, teacher_ckpt)
    _edit(space, trials=40, timeout_s=3600)
    spec = storage_spec(studies, "tiny", None)
    open_study(load_space(space), SearchOptions(studies_root=studies, space_file=space, workers=3), spec)
    with pytest.raises(StudyError, match="another seed"):  # --seed is the seed too
        open_study(load_space(space), SearchOptions(studies_root=studies, space_file=space, seed=9), spec)


def test_a_changed_space_is_one_line_for_search_and_select(
    tmp_path: Path, teacher_ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`select` trains what the search scored: it refuses a changed space file too."""
    from curriculum_search.cli import main as cli

    space, studies = _study(tmp_path, teacher_ckpt)
    _edit(space, proxy__iterations=12)
    for command in ("search", "select"):
        code = cli([command, "--space", str(space), "--studies-dir", str(studies), "--threads", "1", "-q"])
        line = one_line_error(code, capsys.readouterr().err)
        assert re.search(r"study\.db: study 'tiny' was run with another proxy \(.*--name NEW", line), line


def test_the_fingerprint_is_stored_and_names_the_trial_run_folders(
    tmp_path: Path, teacher_ckpt: Path
) -> None:
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import (
        FINGERPRINT_KEYS,
        fingerprint_id,
        run_folder_id,
        space_fingerprint,
    )

    space, studies = _study(tmp_path, teacher_ckpt)
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{studies / 'tiny' / 'study.db'}")
    fp = study.user_attrs["fingerprint"]
    assert tuple(fp) == FINGERPRINT_KEYS and fp == space_fingerprint(load_space(space))
    assert run_folder_id(study) == fingerprint_id(fp) == study.user_attrs["fingerprint_id"]
    assert study.user_attrs["initialised"] is True
    other = space_fingerprint(load_space(space), seed=1)
    assert fingerprint_id(other) != fingerprint_id(fp)  # another seed: another run folder


# -- 5 / 9. the "initialised" marker; a foreign study of the same name ------------------------------------
def test_a_foreign_optuna_study_of_the_same_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from curriculum_search.cli import main as cli

    db = tmp_path / "studies" / "tiny" / "study.db"
    db.parent.mkdir(parents=True)
    foreign = optuna.create_study(study_name="tiny", storage=f"sqlite:///{db}", direction="maximize")
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    space = write_space(tmp_path)
    code = cli(["search", "--space", str(space), "--studies-dir", str(tmp_path / "studies"), "-q"])
    line = one_line_error(code, capsys.readouterr().err)
    assert "study.db: a study named 'tiny' already exists and was not created by curriculum_search" in line
    after = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert after.user_attrs == {} and len(after.trials) == 2  # left as it was


def test_a_study_interrupted_while_being_created_is_set_up_again(tmp_path: Path, teacher_ckpt: Path) -> None:
    """Killed after create_study and before its attributes: no marker, no trial -> set up again
    (before: a study with a pool hash and no space could be left behind)."""
    from curriculum_search.search.options import SearchOptions
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import open_study

    space, studies = _study(tmp_path, teacher_ckpt)
    db = studies / "tiny2" / "study.db"
    db.parent.mkdir(parents=True)
    half = optuna.create_study(study_name="tiny2", storage=f"sqlite:///{db}", direction="maximize")
    half.set_user_attr("pool_hash", "x")  # the first attribute written, then the kill
    spec = storage_spec(studies, "tiny2", None)
    study = open_study(
        load_space(space), SearchOptions(studies_root=studies, name="tiny2", space_file=space), spec
    )
    assert study.user_attrs["initialised"] is True and "space" in study.user_attrs
    assert study.user_attrs["pool_hash"] != "x"


# -- 1. a fault that hits every trial does not burn the study ---------------------------------------------
def _search_opts(studies: Path, space: Path, **kw: Any) -> Any:
    return opts(studies, space, **kw)


@pytest.mark.timeout(900)
def test_a_full_disk_stops_the_study_and_the_next_run_redoes_those_trials(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every trial fails at its first checkpoint (ENOSPC): after 3 in a row the study stops with
    one line naming the cause; none counted toward the target; once space is free, the same
    command runs them again (baselines keep their label) and reaches the target."""
    from curriculum_search.search.coordinator import run_search
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import finished_count
    from tests.faults import inject

    space, studies = _study(tmp_path, teacher_ckpt)
    _edit(space, trials=4)
    with monkeypatch.context() as m:
        inject(tmp_path / "inject", m, "disk_full")
        with pytest.raises(StudyError) as err:
            run_search(load_space(space), _search_opts(studies, space))
    msg = str(err.value)
    assert "study 'tiny' stopped: 3 trials in a row failed on the environment, last: disk full" in msg, msg
    assert "re-run the same command" in msg and "\n" not in msg
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{studies / 'tiny' / 'study.db'}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 3 and finished_count(study) == 0
    assert all(t.user_attrs["environment_failure"] == "disk full" for t in failed)
    assert all("No space left on device" in t.user_attrs["failure_reason"] for t in failed)
    summary = run_search(load_space(space), _search_opts(studies, space))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{studies / 'tiny' / 'study.db'}")
    assert summary.finished == 4 and finished_count(study) == 4
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    first = failed[0]
    retry = [t for t in done if t.user_attrs.get("retry_of") == first.number]
    assert retry and retry[0].user_attrs.get("baseline") == first.user_attrs.get("baseline") is not None


def test_environment_causes_are_told_from_curriculum_failures() -> None:
    import errno as errno_

    from curriculum_search.errors import CheckpointError, DataError, TrialFailure
    from curriculum_search.search.failures import environment_cause

    assert environment_cause(OSError(errno_.ENOSPC, "No space left", "x")) == "disk full"
    assert environment_cause(PermissionError(errno_.EACCES, "denied", "img.png")) == "permission denied"
    assert (
        environment_cause(CheckpointError("t.pt", "checkpoint not found"))
        == "missing or unreadable checkpoint"
    )
    assert environment_cause(DataError("val.json", None, "cannot read image")) == "unreadable data"
    assert (
        environment_cause(RuntimeError("CUDA error: an illegal memory access was encountered"))
        == "CUDA error"
    )
    wrapped = RuntimeError("stage failed")
    wrapped.__cause__ = OSError(errno_.EIO, "Input/output error")
    assert environment_cause(wrapped) == "I/O error"
    for own in (
        TrialFailure("non-finite loss at iteration 3"),
        TrialFailure("out of memory at iteration 1: CUDA out of memory"),
        ValueError("bad"),
    ):
        assert environment_cause(own) is None


# -- 2. a hung trial cannot block a study ------------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(900)
def test_a_hung_trial_is_killed_at_its_wall_clock_limit_and_the_study_goes_on(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curriculum_search.search.coordinator import run_search
    from curriculum_search.search.space import load_space
    from tests.faults import inject

    space, studies = _study(tmp_path, teacher_ckpt)
    _edit(space, trials=2, trial_timeout_s=90)
    marker = tmp_path / "hung.pid"
    with monkeypatch.context() as m:
        inject(tmp_path / "inject", m, "hang_once", CS_TEST_MARKER=str(marker))
        summary = run_search(load_space(space), _search_opts(studies, space))
    assert summary.finished == 2
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{studies / 'tiny' / 'study.db'}")
    states = {t.number: t.state for t in study.trials}
    hung = study.trials[0]
    assert hung.state == optuna.trial.TrialState.FAIL, states
    assert re.search(
        r"over the per-trial wall-clock limit of 90 s \(trial_timeout_s", hung.user_attrs["failure_reason"]
    )
    assert study.trials[1].state == optuna.trial.TrialState.COMPLETE, states
    assert not _alive(int(marker.read_text()))


@pytest.mark.timeout(600)
def test_timeout_is_honoured_while_a_trial_hangs(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-trial limit is long (default); ``--timeout`` still ends the run: the hung trial is
    stopped and re-queued (it resumes on the next run). Before, the coordinator waited forever."""
    from curriculum_search.search.coordinator import run_search
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import finished_count
    from tests.faults import inject

    space, studies = _study(tmp_path, teacher_ckpt)
    _edit(space, trials=3)
    marker = tmp_path / "hung.pid"
    with monkeypatch.context() as m:
        inject(tmp_path / "inject", m, "hang_once", CS_TEST_MARKER=str(marker))
        run_search(load_space(space), _search_opts(studies, space, timeout_s=40))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{studies / 'tiny' / 'study.db'}")
    first = study.trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["requeued"] is True
    assert "--timeout reached" in first.user_attrs["failure_reason"]
    assert finished_count(study) == 0
    waiting = [t for t in study.trials if t.state == optuna.trial.TrialState.WAITING]
    assert any(t.user_attrs.get("retry_of") == first.number for t in waiting)
    assert not _alive(int(marker.read_text()))


# -- 5. retries keep their curriculum -----------------------------------------------------------------------
def test_a_trial_killed_before_its_decoding_is_requeued_with_its_enqueued_params(tmp_path: Path) -> None:
    """A baseline claimed (``ask``) and killed before ``suggest_curriculum`` ran has no params:
    its retry must carry the enqueued ``fixed_params`` and label, not become a random curriculum."""
    from curriculum_search.search.study import recover_interrupted

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    params = {"n_stages": 2, "lr": 0.002, "teacher_0": "a"}
    study.enqueue_trial(params, user_attrs={"baseline": "weak_to_strong"})
    claimed = study.ask()  # ... and the coordinator is killed here
    assert claimed.params == {}
    assert recover_interrupted(study, lambda s: None) == 1
    (retry,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert retry.system_attrs["fixed_params"] == params
    assert retry.user_attrs["baseline"] == "weak_to_strong" and retry.user_attrs["retry_of"] == claimed.number


# -- 10. small ones -----------------------------------------------------------------------------------------
def test_history_has_no_duplicate_rows_after_a_resume(tmp_path: Path, teacher_ckpt: Path) -> None:
    """Killed after the evaluation at iteration 3 (checkpoint at 2): the resumed run evaluates 3
    again; ``history.jsonl`` holds each evaluation once, as an uninterrupted run's does."""
    from curriculum_search.curriculum.recipe import load_recipe
    from curriculum_search.curriculum.trainer import run_recipe

    data = recipe_dict(teacher_ckpt)
    data["stages"][0]["iterations"] = 5
    data["train"].update(eval_every=1, checkpoint_every=2)
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", data))

    def kill_at_3(iteration: int, res: Any) -> None:
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, run_options(tmp_path, callbacks=[kill_at_3]))
    run_recipe(recipe, run_options(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5], rows


KILLED_RUN = """
import sys, time
from pathlib import Path
from curriculum_search.search.fullrun import _status
from curriculum_search.search.storage import running_marker, storage_spec, study_lock
spec = storage_spec(Path(sys.argv[1]), "tiny", None)
with study_lock(spec, "tiny"):
    _status(spec.study_dir / "full" / "status.json", "running", extra=running_marker(spec, "tiny"))
    print("running", flush=True)
    time.sleep(600)
"""


def test_full_run_status_reads_interrupted_after_a_kill(tmp_path: Path) -> None:
    """``full/status.json`` said "running" forever after a kill -9; readers now see the run's
    study lock free (or its PID gone) and say "interrupted"."""
    import signal

    from curriculum_search.dashboard import data as dd
    from curriculum_search.search.storage import live_state

    studies = tmp_path / "studies"
    repo = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(studies)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": repo},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
        status = json.loads((studies / "tiny" / "full" / "status.json").read_text())
        assert status["pid"] == proc.pid and live_state(status) == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    before = (studies / "tiny" / "full" / "status.json").read_bytes()
    status = json.loads(before)
    assert status["state"] == "running" and live_state(status) == "interrupted"
    assert live_state({k: v for k, v in status.items() if k != "lock"}) == "interrupted"  # PID check
    run = dd.FullRun(studies / "tiny" / "full", status, [], None, False, [])
    assert run.state == "interrupted"
    assert (studies / "tiny" / "full" / "status.json").read_bytes() == before  # readers write nothing


def test_full_run_marks_itself_running_with_its_pid_and_lock(
    tmp_path: Path, teacher_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from curriculum_search.search import fullrun
    from curriculum_search.search.space import load_space
    from curriculum_search.search.storage import lock_path

    space, studies = _study(tmp_path, teacher_ckpt)
    seen: dict[str, Any] = {}

    def stop(*args: Any, **kwargs: Any) -> Any:
        seen.update(json.loads((studies / "tiny" / "full" / "status.json").read_text()))
        raise KeyboardInterrupt

    monkeypatch.setattr(fullrun, "run_selection", stop)
    with pytest.raises(KeyboardInterrupt):
        fullrun.run_full(load_space(space), _search_opts(studies, space))
    spec = storage_spec(studies, "tiny", None)
    assert seen["state"] == "running" and seen["pid"] == os.getpid()
    assert seen["lock"] == str(lock_path(spec, "tiny"))
    assert json.loads((studies / "tiny" / "full" / "status.json").read_text())["state"] == "interrupted"


# -- 6. journal storage: kill -9 leaves no trial RUNNING forever ---------------------------------------------
def test_journal_study_recovers_trials_of_a_killed_coordinator(tmp_path: Path, teacher_ckpt: Path) -> None:
    """Journal storage has no heartbeat: a trial claimed by a coordinator that was killed stayed
    RUNNING forever. The study lock makes the next coordinator the only one, so it recovers it
    like SQLite (failed, re-queued)."""
    from curriculum_search.search.coordinator import run_search
    from curriculum_search.search.options import SearchOptions
    from curriculum_search.search.space import load_space
    from curriculum_search.search.study import open_study

    space, studies = _study(tmp_path, teacher_ckpt)
    journal = f"journal:{tmp_path / 'journal.log'}"
    sp = load_space(space)
    options = SearchOptions(
        studies_root=studies, storage=journal, trials=1, progress=False, space_file=space, echo=lambda s: None
    )
    study = open_study(sp, options, storage_spec(studies, "tiny", journal))
    study.set_user_attr("baselines_enqueued", True)
    done = study.ask()
    study.tell(done, 0.1)
    killed = study.ask()  # claimed, then its coordinator died
    run_search(sp, options)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert trials[killed.number].user_attrs["requeued"] is True
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.RUNNING]
    assert any(t.user_attrs.get("retry_of") == killed.number for t in trials.values())


# -- 6. server databases: heartbeat from the claim, a paused coordinator, no shared run folder ------------
def test_the_heartbeat_grace_period_is_an_explicit_validated_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults: 120 s grace, a beat every 10 s. ``CURRICULUM_SEARCH_HEARTBEAT_GRACE_S`` (tests,
    the PostgreSQL soak) shortens it, beating four times per grace period; a bad value is one line
    naming the variable, raised before any connection is tried."""
    from curriculum_search.search.storage import (
        GRACE_ENV,
        GRACE_S,
        beat_every_s,
        heartbeat_grace_s,
        open_storage,
    )

    assert (heartbeat_grace_s({}), beat_every_s({}), GRACE_S) == (120.0, 10.0, 120)
    assert (heartbeat_grace_s({GRACE_ENV: " 12 "}), beat_every_s({GRACE_ENV: "12"})) == (12.0, 3.0)
    assert beat_every_s({GRACE_ENV: "600"}) == 10.0
    for bad in ("soon", "0", "-5", "3.9", "nan", "inf"):
        with pytest.raises(StudyError, match=f"{GRACE_ENV}=.*must be a number of seconds >= 4"):
            heartbeat_grace_s({GRACE_ENV: bad})
    monkeypatch.setenv(GRACE_ENV, "1")
    with pytest.raises(StudyError, match=GRACE_ENV):  # the database at port 1 is never reached
        open_storage(storage_spec(tmp_path, "tiny", "postgresql://u@127.0.0.1:1/db"))


@pytest.mark.postgres
def test_a_claimed_trial_has_a_heartbeat_before_it_is_prepared(postgres_url: str) -> None:
    """A host killed between ``ask()`` and the launch (preparation can take a while) left a trial
    without any heartbeat, which Optuna never fails: RUNNING forever. ``claim`` beats at once."""
    import time

    from curriculum_search.search.processes import claim

    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="hb", storage=storage, direction="maximize")
    trial = claim(study, server=True)  # ... and the host dies here
    time.sleep(2.5)  # past the grace period
    optuna.storages.fail_stale_trials(study)
    assert study.trials[trial.number].state == optuna.trial.TrialState.FAIL


@pytest.mark.postgres
def test_a_dead_hosts_trial_is_requeued_like_an_interrupted_one(postgres_url: str) -> None:
    """Optuna's stale-trial callback left the failed original counting toward the target (the study
    "finished" with the retry still queued) and its retry without ``retry_of``. ``fail_stale``
    re-queues it as ``recover_interrupted`` does: not counted, exactly one retry (however many
    coordinators sweep) with its enqueued parameters and baseline label."""
    import time

    from curriculum_search.search.processes import claim
    from curriculum_search.search.study import fail_stale, finished_count

    storage = optuna.storages.RDBStorage(postgres_url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
    study.enqueue_trial({"x": 0.25}, user_attrs={"baseline": "direct_strongest"})
    trial = claim(study, server=True)  # claimed by a host that dies before decoding it
    assert trial.params == {}
    time.sleep(2.5)  # past the grace period
    other = optuna.load_study(study_name="stale", storage=storage)
    assert fail_stale(study) == 1 and fail_stale(other) == 0
    trials = study.get_trials()
    original = trials[trial.number]
    assert original.state == optuna.trial.TrialState.FAIL and original.user_attrs["requeued"] is True
    assert original.user_attrs["failure_reason"].startswith("heartbeat lost")
    retries = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.WAITING
    assert retries[0].user_attrs["baseline"] == "direct_strongest"
    assert retries[0].user_attrs["retry_reason"] == "heartbeat"
    assert retries[0].system_attrs["fixed_params"] == {"x": 0.25}
    assert finished_count(study) == 0


def test_a_coordinator_back_from_a_pause_drops_a_result_another_host_finished(tmp_path: Path) -> None:
    """Paused past the heartbeat grace, its trial was failed (and retried) elsewhere: when it comes
    back, finishing that trial must neither crash nor write into the finished trial."""
    from curriculum_search.search.coordinator import _finish, _Running
    from curriculum_search.search.processes import Process
    from curriculum_search.search.protocol import TrialResult

    study = optuna.create_study(
        study_name="p", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize"
    )
    trial = study.ask()
    other = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 's.db'}")
    other.tell(trial.number, state=optuna.trial.TrialState.FAIL)  # another host's stale-trial sweep
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    TrialResult("complete", value=0.5, seed_values=[0.5]).write(run_dir)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()

    class Choice:
        def describe(self) -> str:
            return "a | mse"

    log = open(tmp_path / "log", "ab")  # noqa: SIM115 - closed by _finish
    r = _Running(trial, Choice(), Process(proc, run_dir, 0.0, log, 0))  # type: ignore[arg-type]
    line, cause = _finish(study, r)
    assert "result dropped" in line and cause is None
    after = study.trials[trial.number]
    assert after.state == optuna.trial.TrialState.FAIL and after.value is None and not after.user_attrs


def test_a_retry_never_shares_the_run_folder_of_a_running_original(
    tmp_path: Path, teacher_ckpt: Path
) -> None:
    from curriculum_search.search.coordinator import trial_run_dir
    from curriculum_search.search.encoding import suggest_curriculum
    from curriculum_search.search.space import load_space
    from curriculum_search.search.storage import RUN_LOCK, file_lock

    space, studies = _study(tmp_path, teacher_ckpt)
    spec = storage_spec(studies, "tiny", None)
    study = optuna.load_study(study_name="tiny", storage=spec.url)
    trial = study.ask()
    choice = suggest_curriculum(trial, load_space(space))
    usual = trial_run_dir(spec, study, choice, 0, trial.number)
    assert usual.name.startswith(choice.key) and "-s0" in usual.name
    hold = (
        "import sys, time\nfrom pathlib import Path\nfrom curriculum_search.search.storage import file_lock\n"
        "with file_lock(Path(sys.argv[1]), what='x', hint='y'):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    usual.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", hold, str(usual / RUN_LOCK)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert trial_run_dir(spec, study, choice, 0, 7) == usual.with_name(f"{usual.name}-t7")
    finally:
        proc.kill()
        proc.wait()
    assert trial_run_dir(spec, study, choice, 0, 7) == usual  # free again: the retry resumes there
    with file_lock(usual / RUN_LOCK, what="x", hint="y"):  # re-entrant in one process: no effect
        pass


def test_race_runs_stopped_with_their_coordinator_never_count_as_failed(tmp_path: Path) -> None:
    """Three `run`s stopped during the race (kill -9, Ctrl+C) failed the incumbent's run ("a run
    of the incumbent failed"): only the run process SIGKILLed alone (OOM killer) counts."""
    from curriculum_search.search.race_runs import MAX_INTERRUPTIONS, _recover, race_results

    study = optuna.create_study(study_name="s:selection", storage=f"sqlite:///{tmp_path / 's.db'}")
    attrs = {"arm_key": "a", "iterations": 100, "seed": 0}
    for _ in range(MAX_INTERRUPTIONS + 1):
        t = study.ask()
        for k, v in attrs.items():
            t.set_user_attr(k, v)
        _recover(study, lambda s: None)  # the coordinator was killed while the run trained
    assert ("a", 100, 0) not in race_results(study)  # run again, not "failed"
    assert all(t.user_attrs["interrupted_by"] == "coordinator" for t in study.trials)


def test_trial_processes_get_the_gpus_this_process_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CUDA_VISIBLE_DEVICES=2,3 the trial processes go to physical GPUs 2 and 3 (indices 0
    and 1 would be other GPUs); ``cuda:N`` keeps this process' N-th GPU, which the trial process
    then sees as its only one (``cuda``)."""
    import torch

    from curriculum_search.search.processes import gpus, pinned_device, worker_count

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus(None) == ["0", "1"] and gpus("cuda") == ["0", "1"] and gpus("cpu") == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpus(None) == ["2", "3"] and gpus("cuda:1") == ["3"] and gpus("cuda:5") == []
    assert worker_count(None, None, "cuda:0") == 1 and worker_count(None, None, None) == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa, GPU-bbbb")  # UUIDs are entries too
    assert gpus(None) == ["GPU-aaaa", "GPU-bbbb"]
    assert pinned_device("cuda:1") == "cuda" and pinned_device("cuda") == "cuda"
    assert pinned_device("cpu") == "cpu" and pinned_device(None) is None
