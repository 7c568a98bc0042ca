"""`python -m refine stats`: win rate per round from judge verdicts or from the database's
votes (with bootstrap CIs, a table, a plot and JSON), or AlpacaEval-style metrics of verdict
files made by other tools."""

from __future__ import annotations

from pathlib import Path

import click

from db.export_cli import DB_OPTION
from refine.cli_paths import OUTPUT_FILE, OUTPUT_FOLDER
from refine.errors import RefineError
from refine.judging.report import markdown, summary_table, write_report
from refine.judging.stats import RoundSummary


def vote_summaries(db_url: str | None, *, n_boot: int, seed: int) -> list[RoundSummary]:
    """Per-round win rates of the stored votes, vs the original and vs the previous round (from
    round 2: round 1's previous answer is the original): the blind votes (the app's Arena), then,
    apart, the votes cast beside the app's Refinement panel ("not blind": it names the versions). A
    round with fewer than refine.winrate.MIN_VOTES votes gets no CI ("too few votes")."""
    from db import open_database
    from db.stats import vote_win_rates
    from refine.settings import Settings

    engine = open_database(db_url or Settings().database_url)
    try:
        return [RoundSummary(f"vs {versus}" + ("" if blind else " (not blind)"), rate, both_bad=rate.both_bad)
                for blind in (True, False)
                for versus in ("original", "previous")
                for rate in vote_win_rates(engine, versus, blind=blind, n_boot=n_boot, seed=seed)
                if versus == "original" or rate.round > 1]
    finally:
        engine.dispose()


def _foreign(path: Path, fmt: str, columns: str | None, values: str | None, json_path: Path | None) -> None:
    import json

    from refine.verdict_formats import (
        head_to_head,
        label_preferences,
        parse_mapping,
        read_alpaca_eval,
        read_table,
    )

    if fmt == "alpaca_eval":
        groups = read_alpaca_eval(path)
    else:
        labels = label_preferences(parse_mapping(values)) if values else None
        groups = read_table(path, parse_mapping(columns), labels)
    results = [head_to_head(prefs, group) for group, prefs in groups.items()]
    header = ["group", "win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
              "discrete_win_rate", "dropped"]
    rows = [[r.group, f"{r.win_rate:.2f}", f"{r.standard_error:.2f}", r.n_wins, r.n_wins_base, r.n_draws,
             r.n_total, f"{r.discrete_win_rate:.2f}", r.n_dropped] for r in results]
    click.echo(markdown(header, rows))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"source": str(path), "format": fmt, "metrics": [r.as_dict() for r in results]},
                                        indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {json_path}", err=True)


@click.command("stats")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--verdicts", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verdicts of `refine judge` (same as FILE with --format verdicts).")
@DB_OPTION
@click.option("--format", "fmt", type=click.Choice(["verdicts", "alpaca_eval", "table"]), default="verdicts",
              show_default=True, help="What FILE is: our verdicts, AlpacaEval's annotations.json, or a CSV/JSONL table.")
@click.option("--columns", help="For --format table: preference=COLUMN[,group=COLUMN[+COLUMN…]].")
@click.option("--values", help="For --format table with labels instead of AlpacaEval numbers: "
              "win=LABEL[|LABEL…],loss=…,tie=… (win = the second output, the model evaluated, wins).")
@click.option("--out-dir", type=OUTPUT_FOLDER, help="Save stats.md, stats.json and winrate.png here.")
@click.option("--plot", type=OUTPUT_FILE, help="Save the plot (PNG) here.")
@click.option("--json", "json_path", type=OUTPUT_FILE, help="Save the numbers (JSON) here.")
@click.option("--title", help="Title of the plot and the saved table.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(100), default=2000, show_default=True,
              help="Bootstrap resamples for the 95% CIs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
def command(file: Path | None, verdicts: Path | None, db_url: str | None, fmt: str, columns: str | None,
            values: str | None, out_dir: Path | None, plot: Path | None, json_path: Path | None, title: str | None,
            n_boot: int, seed: int) -> None:
    """Win rate of each round against the original (and the previous round), ties counted
    half, with bootstrap 95% CIs over prompts (verdicts) or turns (votes; a round with fewer
    than 10 votes gets none: "too few votes").

    \b
    Sources (one of):
      --verdicts verdicts.jsonl        verdicts of `refine judge`
      --db URL (or neither)            the votes stored in the database (blind ones and the
                                       others, "not blind", apart)
      FILE --format alpaca_eval        AlpacaEval's annotations.json
      FILE --format table --columns preference=winner --values win=model_b,loss=model_a,tie=tie
    """
    if file is not None and verdicts is not None:
        raise click.UsageError("give FILE or --verdicts, not both")
    path = verdicts or file
    if path is not None and db_url is not None:
        raise click.UsageError("give a file or --db, not both")
    # Problems with the files, the mappings or the database are explained by the CLI (refine.errors).
    if path is not None and fmt != "verdicts":
        if plot is not None:
            raise click.UsageError("a plot is drawn per round; other tools' verdict files have no rounds")
        try:
            _foreign(path, fmt, columns, values, json_path or (out_dir / "stats.json" if out_dir else None))
        except RefineError:
            raise
        except ValueError as exc:  # a --columns / --values mapping that does not fit
            raise click.ClickException(f"{exc} (in --columns / --values); see `python -m refine stats --help`") from exc
        return
    if path is not None:
        from refine.judging.judge import load_verdicts
        from refine.judging.stats import verdict_summaries

        summaries, unit, source = verdict_summaries(load_verdicts(path), n_boot=n_boot, seed=seed), "prompts", str(path)
    else:
        summaries, unit, source = vote_summaries(db_url, n_boot=n_boot, seed=seed), "turns", "votes"
    click.echo(summary_table(summaries, unit=unit))
    written = write_report(summaries, out_dir=out_dir, plot=plot, json_path=json_path, title=title, unit=unit,
                           meta={"source": source})
    if written:
        click.echo("wrote " + ", ".join(map(str, written)), err=True)
    else:
        click.echo("(add --out-dir DIR to save the table, the plot and JSON)", err=True)
