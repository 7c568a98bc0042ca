"""`python -m refine export …`: preference pairs, feedback records and raw tables as files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from refine.cli_paths import OUTPUT_FILE


def _db_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from db.engine import cli_url

    return cli_url(value)


DB_OPTION = click.option("--db", "db_url", default=None, metavar="URL", callback=_db_url,
                         help="SQLAlchemy URL or SQLite file path (default: REFINE_DATABASE_URL, else the SQLite file "
                              "in the data folder).")


def _engine(db_url: str | None):
    from db import open_database
    from refine.settings import Settings

    return open_database(db_url or Settings().database_url)


@click.group(name="export")
def command() -> None:
    """Export votes, feedback and tables from the database (streamed: constant memory)."""


@command.command()
@click.argument("out", type=OUTPUT_FILE)
@DB_OPTION
def preferences(out: Path, db_url: str | None) -> None:
    """Votes with a winner as DPO preference pairs (JSONL).

    One line per vote that chose a side, in TRL's conversational preference format: prompt
    (the chat up to the user's turn), chosen and rejected (one assistant message each).
    Ties and both-bad votes have no winner and are left out.
    """
    from db.export import preference_rows
    from refine.records import write_jsonl

    count = write_jsonl(out, preference_rows(_engine(db_url)))
    click.echo(f"wrote {count} preference pair(s) to {out}", err=True)


@command.command()
@click.argument("out", type=OUTPUT_FILE)
@DB_OPTION
def feedback(out: Path, db_url: str | None) -> None:
    """Feedback as training records (JSONL).

    One feedback record (what `refine train` reads) per feedback that has both a written
    critique and an edited answer: response = the version judged, critique = the user's,
    revision = the edited answer. Feedback with only one of them is skipped and counted.
    """
    from db.export import feedback_rows
    from refine.records import write_jsonl

    skipped: Counter[str] = Counter()
    count = write_jsonl(out, feedback_rows(_engine(db_url), skipped))
    click.echo(f"wrote {count} feedback record(s) to {out}", err=True)
    for reason, n in sorted(skipped.items()):
        click.echo(f"skipped {n}: {reason}", err=True)


@command.command()
@click.argument("name")
@click.argument("out", type=OUTPUT_FILE)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Default: from OUT's suffix (.csv → csv, else jsonl).")
@DB_OPTION
def table(name: str, out: Path, fmt: str | None, db_url: str | None) -> None:
    """One table's raw rows as JSONL or CSV.

    NAME is one of conversations, turns, rounds, votes, feedback.
    """
    from db.errors import InvalidInput
    from db.export import table_columns, table_rows, write_csv
    from refine.records import write_jsonl

    engine = _engine(db_url)
    try:
        rows = table_rows(engine, name)
        fmt = fmt or ("csv" if out.suffix.lower() == ".csv" else "jsonl")
        count = write_csv(out, rows, table_columns(name)) if fmt == "csv" else write_jsonl(out, rows)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {count} row(s) of {name} to {out}", err=True)
