"""`python -m refine experiment`: revise → judge → stats in one reproducible run folder.

    runs/NAME/
      command.txt     every invocation of the run (the first started it, later ones resumed it)
      settings.json   what decides the results — settings without secrets, the judge, the judge
                      prompt version, the input's hash — plus the software environment
      prompts.jsonl   the input rows used (after --limit)
      revised.jsonl   `refine revise` output        verdicts.jsonl  `refine judge` output
      stats.md, stats.json, winrate.png             the table, its numbers and the plot
      outcomes.md     what became of the rounds: accepted, rejected by rule, failed, unchanged, …

Running the same command again resumes: revise skips finished prompts, judge finished pairs,
and the statistics are recomputed. A run folder refuses a command with different settings.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, get_args

import click
from pydantic import SecretStr

from refine import __version__
from refine.backends import cnr_adapter, cnr_few_shot, cnr_format, cnr_model
from refine.cli_options import model_options, settings_from
from refine.cli_paths import OUTPUT_FOLDER
from refine.cnr_format import FORMAT_VERSIONS
from refine.judging.cli import judge_options, judge_spec, report_run
from refine.judging.judge import JudgeSpec, read_verdicts, run_judge
from refine.judging.report import summary_table, write_report
from refine.judging.stats import verdict_summaries
from refine.records import InvalidRecordsError, PromptRow, read_rows, write_jsonl
from refine.settings import Settings
from refine.textfiles import read_json_object

# The settings that decide a run's results (compared when a run is resumed); the others that
# are not secret are recorded too, under "execution".
RESULT_SETTINGS = {"base_backend", "base_model", "base_url", "cnr_backend", "cnr_model", "cnr_url", "cnr_adapter",
                   "cnr_mode", "cnr_format", "tokenizer", "rounds", "stop_early", "temperature", "top_p", "max_new_tokens",
                   "cnr_max_new_tokens", "dtype", "repetition_penalty", "no_repeat_ngram_size", "accept_max_repeats",
                   "accept_min_length_ratio", "accept_collapse_min_words", "accept_unchanged_similarity", "select",
                   "candidates"}


def public_settings(settings: Settings) -> dict[str, Any]:
    """The settings without secrets: no SecretStr field and no database URL (it may hold a password)."""
    secret = {name for name, field in Settings.model_fields.items()
              if field.annotation is SecretStr or SecretStr in get_args(field.annotation)} | {"database_url"}
    return settings.model_dump(mode="json", exclude=secret)


def run_manifest(settings: Settings, spec: JudgeSpec, prompts_sha256: str, *, vs_previous: bool) -> dict[str, Any]:
    """Everything that decides a run's results (no secrets)."""
    return {
        "settings": {k: v for k, v in public_settings(settings).items() if k in RESULT_SETTINGS},
        "cnr": {"model": cnr_model(settings) or "embedded", "adapter": cnr_adapter(settings),
                "few_shot": cnr_few_shot(settings), "format": FORMAT_VERSIONS[cnr_format(settings)]},
        "judge": {"backend": spec.backend, "model": spec.model or ("embedded" if spec.backend == "local" else None),
                  "url": spec.url,
                  "max_new_tokens": spec.max_new_tokens, "temperature": 0.0, "prompt_version": spec.prompt_version,
                  "vs_previous": vs_previous},
        "prompts_sha256": prompts_sha256,
    }


def environment() -> dict[str, Any]:
    """The software a run used: versions and the git commit of this checkout."""
    versions = {}
    for package in ("torch", "transformers", "peft", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"refine": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "git_commit": commit, "git_dirty": dirty, **versions}


def command_line(ctx: click.Context) -> str:
    """The options given on the command line, as one shell line (environment settings are in
    settings.json; API keys are never options)."""
    parts = ["python", "-m", "refine", ctx.info_name or "experiment"]
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            if value:
                parts.append(param.opts[0])
            elif param.secondary_opts:
                parts.append(param.secondary_opts[0])
        else:
            parts += [param.opts[0], str(value)]
    return shlex.join(parts)


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(old.keys() | new.keys())
                for d in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)]
    return [] if old == new else [f"{where}: {old!r} then, {new!r} now"]


def prepare(out: Path, rows: list[PromptRow], manifest_for: Callable[[str], dict[str, Any]], line: str,
            execution: dict[str, Any]) -> dict[str, Any]:
    """Create or reopen a run folder: write the inputs and settings, or check that they match
    the earlier run's (`execution` settings, such as timeouts, may differ); append the command
    line. `manifest_for(sha256 of the inputs)` gives the run's manifest, which is returned."""
    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.jsonl"
    fresh = out / "prompts.new.jsonl"
    write_jsonl(fresh, rows)
    sha = hashlib.sha256(fresh.read_bytes()).hexdigest()
    manifest = manifest_for(sha)
    settings_file = out / "settings.json"
    if settings_file.exists():
        fresh.unlink()
        before = read_json_object(settings_file, "a run's settings (an object)")
        diff = _differences(before.get("run"), manifest)
        if diff:
            raise click.ClickException(f"{out} was run with other settings; use another --out, or the same "
                                       "settings to resume:\n  " + "\n  ".join(diff))
    else:
        fresh.replace(prompts)
        settings_file.write_text(json.dumps({"run": manifest, "execution": execution, "environment": environment()},
                                            indent=2) + "\n", encoding="utf-8")
    with (out / "command.txt").open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return manifest


@click.command("experiment")
@click.option("--prompts", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL/CSV of {id?, prompt | messages, response?}: e.g. a strong model's answers to revise.")
@click.option("--out", required=True, type=OUTPUT_FOLDER,
              help="Run folder (created; an existing one with the same settings is resumed).")
@click.option("--rounds", type=click.IntRange(1, 10), default=5, show_default=True, help="Critique→revision rounds.")
@click.option("--stop-early/--no-stop-early", default=False, show_default=True,
              help="Stop a prompt's rounds when there is nothing to fix (off: every prompt gets every round, "
                   "as in the paper's table).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N prompts.")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Prompts/pairs in flight for remote backends [default 4].")
@click.option("--select", type=click.Choice(["none", "judge"]),
              help="'judge': accept a revision only when the judge prefers it (the same judge then selects and "
                   "evaluates, which favours revisions: report it as such) [default none].")
@click.option("--candidates", type=click.IntRange(1, 8), help="Revisions sampled per round [default 1].")
@judge_options
@model_options
@click.pass_context
def command(ctx: click.Context, prompts: Path, out: Path, limit: int | None, judge_backend: str, judge_model: str,
            judge_url: str | None, judge_max_new_tokens: int, judge_few_shot: bool | None, vs_previous: bool,
            **options: Any) -> None:
    """Run the paper's experiment on your prompts: revise each answer for N rounds, judge every
    round against the original in both orders, and tabulate the win rate per round with 95% CIs.

    \b
    Example (everything offline on the embedded 135M model: a pipeline check, not a measurement):
      python -m refine experiment --prompts samples/chatgpt_answers.jsonl --rounds 2 --limit 2 --out runs/try
    """
    from refine.revise import command as revise
    from refine.revise import outcome_summary

    spec = judge_spec(judge_backend, judge_model, judge_url, judge_max_new_tokens, judge_few_shot)
    if options.get("select") == "judge":  # the selecting judge is the evaluating one
        options.update(judge_backend=judge_backend, judge_model=judge_model, judge_url=judge_url)
    settings = settings_from(options)
    try:
        rows = read_rows(prompts, PromptRow, hint="give a file of {id?, prompt | messages, response?} rows as --prompts")[:limit]
    except InvalidRecordsError as exc:
        raise click.ClickException(str(exc)) from exc
    prepare(out, rows, lambda sha: run_manifest(settings, spec, sha, vs_previous=vs_previous), command_line(ctx),
            {k: v for k, v in public_settings(settings).items() if k not in RESULT_SETTINGS})

    failed = False
    try:
        ctx.invoke(revise, input_path=out / "prompts.jsonl", output=out / "revised.jsonl", **options)
    except SystemExit as exc:  # revise exits 1 when base answers failed; judge what was written
        failed = bool(exc.code)
    revised, verdicts = out / "revised.jsonl", out / "verdicts.jsonl"
    if revised.exists():
        try:
            run = run_judge(revised, verdicts, spec, settings, vs_previous=vs_previous)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        report_run(run, verdicts)
        failed = failed or bool(run.failed)

    if revised.exists() and (outcomes := outcome_summary(revised)):
        (out / "outcomes.md").write_text(f"# What became of the rounds\n\n{outcomes}\n", encoding="utf-8")
        click.echo(f"What became of the rounds:\n{outcomes}\n")
    summaries = verdict_summaries(read_verdicts(verdicts))
    title = (f"{prompts.name}: {len(rows)} prompts, {options['rounds']} rounds\n"
             f"judge {spec.label} ({spec.prompt_version})")
    write_report(summaries, out_dir=out, title=title, meta={"run_folder": str(out)})
    click.echo(f"{title}\n{summary_table(summaries)}")
    click.echo(f"run folder: {out} (rerun the same command to resume)", err=True)
    if failed:
        raise SystemExit(1)
