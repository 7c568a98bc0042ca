"""Storage: SQLAlchemy models, engine setup, Alembic migrations, writes, statistics, exports."""

from __future__ import annotations

from sqlalchemy import Engine


def open_database(url: str | None = None) -> Engine:
    """The engine for `url` (None = the default SQLite file), its schema upgraded to the newest
    revision. What the app and the CLI call at start.

    Raises db.engine.DatabaseError, one sentence naming the URL and what to do, when the URL is
    malformed or of an unknown dialect, the database cannot be reached, opened or written, or it
    was written by a newer version of Refine (db.migrate.DatabaseNewerThanCode)."""
    from db.engine import make_engine
    from db.migrate import upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
