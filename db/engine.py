"""Engine and session setup from the settings' database URL.

SQLite (the default) gets WAL journaling, foreign keys, a busy timeout and `BEGIN IMMEDIATE`
for write transactions, so concurrent writers queue on the lock instead of failing with
"database is locked". Any other SQLAlchemy URL (e.g. PostgreSQL) is used as is.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from refine.errors import RefineError, first_line

BUSY_TIMEOUT_S = 30.0
WRITE_OPTION = "refine_write"  # execution option: start transactions with BEGIN IMMEDIATE on SQLite


def data_dir() -> Path:
    """Where the default SQLite file lives: `$REFINE_DATA_DIR`, else a Space's persistent
    `/data` when it exists and is writable, else `./data`."""
    if os.environ.get("REFINE_DATA_DIR"):
        return Path(os.environ["REFINE_DATA_DIR"])
    if os.path.isdir("/data") and os.access("/data", os.W_OK):
        return Path("/data")
    return Path("data")


def default_url() -> str:
    """The SQLAlchemy URL of the default database file, `<data dir>/refine.db`."""
    return f"sqlite:///{(data_dir() / 'refine.db').resolve()}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


URL_SETTING = "REFINE_DATABASE_URL (--db; --database-url for the app)"
URL_EXAMPLES = "sqlite:////path/to/refine.db or postgresql+psycopg://user:password@host:5432/name"


class DatabaseError(RefineError):
    """The database cannot be used as configured: a malformed URL, an unknown dialect or a
    missing driver, a server that cannot be reached, a file that cannot be opened or written,
    or a schema this code cannot place."""


def cli_url(value: str | None) -> str | None:
    """A `--db` value as a URL: a SQLAlchemy URL as is, anything else as a SQLite file path."""
    if not value:
        return None
    return value if "://" in value else f"sqlite:///{Path(value).expanduser().resolve()}"


def shown_url(url: str | Any) -> str:
    """A URL fit for messages and logs: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL: hide what could be a password by hand
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def parse_url(url: str) -> Any:
    """The sqlalchemy URL object of a URL; DatabaseError when it is malformed."""
    try:
        return make_url(url)
    except Exception as exc:  # ArgumentError, or ValueError for e.g. a port that is not a number
        raise DatabaseError(f"the database URL {shown_url(url)!r} is malformed ({first_line(exc)}); set "
                            f"{URL_SETTING} to a URL such as {URL_EXAMPLES}") from exc


def _create(parsed: Any, **kwargs: Any) -> Engine:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = parsed.render_as_string(hide_password=True)
    try:
        return create_engine(parsed, **kwargs)
    except NoSuchModuleError as exc:
        raise DatabaseError(f"the database URL {shown!r} names an unknown dialect or driver "
                            f"{parsed.drivername!r}; set {URL_SETTING} to a URL such as {URL_EXAMPLES}") from exc
    except ImportError as exc:
        raise DatabaseError(f"the driver of the database URL {shown!r} is not installed ({first_line(exc)}); "
                            f"install it, or set {URL_SETTING} to a URL such as {URL_EXAMPLES}") from exc
    except (ArgumentError, ValueError, TypeError) as exc:
        raise DatabaseError(f"the database URL {shown!r} is malformed ({first_line(exc)}); set {URL_SETTING} "
                            f"to a URL such as {URL_EXAMPLES}") from exc


def connection_problem(engine: Engine, exc: BaseException) -> DatabaseError:
    """The sentence for a failure to open, reach or write a database."""
    orig = getattr(exc, "orig", None) or exc
    reason = first_line(orig) or type(orig).__name__
    if engine.dialect.name == "sqlite":
        where = engine.url.database or ":memory:"
        if "readonly" in reason or "read-only" in reason:
            return DatabaseError(f"the SQLite database {where} is read-only ({reason}); make the file and its "
                                 f"folder writable, or set {URL_SETTING} to a writable database")
        return DatabaseError(f"cannot open the SQLite database {where} ({reason}); check that the path is a "
                             f"database file in a writable folder, or set {URL_SETTING} to another database")
    return DatabaseError(f"cannot reach the database {shown_url(engine.url)} ({reason}); check that its server is "
                         f"running, and the host, port, name and credentials in {URL_SETTING}")


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Build the engine for `url` (None = the default SQLite file); `kwargs` go to create_engine.
    A malformed URL, an unknown dialect or a missing driver raise DatabaseError."""
    parsed = parse_url(url or default_url())
    if parsed.get_backend_name() != "sqlite":
        return _create(parsed, json_serializer=_dumps, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        folder = Path(parsed.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise DatabaseError(f"cannot create the folder {folder} of the SQLite database {parsed.database}: a file "
                                f"is in the way ({exc.filename}); choose another path with {URL_SETTING}") from exc
        except OSError as exc:
            raise DatabaseError(f"cannot create the folder {folder} of the SQLite database {parsed.database} "
                                f"({exc.strerror or first_line(exc)}); choose another path with {URL_SETTING}") from exc
    engine = _create(parsed, json_serializer=_dumps, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver emits no BEGIN; _begin does
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


class FairLock:
    """A mutex handed to waiters in arrival order. (threading.Lock lets the releasing thread
    take it straight back while the woken one waits for the GIL, starving others.)"""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by __exit__ of the previous holder: the lock is ours

    def __exit__(self, *exc: object) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


_locks: dict[str, FairLock] = {}


def write_lock(engine: Engine) -> AbstractContextManager:
    """A lock shared by all writers of this process to one SQLite file (no-op for servers).

    SQLite takes one writer at a time; queueing threads here hands the file lock from one to
    the next at once, instead of each polling it with the busy handler's growing sleeps
    (which made the p99 latency of 16 writers hundreds of milliseconds). Other processes
    still queue on the file lock through the busy timeout.
    """
    if engine.dialect.name != "sqlite":
        return nullcontext()
    return _locks.setdefault(os.path.abspath(engine.url.database or ":memory:"), FairLock())


@contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in one write transaction (BEGIN IMMEDIATE on SQLite: a transaction that
    reads then writes never fails halfway on a lock it cannot upgrade); committed on success,
    rolled back on error."""
    with engine.connect() as connection:  # pool checkout and return stay outside the lock
        connection.execution_options(**{WRITE_OPTION: True})
        with write_lock(engine), connection.begin():
            yield connection


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """An ORM session in one write transaction (see write_connection); flushed at the end."""
    with write_connection(engine) as connection, Session(bind=connection) as session:
        yield session
        session.flush()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading; objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
