"""Storage helpers the app needs on top of store/export: every export written into one folder
(the Data tab's downloads and the Space backup), and a consistent copy of a SQLite database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from db.export import feedback_rows, preference_rows, table_columns, table_rows, write_csv
from db.models import Base
from refine.records import write_jsonl

PREFERENCES_FILE = "preferences.jsonl"
FEEDBACK_FILE = "feedback.jsonl"


def write_exports(engine: Engine, folder: str | Path) -> list[Path]:
    """Write the preference pairs and feedback records (JSONL) and every table (CSV) into
    `folder`; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / PREFERENCES_FILE, folder / FEEDBACK_FILE]
    write_jsonl(written[0], preference_rows(engine))
    write_jsonl(written[1], feedback_rows(engine))
    for name in sorted(Base.metadata.tables):
        path = folder / f"{name}.csv"
        write_csv(path, table_rows(engine, name), table_columns(name))
        written.append(path)
    return written


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite engine (None for other databases and in-memory SQLite)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def snapshot_sqlite(engine: Engine, dest: str | Path) -> Path:
    """Write a consistent copy of a SQLite database to `dest` with SQLite's online backup
    (safe while the app keeps writing; committed transactions only)."""
    if sqlite_path(engine) is None:
        raise ValueError(f"not a SQLite file database: {engine.url.render_as_string(hide_password=True)}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with engine.connect() as connection:
        source = connection.connection.driver_connection
        target = sqlite3.connect(dest)
        try:
            source.backup(target)
        finally:
            target.close()
    return dest
