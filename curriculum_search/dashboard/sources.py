"""Where the dashboard's studies live: the studies folder and extra storages, opened read-only
(SQLite through a read-only URI, journal files never created, server sessions read-only), one
study reader per storage, and cache keys that change when a study may have changed.
See :mod:`curriculum_search.dashboard.data`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curriculum_search.errors import StudyError
from curriculum_search.search.reader import StudyReader
from curriculum_search.search.storage import SQLITE_MAGIC as _SQLITE_MAGIC
from curriculum_search.search.storage import readonly_sqlite_url, server_connect_url
from curriculum_search.search.storage import redact_url as _redact

#: Folders of ``studies/`` that are not studies (caches, teacher zoo, other runs).
RESERVED_DIRS = ("_cache", "_zoo", "runs")
#: Seconds between reloads of a server-database study (files are reloaded when they change).
SERVER_TTL_S = 10.0


@dataclass(frozen=True)
class StudySource:
    """One study to show: its name, its storage URL and the folder holding its files.

    Attributes:
        name: Optuna study name.
        url: storage URL as given (``sqlite:///abs/path``, ``journal:PATH``, ``postgresql://...``).
        folder: ``studies/<name>/`` (run files, recipe, full run); may not exist for a server study.
    """

    name: str
    url: str
    folder: Path

    @property
    def location(self) -> str:
        """Where the study is read from, password hidden."""
        path = sqlite_path(self.url)
        if path is not None:
            return str(path)
        return redact_url(self.url)

    @property
    def is_local_file(self) -> bool:
        """True for SQLite and journal storages (their change time tells when to reload)."""
        return sqlite_path(self.url) is not None or self.url.startswith("journal:")


@dataclass(frozen=True)
class Problem:
    """Something that could not be read, with a one-line reason for the page."""

    where: str
    message: str


@dataclass(frozen=True)
class Discovery:
    """Studies found under the studies folder and in extra storages, and what failed."""

    sources: tuple[StudySource, ...]
    problems: tuple[Problem, ...]


def redact_url(url: str) -> str:
    """Hide the password of a database URL (``postgresql://user:***@host/db``, ``?password=***``)."""
    return _redact(url)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (``None`` for other storages)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :]
    if rest.startswith("file:"):
        rest = rest[len("file:") :].split("?", 1)[0]
    return Path(rest)


def open_readonly_storage(url: str) -> Any:
    """Open an Optuna storage for reading only.

    SQLite: :func:`readonly_sqlite_url`; ``journal:PATH``: the journal file (never created);
    server databases: :class:`optuna.storages.RDBStorage` without table creation or version
    check (PostgreSQL sessions are also set read-only).

    Raises:
        StudyError: the file is missing or not a database, or the server cannot be reached.
    """
    import optuna

    path = sqlite_path(url)
    if path is not None:
        if not path.is_file():
            raise StudyError(f"{path}: no such study database")
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise StudyError(f"{path}: cannot read the study database ({exc.strerror})") from None
        if head and head != _SQLITE_MAGIC:
            raise StudyError(f"{path}: not an SQLite database (an Optuna study.db was expected)")
        try:
            return optuna.storages.RDBStorage(
                readonly_sqlite_url(path),
                skip_compatibility_check=True,
                skip_table_creation=True,
                engine_kwargs={"connect_args": {"timeout": 10}},
            )
        except Exception as exc:
            raise storage_error(str(path), exc) from None
    if url.startswith("journal:"):
        jpath = Path(url.split(":", 1)[1]).expanduser()
        if not jpath.is_file():
            raise StudyError(f"{jpath}: no such journal file")
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(jpath)))
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith(("postgresql", "postgres")):
        engine_kwargs["connect_args"] = {
            "options": "-c default_transaction_read_only=on",
            "connect_timeout": 5,
        }
    try:
        return optuna.storages.RDBStorage(
            server_connect_url(url),
            skip_compatibility_check=True,
            skip_table_creation=True,
            engine_kwargs=engine_kwargs,
        )
    except ImportError as exc:
        raise StudyError(f"{redact_url(url)}: database driver missing ({exc})") from None
    except Exception as exc:
        raise StudyError(f"{redact_url(url)}: cannot open the storage ({first_line(exc)})") from None


def close_storage(storage: Any) -> None:
    """Release the connections of an RDB storage (no-op for other storages)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def open_reader(url: str) -> StudyReader:
    """A :class:`~curriculum_search.search.reader.StudyReader` on :func:`open_readonly_storage`.

    Keep it (the pages keep one per :func:`reader_key`) to make re-reads fetch only new and
    unfinished trials; :func:`load_study` releases its connections after each read.
    """
    path = sqlite_path(url)
    return StudyReader(open_readonly_storage(url), str(path) if path is not None else redact_url(url))


def reader_key(url: str) -> str:
    """The URL a reader of ``url`` opens now: a SQLite study is read with ``immutable=1`` only while
    no writer has it open (see :func:`readonly_sqlite_url`), so a kept reader is keyed by this."""
    path = sqlite_path(url)
    if path is None or not path.is_file():
        return url
    return readonly_sqlite_url(path)


def first_line(exc: BaseException) -> str:
    """First line of the root cause of ``exc`` (Optuna wraps SQLAlchemy wraps sqlite3)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    exc = getattr(exc, "orig", None) or exc
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:200]


def storage_error(where: str, exc: BaseException) -> StudyError:
    """A one-line :class:`StudyError` explaining why a storage could not be read."""
    if isinstance(exc, StudyError):
        return exc
    msg = first_line(exc)
    low = msg.lower()
    if "no such table" in low:
        return StudyError(f"{where}: not an Optuna study database ({msg})")
    if "file is not a database" in low or "malformed" in low:
        return StudyError(f"{where}: the database file is damaged or not SQLite ({msg})")
    if "unable to open" in low or "readonly" in low or "permission" in low:
        return StudyError(f"{where}: cannot open the database read-only ({msg})")
    if "locked" in low:
        return StudyError(f"{where}: the database is locked by a writer, retrying at the next refresh")
    return StudyError(f"{where}: cannot read the study ({type(exc).__name__}: {msg})")


def discover(studies_dir: Path, storages: Sequence[str] = ()) -> Discovery:
    """Every study under ``studies_dir`` (``<name>/study.db``) plus every study of ``storages``.

    A folder study is named after its folder. Studies of an extra storage keep their own names;
    their files (run logs, recipe, full run) are looked up in ``studies_dir/<name>/``.
    Unreadable extra storages become :class:`Problem` entries instead of raising.
    """
    import optuna

    sources: list[StudySource] = []
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    if studies_dir.is_dir():
        for child in sorted(studies_dir.iterdir()):
            if not child.is_dir() or child.name.startswith((".", "_")) or child.name in RESERVED_DIRS:
                continue
            db = child / "study.db"
            if db.is_file():
                src = StudySource(child.name, f"sqlite:///{db.resolve()}", child)
                sources.append(src)
                seen.add((src.name, str(db.resolve())))
    for url in storages:
        url = url.strip()
        if not url:
            continue
        where = redact_url(url)
        try:
            reader = open_reader(url)
            try:
                all_names = optuna.get_all_study_names(storage=reader.storage)
                names = reader.names()  # a study's race runs are shown on that study's pages
            finally:
                reader.close()
        except Exception as exc:
            problems.append(Problem(where, str(storage_error(where, exc))))
            continue
        if not all_names:
            problems.append(Problem(where, f"{where}: holds no study yet"))
        path = sqlite_path(url)
        for name in names:
            ident = (name, str(path.resolve()) if path is not None else url)
            if ident in seen:
                continue
            seen.add(ident)
            sources.append(StudySource(name, url, studies_dir / name))
    return Discovery(tuple(sources), tuple(problems))


def change_token(source: StudySource, now: float | None = None) -> tuple[Any, ...]:
    """A value that changes when the study may have changed: file sizes and change times for
    local storages, a :data:`SERVER_TTL_S` time bucket for server databases. Use it as a cache key.
    """
    files: list[Path] = []
    path = sqlite_path(source.url)
    if path is not None:
        files = [path, path.with_name(path.name + "-wal")]
    elif source.url.startswith("journal:"):
        files = [Path(source.url.split(":", 1)[1]).expanduser()]
    else:
        return ("bucket", int((time.time() if now is None else now) // SERVER_TTL_S))
    return tuple(_stat(p) for p in files)


def files_token(paths: Iterable[Path]) -> tuple[Any, ...]:
    """Size and change time of each path (``None`` when absent): a cache key for file reads."""
    return tuple(_stat(p) for p in paths)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
