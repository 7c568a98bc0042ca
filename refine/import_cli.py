"""`python -m refine import FORMAT INPUT --output records.jsonl`: public datasets → feedback records."""

from __future__ import annotations

from pathlib import Path

import click

from refine.cli_paths import OUTPUT_FILE
from refine.importers import IMPORTERS, ImportSchemaError, import_file, no_change_records
from refine.records import write_jsonl


@click.command("import")
@click.argument("fmt", metavar="FORMAT", type=click.Choice(sorted(IMPORTERS)))
@click.argument("input_path", metavar="INPUT", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, type=OUTPUT_FILE, help="Records JSONL to write.")
@click.option(
    "--raw",
    type=click.Path(exists=True, dir_okay=False),
    help="Shepherd only: human_data_raw.jsonl (default: beside INPUT).",
)
@click.option(
    "--no-change-share",
    type=click.FloatRange(0, 0.9),
    default=0.0,
    show_default=True,
    help="Add labelled 'Nothing to fix.' records (response = a reference answer) making up this "
    "share of the output. Only for records whose revision is a correct reference (Shepherd).",
)
def command(fmt: str, input_path: str, output: Path, raw: str | None, no_change_share: float) -> None:
    """Convert INPUT in a public schema (FORMAT) into Refine's feedback records.

    \b
    helpsteer3-edit  context / original_response / feedback / edited_response
    shepherd         question / answer / feedback (+ --raw for the reference answers)
    aligner          question / answer / correction (critique is a derived sentence)
    """
    try:
        records = import_file(fmt, input_path, raw=raw)
    except ImportSchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    extra = no_change_records(records, no_change_share)
    count = write_jsonl(output, [*records, *extra])
    click.echo(f"wrote {count} records to {output} ({len(records)} imported, {len(extra)} derived no-change)")
