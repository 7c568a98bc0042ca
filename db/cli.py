"""`python -m refine db upgrade|current`: the database schema, for operators."""

from __future__ import annotations

import click

from db.export_cli import DB_OPTION


def _url(db_url: str | None) -> str | None:
    from refine.settings import Settings

    return db_url or Settings().database_url  # --db is already a URL (DB_OPTION)


@click.group(name="db")
def command() -> None:
    """Database schema: upgrade or show the current revision."""


@command.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@DB_OPTION
def upgrade(revision: str, db_url: str | None) -> None:
    """Upgrade the schema (the app and the CLI also do this at start)."""
    from db import migrate

    url = _url(db_url)
    before = migrate.current(url)
    migrate.upgrade(url, revision)
    click.echo(f"{before or 'empty'} -> {migrate.current(url)}")


@command.command()
@DB_OPTION
def current(db_url: str | None) -> None:
    """Show the database's revision and the newest one shipped."""
    from db import migrate
    from db.engine import make_engine

    engine = make_engine(_url(db_url))
    try:
        revision = migrate.current(engine)
        migrate.check_known(revision, engine)  # a newer Refine's database: no upgrade can help
    finally:
        engine.dispose()
    head = migrate.head()
    state = "up to date" if revision == head else "needs `python -m refine db upgrade`"
    click.echo(f"{revision or 'empty'} (head: {head}, {state})")
