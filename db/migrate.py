"""Schema migrations, run from code: the app and the CLI upgrade at start."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine

from db.engine import (
    URL_SETTING,
    WRITE_OPTION,
    DatabaseError,
    connection_problem,
    make_engine,
    shown_url,
    write_lock,
)
from refine.errors import first_line

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


def known_revisions() -> set[str]:
    """Every revision id shipped in the repository."""
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


class DatabaseNewerThanCode(DatabaseError):
    """The database is stamped with a revision this code does not have (a newer Refine wrote it)."""


def check_known(revisions: str | tuple[str, ...] | None, engine: Engine) -> None:
    """Refuse a database stamped with a revision unknown to this code. (Compared exactly: Alembic
    would take an unknown `0005` for a prefix of the known `0005a` and treat the database as if
    it had that schema.)"""
    if revisions is None:
        return
    stamped = (revisions,) if isinstance(revisions, str) else revisions
    unknown = [r for r in stamped if r not in known_revisions()]
    if unknown:
        raise DatabaseNewerThanCode(
            f"the database {shown_url(engine.url)} was written by a newer version of Refine (revision "
            f"{', '.join(unknown)}, unknown to this one, whose newest is {head()}); upgrade Refine to use it, "
            f"or set {URL_SETTING} to another database")


def _heads(connection: Any) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


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
        with reachable(engine):
            _migrate_on(engine, action, revision)
    finally:
        if own:
            engine.dispose()


@contextmanager
def reachable(engine: Engine) -> Iterator[None]:
    """Turn a failure to open, reach or write the database into one clear DatabaseError."""
    from sqlalchemy import exc as sa

    try:
        yield
    except (sa.OperationalError, sa.InterfaceError) as exc:
        raise connection_problem(engine, exc) from exc
    except sa.DatabaseError as exc:
        if type(exc) is not sa.DatabaseError:  # integrity, programming errors…: not about reaching it
            raise
        raise connection_problem(engine, exc) from exc  # e.g. SQLite's "file is not a database"


def _migrate_on(engine: Engine, action: Callable[[Config, str], None], revision: str) -> None:
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
                check_known(_heads(connection), engine)
                config.attributes["connection"] = connection
                try:
                    action(config, revision)
                except CommandError as exc:  # e.g. an unknown target revision
                    raise DatabaseError(f"cannot migrate to revision {revision!r}: {first_line(exc)}; give one of "
                                        f"{', '.join(sorted(known_revisions()))} (or head)") from exc
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("migration left rows with broken foreign keys; rolled back")
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = ON")


def current(target: Engine | str | None = None) -> str | None:
    """The database's revision (None for an empty database), as stamped: possibly one unknown to
    this code (see check_known)."""
    engine, own = _engine(target)
    try:
        with reachable(engine), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if own:
            engine.dispose()
