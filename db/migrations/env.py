"""Alembic environment: migrates the connection given by db.migrate (or the URL in the config,
else the settings' database URL) to the models' metadata."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from db.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # Batch mode lets ALTER-style migrations work on SQLite (table copy and move).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting together upgrade one at a time (SQLite: BEGIN IMMEDIATE does it).
            context.execute("SELECT pg_advisory_xact_lock(7263401)")
        context.run_migrations()


def _online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from db.engine import make_engine, write_connection

    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from refine.settings import Settings

        url = Settings().database_url
    engine = make_engine(url)
    try:
        with write_connection(engine) as connection:
            _run(connection)
    finally:
        engine.dispose()


def _offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _offline()
else:
    _online()
