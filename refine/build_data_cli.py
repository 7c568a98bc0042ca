"""`python -m refine build-data --source DIR --output DIR`: the CnR training set with edits, its
held-out split and its data card, from the raw public datasets (see refine/build_data.py)."""

from __future__ import annotations

from pathlib import Path

import click

from refine.build_data import BuildOptions, build, summary, write_build
from refine.cli_paths import OUTPUT_FOLDER
from refine.errors import ExplainingCommand

DEFAULTS = BuildOptions()


@click.command("build-data", cls=ExplainingCommand)
@click.option("--source", "source", default="../shared/data", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the raw datasets: lamp/, coachlm/, shepherd/, alpaca_eval/ (as in the shared "
                   "data folder; its README.md gives their provenance).")
@click.option("--output", "-o", default="data/cnr", show_default=True, type=OUTPUT_FOLDER,
              help="Folder to write train.jsonl, heldout.jsonl, card.json and README.md into (created).")
@click.option("--train-size", type=click.IntRange(min=0), default=DEFAULTS.train_size, show_default=True,
              help="Records in train.jsonl: a seeded sample of the training side, sources in proportion "
                   "(all of them if fewer; 0 = all).")
@click.option("--nothing-to-fix-share", type=click.FloatRange(0, 0.9), default=DEFAULTS.nothing_to_fix_share,
              show_default=True,
              help="Share of 'Nothing to fix.' records (GPT-4 AlpacaEval answers) in each file, as far as "
                   "there are enough.")
@click.option("--heldout-share", type=click.FloatRange(0.01, 0.9), default=DEFAULTS.heldout_share,
              show_default=True, help="Share held out, by a hash of each record's meta.parent_id.")
@click.option("--max-chars", type=click.IntRange(min=200), default=DEFAULTS.max_chars, show_default=True,
              help="Drop records longer than this: prompt + response + critique + the longer of revision "
                   "and rendered edits (~4 characters per token).")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True, help="Seed of the sample and order.")
@click.option("--skip-missing", is_flag=True,
              help="Build without a source whose files are missing (with a warning) instead of refusing.")
def command(source: Path, output: Path, train_size: int, nothing_to_fix_share: float, heldout_share: float,
            max_chars: int, seed: int, skip_missing: bool) -> None:
    """Build CnR training records with edits from the raw public datasets in --source.

    \b
    lamp         writers' edits of LLM paragraphs (critique derived from edit categories)
    coachlm      expert revisions that are edits of the response (critique derived)
    shepherd     human critiques, revision = reference answer (short answers only)
    alpaca_eval  GPT-4 answers as "Nothing to fix." (the 40 evaluation prompts never used)

    Writes OUTPUT/train.jsonl, OUTPUT/heldout.jsonl (never train on it) and the data card
    OUTPUT/card.json + OUTPUT/README.md. The whole set is non-commercial (CC BY-NC 4.0).
    Same inputs and options give byte-identical files.
    """
    options = BuildOptions(max_chars=max_chars, nothing_to_fix_share=nothing_to_fix_share,
                           heldout_share=heldout_share, train_size=train_size, seed=seed)
    click.echo(f"reading {source} …", err=True)
    result = build(source, options, skip_missing=skip_missing, warn=lambda text: click.echo(text, err=True))
    for line in summary(result):
        click.echo(line, err=True)
    paths = write_build(result, output)
    click.echo(f"wrote {len(result.train)} train and {len(result.heldout)} heldout records to {output} "
               f"(data card: {paths['README.md']})", err=True)
