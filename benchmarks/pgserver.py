"""A throwaway PostgreSQL server on loopback, for the tests and the soak (``soak.py --postgres``).

Test utility, not part of the package: ``curriculum_search`` never imports it. It needs the server
binaries (``initdb``, ``pg_ctl``: Debian package ``postgresql``, which ``.ci/run`` installs); callers
check :func:`server_binaries` first (tests skip, the soak stops with :data:`MISSING`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: Why a PostgreSQL scenario cannot run here.
MISSING = "PostgreSQL server binaries not installed (Debian package `postgresql`; .ci/run installs it)"


def postgres_bin(name: str) -> str | None:
    """Path of the server binary ``name`` (newest installed version first), or None."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    return found[-1] if found else None


def server_binaries() -> tuple[str, str] | None:
    """``(initdb, pg_ctl)`` when the server is installed, else None."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server(prefix: str, *initdb_args: str, files: dict[str, str] | None = None) -> Iterator[str]:
    """A throwaway PostgreSQL server on loopback: ``initdb`` (with ``initdb_args``; ``{root}`` in
    them is the server's folder, where ``files`` are written first), started with ``pg_ctl``,
    stopped and removed afterwards. Yields its URL (user ``postgres``, no password in it).

    Raises:
        RuntimeError: the server binaries are not installed (:data:`MISSING`).
    """
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError(MISSING)
    initdb, pg_ctl = binaries
    # not under a test's tmp folder: the `postgres` user must be able to reach it
    root = Path(tempfile.mkdtemp(prefix=prefix))
    data = root / "data"
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    if os.geteuid() == 0:
        for path in (root, *(root / name for name in files or {})):
            shutil.chown(path, "postgres")
        os.chmod(root, 0o700)
    args = [a.format(root=root) for a in initdb_args]
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-U", "postgres", *args, "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
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
