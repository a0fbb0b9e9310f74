"""Optuna storages for studies: SQLite under ``studies/<name>/`` by default, or any URL.

* SQLite is opened in WAL mode with a busy timeout, and only ONE coordinator process per SQLite
  study claims trials (a lock file enforces it); trial processes only report intermediate values.
  This avoids the SQLite race where two processes pop the same queued trial.
* Server databases (PostgreSQL, MySQL) take many coordinators (``worker`` on each host); they use
  Optuna's heartbeat so trials of a dead host are failed and re-queued by the survivors.
* ``journal:PATH`` uses Optuna's JournalStorage with a file backend (NFS-friendly, no heartbeat).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import random
import re
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from curriculum_search.errors import StudyError

HEARTBEAT_S = 30
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Server databases: seconds after its last heartbeat when a RUNNING trial counts as its host's
#: death: the next coordinator that claims a trial fails it and re-queues it (default).
GRACE_S = 120
#: Seconds between the heartbeats a coordinator records for its running trials (at most; a
#: shorter grace period beats more often, four beats per grace period).
BEAT_S = 10.0
#: Environment variable that sets the grace period (seconds, at least :data:`MIN_GRACE_S`) instead
#: of :data:`GRACE_S`; every host of a study must use the same value (a host with a shorter one
#: fails the live trials of the others). Meant for tests and the soak (``benchmarks/soak.py
#: --postgres``), which need a killed host noticed in seconds, not minutes.
GRACE_ENV = "CURRICULUM_SEARCH_HEARTBEAT_GRACE_S"
#: Below this, a busy host's late heartbeat could get its live trials failed.
MIN_GRACE_S = 4.0
_STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


#: Environment variables that give a server database's password without putting it in a URL (a URL
#: on the command line is visible to every user in the process list): the password itself, or the
#: path of a file holding it that only its owner may read (mode 0600 or stricter).
PASSWORD_ENV = "CURRICULUM_SEARCH_DB_PASSWORD"
PASSWORD_FILE_ENV = "CURRICULUM_SEARCH_DB_PASSWORD_FILE"


@dataclass(frozen=True)
class StorageSpec:
    """Where a study lives. ``url`` is an Optuna storage URL without any password (safe to log,
    to write into job files and to show); ``password`` travels separately (never printed);
    ``sqlite_path`` is set for SQLite."""

    url: str
    study_dir: Path
    sqlite_path: Path | None = None
    journal_path: Path | None = None
    password: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_server(self) -> bool:
        return self.sqlite_path is None and self.journal_path is None

    @property
    def display(self) -> str:
        if self.sqlite_path is not None:
            return str(self.sqlite_path)
        if self.journal_path is not None:
            return f"journal:{self.journal_path}"
        return redact_url(self.url)

    @property
    def connect_url(self) -> str:
        """The URL with the password, for the database driver only."""
        if not self.password or not self.is_server:
            return self.url
        from sqlalchemy.engine import make_url

        return make_url(self.url).set(password=self.password).render_as_string(hide_password=False)


def heartbeat_grace_s(environ: Mapping[str, str] | None = None) -> float:
    """The heartbeat grace period: :data:`GRACE_ENV` when set, else :data:`GRACE_S`.

    Raises:
        StudyError: the variable is not a number of seconds >= :data:`MIN_GRACE_S`.
    """
    env = os.environ if environ is None else environ
    text = env.get(GRACE_ENV, "").strip()
    if not text:
        return float(GRACE_S)
    try:
        grace = float(text)
    except ValueError:
        grace = float("nan")
    if not math.isfinite(grace) or grace < MIN_GRACE_S:
        raise StudyError(
            f"{GRACE_ENV}={text!r}: the heartbeat grace period must be a number of seconds >= "
            f"{MIN_GRACE_S:g} (default {GRACE_S}); unset it to use the default"
        )
    return grace


def beat_every_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between a coordinator's heartbeats: :data:`BEAT_S`, or a quarter of a shorter grace."""
    return min(BEAT_S, heartbeat_grace_s(environ) / 4)


def redact_url(url: str) -> str:
    """Hide the password of a database URL, in the credentials (``user:***@host``) and in the
    query (``?password=***``), for logs, errors and the dashboard."""
    if "://" in url and "@" in url.split("?", 1)[0]:
        scheme, rest = url.split("://", 1)
        head, sep, query = rest.partition("?")
        creds, host = head.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        url = f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
        url += sep + query
    return re.sub(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*", r"\1***", url)


def split_password(url: str) -> tuple[str, str | None]:
    """``(url without any password, the password or None)`` for a server database URL."""
    if "://" not in url or url.startswith(("sqlite:", "journal:")):
        return url, None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return url, None
    query_pw = {k: v for k, v in parsed.query.items() if k.lower() in ("password", "passwd", "pwd")}
    password = parsed.password
    if password is None and query_pw:
        value = next(iter(query_pw.values()))
        password = value if isinstance(value, str) else value[0]
    if password is None:
        return url, None
    bare = parsed._replace(password=None).difference_update_query(list(query_pw))
    return bare.render_as_string(hide_password=False), str(password)


def password_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The password from :data:`PASSWORD_ENV` or the 0600 file named by :data:`PASSWORD_FILE_ENV`."""
    env = os.environ if environ is None else environ
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    name = env.get(PASSWORD_FILE_ENV)
    if not name:
        return None
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"{path}: cannot read the database password file ({exc.strerror})") from None
    if mode & 0o077:
        raise StudyError(
            f"{path}: the database password file is readable by other users (mode {oct(mode & 0o777)}); "
            f"chmod 600 {path}"
        )
    return text.strip() or None


def server_connect_url(url: str) -> str:
    """``url`` with the password from the URL itself or else from the environment (readers)."""
    bare, password = split_password(url)
    if "://" not in url or url.startswith(("sqlite:", "journal:")):
        return url
    return StorageSpec(bare, Path("."), password=password or password_from_env()).connect_url


def password_in_url(url: str | None) -> bool:
    """True when ``url`` carries a password (a warning: the command line is public)."""
    return bool(url) and split_password(str(url))[1] is not None


def secret_env(spec: StorageSpec) -> dict[str, str]:
    """Environment entries that give a child process the database password (empty if none)."""
    return {PASSWORD_ENV: spec.password} if spec.password else {}


def check_study_name(name: str) -> str:
    """``name`` names the folder ``studies/<name>/``: a plain folder name, never a path."""
    if not _STUDY_NAME_RE.match(name):
        raise StudyError(
            f"study name {name!r}: must be a folder name of letters, digits, '_', '-', '.' not "
            "starting with '.' (it names the folder STUDIES_DIR/NAME/)"
        )
    return name


def storage_spec(studies_root: Path, name: str, storage: str | None) -> StorageSpec:
    """Resolve the storage of study ``name`` (default: ``studies_root/name/study.db``)."""
    study_dir = studies_root / check_study_name(name)
    if storage is None:
        path = study_dir / "study.db"
        return StorageSpec(f"sqlite:///{quote(str(path.resolve()), safe='/')}", study_dir, sqlite_path=path)
    if storage.startswith("journal:"):
        path = Path(storage.split(":", 1)[1]).expanduser()
        return StorageSpec(storage, study_dir, journal_path=path)
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///") :])
        return StorageSpec(storage, study_dir, sqlite_path=path)
    url, password = split_password(storage)
    return StorageSpec(url, study_dir, password=password or password_from_env())


#: Errors of two processes creating Optuna's schema in a fresh database at the same moment (SQLite,
#: PostgreSQL): the loser's CREATE TABLE / alembic_version INSERT fails; a retry finds the tables.
_SCHEMA_RACE = ("already exists", "unique constraint failed: alembic_version", "duplicate key value")


def _rdb_storage(url: str, attempts: int = 5, **kwargs: Any) -> RDBStorage:
    """``RDBStorage(url, **kwargs)``, retried when another process was creating the schema."""
    for attempt in range(attempts):
        try:
            return RDBStorage(url, **kwargs)
        except Exception as exc:
            if attempt + 1 == attempts or not any(m in str(exc).lower() for m in _SCHEMA_RACE):
                raise
            time.sleep(0.2 + random.random() * 0.5)
    raise AssertionError("unreachable")


def open_storage(spec: StorageSpec, *, heartbeat: bool = True) -> BaseStorage:
    """Open the storage for writing (creates the SQLite file / journal if needed)."""
    if spec.journal_path is not None:
        spec.journal_path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(spec.journal_path)))
    if spec.sqlite_path is not None:
        spec.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(spec.sqlite_path)
        return _rdb_storage(spec.url, engine_kwargs={"connect_args": {"timeout": 120}})
    kwargs: dict[str, object] = {}
    if heartbeat:
        kwargs = dict(
            heartbeat_interval=HEARTBEAT_S,
            grace_period=heartbeat_grace_s(),
        )  # stale trials are failed and re-queued by ``study.fail_stale`` (not Optuna's callback)
    try:
        return _rdb_storage(spec.connect_url, engine_kwargs={"pool_pre_ping": True}, **kwargs)  # type: ignore[arg-type]
    except ImportError as exc:
        raise StudyError(
            f"{spec.display}: database driver missing ({exc}); install curriculum_search[postgres]"
        ) from None
    except Exception as exc:  # sqlalchemy OperationalError etc.
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if spec.password:
            first = first.replace(spec.password, "***")
        raise StudyError(f"{spec.display}: cannot open the study database ({redact_url(first)})") from None


def open_readonly(spec: StorageSpec) -> BaseStorage:
    """Open a storage for reading without ever writing to it (dashboard, status)."""
    if spec.sqlite_path is not None:
        if not spec.sqlite_path.is_file():
            raise StudyError(f"{spec.sqlite_path}: no study database here")
        # plain mode=ro (never immutable): CLI readers may run while a writer starts
        url = readonly_sqlite_url(spec.sqlite_path, allow_immutable=False)
        return RDBStorage(
            url,
            skip_compatibility_check=True,
            skip_table_creation=True,
            engine_kwargs={"connect_args": {"timeout": 30}},
        )
    if spec.journal_path is not None:
        if not spec.journal_path.is_file():
            raise StudyError(f"{spec.journal_path}: no journal here")
        return JournalStorage(JournalFileBackend(str(spec.journal_path)))
    return RDBStorage(spec.connect_url, skip_compatibility_check=True, skip_table_creation=True)


def readonly_sqlite_url(path: Path, *, allow_immutable: bool = True) -> str:
    """A SQLAlchemy URL that opens an SQLite study read-only without creating any file.

    ``mode=ro`` never writes the database. In WAL mode a reader also needs the ``-wal`` and
    ``-shm`` files: while a writer is active they exist and the reader shares them (WAL readers
    never block the writer). When they are absent (no writer, everything checkpointed into the
    main file) a plain ``mode=ro`` reader would *create* them, so a WAL database without ``-wal``
    is opened with ``immutable=1``: no lock, no side file, and the main file holds every committed
    trial. A database in rollback-journal mode is read with ``mode=ro`` alone (shared locks only).
    The path is percent-encoded twice: SQLAlchemy decodes the URL once, SQLite the URI once.
    """
    resolved = path.resolve()
    wal = resolved.with_name(resolved.name + "-wal")
    immutable = allow_immutable and _is_wal_database(resolved) and not wal.exists()
    extra = "&immutable=1" if immutable else ""
    encoded = quote(quote(str(resolved), safe="/"), safe="/")
    return f"sqlite:///file:{encoded}?mode=ro{extra}&uri=true"


def _is_wal_database(path: Path) -> bool:
    """True when the SQLite header says WAL mode (file format read/write versions = 2)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[:16] == SQLITE_MAGIC and head[18] == 2 and head[19] == 2


def _enable_wal(path: Path) -> None:
    """WAL lets readers (dashboard) and writers work at once; it is persistent in the file. Also
    checks the database can be written (a read-only file is refused here, before any work)."""
    try:
        con = sqlite3.connect(path, timeout=120)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a read-only database
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        why = database_error(exc)
        if why is None:
            raise
        raise StudyError(f"{path}: {why}") from None


#: SQLite / server messages of a database that cannot take writes, and what to tell the user.
_DB_ERRORS = (
    (
        ("readonly database", "read-only", "readonly"),
        "the study database is read-only; nothing was changed: make it (and its folder) writable, "
        "or copy it and pass --storage sqlite:///COPY",
    ),
    (
        ("database or disk is full", "disk is full", "no space left", "could not extend file"),
        "no space left for the study database; every trial told before is kept: free space and "
        "re-run the same command to resume",
    ),
    (
        ("unable to open database file",),
        "cannot open the study database (its folder is not writable or not reachable)",
    ),
)


def database_error(exc: BaseException) -> str | None:
    """One-line explanation for a database that refuses writes (read-only, full), following
    Optuna's and SQLAlchemy's wrapping; ``None`` for any other error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e).lower()
        for markers, why in _DB_ERRORS:
            if any(m in text for m in markers):
                return why
        e = e.__cause__ or e.__context__ or getattr(e, "orig", None)
    return None


@contextlib.contextmanager
def database_errors(spec: StorageSpec) -> Iterator[None]:
    """Turn a read-only or full study database met mid-run into one :class:`StudyError` line."""
    try:
        yield
    except StudyError:
        raise
    except Exception as exc:
        why = database_error(exc)
        if why is None:
            raise
        raise StudyError(f"{spec.display}: {why}") from None


def lock_path(spec: StorageSpec, name: str) -> Path:
    """The lock file of study ``name``: next to its database file (SQLite, journal), so every
    ``--studies-dir`` that points at one database shares it; in the study folder for a server
    database (it guards this host's files of the study: zoo, ``full/``)."""
    db = spec.sqlite_path or spec.journal_path
    if db is not None:
        db = Path(os.path.abspath(db))
        return db.parent / f".{db.name}.{name}.lock"
    return spec.study_dir / ".study.lock"


#: Locks this process holds: ``{lock file: (open file, depth)}``. A ``run`` takes the study lock
#: once for search, selection and full run; the inner steps re-enter it instead of deadlocking
#: on their own process (``flock`` locks belong to an open file, not to a process).
_HELD: dict[Path, tuple[Any, int]] = {}


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = False, what: str, hint: str) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` for the block, re-entrant within this process; released when
    the block ends or the process dies (kill -9 included).

    Raises:
        StudyError: another process holds it and ``wait`` is false: one line naming ``what``, the
            holder's host and PID and ``hint``.
    """
    key = Path(os.path.abspath(path))
    if key in _HELD:
        fh, depth = _HELD[key]
        _HELD[key] = (fh, depth + 1)
        try:
            yield
        finally:
            fh, depth = _HELD[key]
            _HELD[key] = (fh, depth - 1)
        return
    key.parent.mkdir(parents=True, exist_ok=True)
    fh = open(key, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            raise StudyError(f"{what} is in use by {owner}; {hint}") from None
        fh.seek(0)
        fh.truncate()
        fh.write(
            f"pid {os.getpid()} on host {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        fh.flush()
        _HELD[key] = (fh, 1)
        try:
            yield
        finally:
            _HELD.pop(key, None)
    finally:
        fh.close()


def study_lock(
    spec: StorageSpec, name: str, *, wait: bool = False
) -> contextlib.AbstractContextManager[None]:
    """One lock per study (per database) for a whole ``run``/``search``/``select``."""
    return file_lock(
        lock_path(spec, name),
        wait=wait,
        what=f"study {name!r} ({spec.display})",
        hint="wait for it to finish, pass --wait to queue behind it, or use --workers N in that "
        "command (several hosts: a PostgreSQL --storage and `worker`)",
    )


#: Lock file a trial process holds in its run folder while it trains (see ``trial_worker``).
RUN_LOCK = ".run.lock"


def lock_held(path: Path) -> bool | None:
    """Whether some process holds the lock file ``path`` (``None``: cannot tell). Read-only: the
    file is opened for reading and never created or changed."""
    try:
        fh = open(path)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        fh.close()
    return False


def running_marker(spec: StorageSpec, name: str) -> dict[str, Any]:
    """What a ``status.json`` that says "running" also records, so a reader can tell a live run
    from one that was killed (:func:`live_state`)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "lock": str(lock_path(spec, name))}


def live_state(status: Mapping[str, Any]) -> str:
    """``status["state"]``, except that a "running" whose process is gone reads "interrupted":
    its study lock is free (this host or a shared folder) or, without a lock, its PID is dead."""
    state = str(status.get("state") or "unknown")
    if state != "running":
        return state
    lock = status.get("lock")
    if lock:
        held = lock_held(Path(str(lock)))
        if held is not None:
            return "running" if held else "interrupted"
    pid, host = status.get("pid"), status.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "interrupted"
        except OSError:
            pass
    return state


def coordinator_lock(study_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Exclusive lock of the local study folder (kept for callers that have no storage spec)."""
    return file_lock(
        study_dir / ".coordinator.lock",
        what=f"study folder {study_dir}",
        hint="wait for it, or use --workers N in that command",
    )


def load_study_readonly(spec: StorageSpec, name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=open_readonly(spec))
    except KeyError:
        raise StudyError(f"{spec.display}: no study named {name!r}") from None
    except StudyError:
        raise
    except Exception as exc:  # e.g. read while another process is still creating the schema
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise StudyError(
            f"{spec.display}: cannot read study {name!r} ({type(exc).__name__}: {first}); if it is "
            "being created right now, retry in a moment, otherwise the file is not an Optuna study"
        ) from exc
