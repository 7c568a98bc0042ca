"""Command-line options shared by the commands that talk to models; each maps to a Settings
field and, when given, overrides its REFINE_* environment variable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from pydantic import ValidationError

from refine.settings import Settings

_BACKENDS = click.Choice(["local", "tgi", "openai"])

MODEL_OPTIONS = [
    click.option("--base-backend", type=_BACKENDS, help="Backend of the base model [env REFINE_BASE_BACKEND; default local]."),
    click.option("--base-model", help="Base model: folder, .gguf file, hub id or served name [default: embedded SmolLM2-135M-Instruct]."),
    click.option("--base-url", help="Server URL of the base model (tgi/openai)."),
    click.option("--cnr-backend", type=_BACKENDS, help="Backend of the critique-and-revise model [default local]."),
    click.option("--cnr-model", help="CnR model [default: same as the base model]."),
    click.option("--cnr-url", help="Server URL of the CnR model (tgi/openai)."),
    click.option("--cnr-adapter", help="PEFT adapter folder (local) or adapter id (tgi); 'none' for no adapter [default: the shipped adapter]."),
    click.option("--cnr-format", type=click.Choice(["auto", "rewrite", "edits"]), help="CnR format: rewrite (critique + whole revision), edits (critique + quoted-span edits); auto = what the adapter records [default auto]."),
    click.option("--cnr-mode", type=click.Choice(["auto", "trained", "few-shot"]), help="Prompt the CnR model as trained, or few-shot for an untuned model."),
    click.option("--tokenizer", help="Tokenizer folder for the tgi backend's chat template."),
    click.option("--temperature", type=float, help="Sampling temperature; 0 = greedy [default 0]."),
    click.option("--max-new-tokens", type=int, help="Max new tokens of a base answer [default 512]."),
    click.option("--cnr-max-new-tokens", type=int, help="Max new tokens of a critique + revision [default 768]."),
    click.option("--repetition-penalty", type=float, help="Local backend: penalty on tokens the generation already wrote, 1 = off [default from REFINE_REPETITION_PENALTY]."),
    click.option("--no-repeat-ngram-size", type=int, help="Local backend: forbid repeating an n-gram of this many tokens, 0 = off."),
    click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]), help="Local model precision [default auto: bf16 where the CPU supports it]."),
    click.option("--timeout", type=float, help="Seconds to wait for the first/next token from a server [default 60]."),
    click.option("--retries", type=int, help="Retries before the first token [default 2]."),
]


# The judge that `--select judge` asks (the `judge` command has its own, with defaults shown).
SELECTION_JUDGE_OPTIONS = [
    click.option("--judge-backend", type=_BACKENDS, help="Backend of the selecting judge [env REFINE_JUDGE_BACKEND; default local]."),
    click.option("--judge-model", help="Judge model: folder, .gguf, hub id or served name [default: the embedded 135M "
                                       "model, which is NOT a meaningful judge]."),
    click.option("--judge-url", help="Server URL of the judge (tgi/openai) [env REFINE_JUDGE_URL]; key in REFINE_JUDGE_API_KEY."),
]


def selection_judge_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the selecting judge's options to a click command."""
    for option in reversed(SELECTION_JUDGE_OPTIONS):
        func = option(func)
    return func


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the model/backend options to a click command."""
    for option in reversed(MODEL_OPTIONS):
        func = option(func)
    return func


def settings_from(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment with the given (non-None) CLI values on top; a clear
    click error for invalid values."""
    fields = Settings.model_fields
    given = {k: v for k, v in overrides.items() if v is not None and k in fields}
    try:
        return Settings(**given)
    except ValidationError as exc:
        from refine.errors import settings_problem

        raise click.UsageError(settings_problem(exc)) from exc
