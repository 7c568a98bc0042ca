"""Engine and session setup from the settings' database URL.

SQLite (the default) gets WAL journaling, foreign keys, a busy timeout and `BEGIN IMMEDIATE`
for write transactions, so concurrent writers queue on the lock instead of failing with
"database is locked". Any other SQLAlchemy URL (e.g. PostgreSQL) is used as is.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

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


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """Build the engine for `url` (None = the default SQLite file); `kwargs` go to create_engine."""
    parsed = make_url(url or default_url())
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, json_serializer=_dumps, pool_pre_ping=True, **kwargs)
    if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, json_serializer=_dumps, **kwargs)

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
