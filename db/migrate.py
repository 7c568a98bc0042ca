"""Schema migrations, run from code: the app and the CLI upgrade at start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from db.engine import WRITE_OPTION, make_engine, write_lock

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at the shipped migrations (works from any directory)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    return config


def _engine(target: Engine | str | None) -> tuple[Engine, bool]:
    if isinstance(target, Engine):
        return target, False
    return make_engine(target), True


def head() -> str:
    """The newest revision shipped in the repository."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def upgrade(target: Engine | str | None = None, revision: str = "head") -> None:
    """Upgrade the database (an engine, a URL, or None for the default) to `revision`.

    Runs in one write transaction, so processes starting together upgrade one after another.
    """
    _migrate(target, command.upgrade, revision)


def downgrade(target: Engine | str | None, revision: str) -> None:
    """Downgrade the database to `revision` (for operators and tests)."""
    _migrate(target, command.downgrade, revision)


def _migrate(target: Engine | str | None, action: Callable[[Config, str], None], revision: str) -> None:
    engine, own = _engine(target)
    try:
        config = alembic_config()
        with write_lock(engine), engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild tables; with foreign keys on, dropping a parent table
                # would cascade-delete its children. The pragma only works outside a transaction.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
            try:
                with connection.begin():
                    config.attributes["connection"] = connection
                    action(config, revision)
                    if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                        raise RuntimeError("migration left rows with broken foreign keys; rolled back")
            finally:
                if sqlite:
                    connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")
    finally:
        if own:
            engine.dispose()


def current(target: Engine | str | None = None) -> str | None:
    """The database's revision (None for an empty database)."""
    engine, own = _engine(target)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if own:
            engine.dispose()
