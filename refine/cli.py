"""`python -m refine …`: the command line. Each command lives in its own module and is
imported only when it runs, so `--help` stays fast and light."""

from __future__ import annotations

import importlib

import click

from refine.errors import DEBUG_OPTION, ExplainErrors

# name -> "module:attribute" of a click.Command
COMMANDS: dict[str, tuple[str, str]] = {
    "revise": ("refine.revise", "Critique and revise answers in a JSONL file, round after round."),
    "train": ("refine.training.cli", "Fine-tune a critique-and-revise model on feedback records."),
    "evaluate-model": ("refine.training.evaluate", "Score CnR models on held-out feedback records."),
    "sweep": ("refine.training.sweep", "Data-efficiency curve: train on growing subsets, evaluate each."),
    "judge": ("refine.judging.cli", "Judge revised answers against the originals with an LLM, both orders."),
    "stats": ("refine.stats_cli", "Win rate per round from votes or verdicts, with 95% CIs and a plot."),
    "experiment": ("refine.judging.experiment", "revise → judge → stats in one reproducible run folder."),
    "export": ("db.export_cli", "Export votes, feedback and tables from the database."),
    "db": ("db.cli", "Database schema: upgrade or show the current revision."),
    "import": ("refine.import_cli", "Convert public feedback datasets into Refine's records."),
    "build-data": ("refine.build_data_cli", "Build CnR training records with edits, split and data card, from raw datasets."),
}


class LazyGroup(ExplainErrors, click.Group):
    """A group whose subcommands are imported on first use. An error escaping a command is one
    sentence on stderr and exit status 1, never a traceback (see refine.errors; `--debug` or
    REFINE_DEBUG=1 shows it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=None, version=__import__("refine").__version__)
@DEBUG_OPTION
def main() -> None:
    """Refine: improve LLM answers with natural-language critiques and revisions.

    Settings come from REFINE_* environment variables (see README); flags override them.
    """
