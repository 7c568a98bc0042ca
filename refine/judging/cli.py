"""`python -m refine judge`: pairwise verdicts for a `refine revise` output file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from refine.cli_options import settings_from
from refine.cli_paths import OUTPUT_FILE
from refine.judging.judge import JudgeRun, JudgeSpec, run_judge
from refine.records import InvalidRecordsError

JUDGE_OPTIONS = [
    click.option("--judge-backend", type=click.Choice(["local", "tgi", "openai"]), default="local",
                 envvar="REFINE_JUDGE_BACKEND", show_envvar=True, help="Backend of the judge [default local]."),
    click.option("--judge-model", default="", envvar="REFINE_JUDGE_MODEL", show_envvar=True,
                 help="Judge model: folder, .gguf, hub id or served name [default: embedded SmolLM2-135M-Instruct, "
                      "which is NOT a meaningful judge: it only lets you try the pipeline]."),
    click.option("--judge-url", envvar="REFINE_JUDGE_URL", show_envvar=True, help="Server URL of the judge (tgi/openai)."),
    click.option("--judge-max-new-tokens", type=click.IntRange(1, 32768), default=32, show_default=True,
                 help="Max new tokens of a verdict (raise it for models that think before answering)."),
    click.option("--judge-few-shot/--judge-zero-shot", default=None,
                 help="Show the judge two worked examples first, for small models that ignore the format otherwise "
                      "[default: few-shot for the embedded model only]."),
    click.option("--vs-previous", is_flag=True, help="Also judge round k against round k−1 (k ≥ 2)."),
]


def judge_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the judge options to a click command."""
    for option in reversed(JUDGE_OPTIONS):
        func = option(func)
    return func


def judge_spec(judge_backend: str, judge_model: str, judge_url: str | None, judge_max_new_tokens: int,
               judge_few_shot: bool | None) -> JudgeSpec:
    """The JudgeSpec of the judge options; the API key comes from REFINE_JUDGE_API_KEY only
    (else the backend's own default, OPENAI_API_KEY / HF_TOKEN) and is never written anywhere."""
    if judge_backend != "local" and not judge_url:
        raise click.UsageError(f"--judge-backend {judge_backend} needs --judge-url (or REFINE_JUDGE_URL)")
    key = os.environ.get("REFINE_JUDGE_API_KEY")
    few_shot = judge_few_shot if judge_few_shot is not None else (judge_backend == "local" and not judge_model)
    return JudgeSpec(backend=judge_backend, model=judge_model, url=judge_url, api_key=SecretStr(key) if key else None,
                     max_new_tokens=judge_max_new_tokens, few_shot=few_shot)


def report_run(run: JudgeRun, output: Path) -> None:
    """One line on what a judge run did; exit status 1 when pairs failed."""
    parts = [f"{run.judged} pair(s) judged", f"{run.skipped} incomplete round(s) recorded as skipped"]
    if run.already:
        parts.append(f"{run.already} already in {output}")
    if run.failed:
        parts.append(f"{run.failed} failed (not written; rerun to retry)")
    click.echo("; ".join(parts), err=True)


@click.command("judge")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Output of `refine revise` (JSONL with rounds).")
@click.option("--output", required=True, type=OUTPUT_FILE,
              help="JSONL to append verdicts to; pairs already in it are skipped (resume).")
@judge_options
@click.option("--concurrency", type=click.IntRange(1, 256), help="Pairs in flight at once for a remote judge [default 4].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), help="Local judge precision.")
@click.option("--timeout", type=float, help="Seconds to wait for the first/next token from a server [default 60].")
@click.option("--retries", type=int, help="Retries before the first token [default 2].")
def command(input_path: Path, output: Path, judge_backend: str, judge_model: str, judge_url: str | None,
            judge_max_new_tokens: int, judge_few_shot: bool | None, vs_previous: bool, **options: Any) -> None:
    """Judge each round's revision against the original answer (and with --vs-previous against
    the round before), every pair in both orders, with an LLM through any backend.

    A verdict that flips with the order counts as a tie (recorded as inconsistent); an answer
    without a valid `Verdict: A|B|tie` line is recorded as unparseable. Failed or cancelled
    rounds are recorded as skipped. Summarise with `python -m refine stats --verdicts OUTPUT`.

    \b
    Example (a remote judge on an OpenAI-compatible server):
      python -m refine judge --input revised.jsonl --output verdicts.jsonl \\
        --judge-backend openai --judge-url http://localhost:8000/v1 --judge-model Qwen/Qwen2.5-72B-Instruct
    """
    spec = judge_spec(judge_backend, judge_model, judge_url, judge_max_new_tokens, judge_few_shot)
    settings = settings_from(options)
    try:
        run = run_judge(input_path, output, spec, settings, vs_previous=vs_previous)
    except (InvalidRecordsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    report_run(run, output)
    if run.failed:
        raise SystemExit(1)
