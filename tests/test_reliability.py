"""Reliability, second wave (issue 15): secrets, the dashboard's address, small file-level
guarantees; see also ``test_bad_input.py`` (second bad-input list) and ``test_soak.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
)
from curriculum_search.utils.io import atomic_write_text, dump_yaml
from tests.test_postgres import _as_postgres, _bin, _free_port
from tests.test_search import write_space


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
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip(
            "PostgreSQL server binaries not installed (Debian package `postgresql`; .ci/run installs it)"
        )
    root = Path(tempfile.mkdtemp(prefix="cs-pgpw-"))
    data, pwfile = root / "data", root / "pwfile"
    pwfile.write_text(SECRET + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
        os.chmod(root, 0o700)
    subprocess.run(
        _as_postgres(
            [
                initdb,
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=50"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


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


def test_trial_processes_get_no_secret_in_their_arguments() -> None:
    """The trial command line is ``python -m ...trial_worker JOB.json``: nothing else."""
    import ast

    src = (Path(__file__).resolve().parent.parent / "curriculum_search" / "search").rglob("*.py")
    for path in src:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Popen":
                argv = ast.unparse(node.args[0])
                assert "url" not in argv and "storage" not in argv and "password" not in argv, (path, argv)


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
    port = _free_port()
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
    from curriculum_search import commands
    from curriculum_search.cli import main as cli
    from curriculum_search.dashboard import parse_app_args
    from tests.test_bad_input import one_line_error

    seen: list[list[str]] = []
    monkeypatch.setattr(commands.subprocess, "call", lambda cmd, *a, **k: seen.append(cmd) or 0)
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
