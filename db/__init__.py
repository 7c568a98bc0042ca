"""Storage: SQLAlchemy models, engine setup, Alembic migrations, writes, statistics, exports."""

from __future__ import annotations

from sqlalchemy import Engine


def open_database(url: str | None = None) -> Engine:
    """The engine for `url` (None = the default SQLite file), its schema upgraded to the newest
    revision. What the app and the CLI call at start."""
    from db.engine import make_engine
    from db.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    return engine
