"""Engine and session setup from the settings' database URL.

SQLite (the default) gets WAL journaling, foreign keys, a busy timeout and `BEGIN IMMEDIATE`
for write transactions, so concurrent writers queue on the lock instead of failing with
"database is locked". Any other SQLAlchemy URL (e.g. PostgreSQL) is used as is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_S = 30.0
_WRITE = "refine_write"  # execution option: start transactions with BEGIN IMMEDIATE on SQLite


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
        write = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """`engine` whose transactions take the write lock up front (BEGIN IMMEDIATE on SQLite):
    a transaction that reads then writes never fails halfway on a lock it cannot upgrade."""
    return engine.execution_options(**{_WRITE: True})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reading; objects stay usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one write transaction: committed on success, rolled back on error."""
    with Session(writer(engine), expire_on_commit=False) as session, session.begin():
        yield session
