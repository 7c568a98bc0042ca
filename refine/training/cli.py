"""`python -m refine train`: fine-tune a critique-and-revise model on feedback records."""

from __future__ import annotations

import json

import click

from refine.cli_paths import OutputPath, int_list
from refine.training.config import TrainConfig
from refine.training.data import TrainingDataError


def _modules(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    return [m.strip() for m in value.split(",") if m.strip()]


@click.command("train")
@click.option(
    "--data", required=True, type=click.Path(dir_okay=False), help="Feedback records (JSONL or CSV)."
)
@click.option("--output", "-o", required=True, type=OutputPath(folder=True, path_type=str), help="Run folder to write.")
@click.option(
    "--eval-data",
    type=click.Path(dir_okay=False),
    help="Held-out records; default: hold out --heldout-share of --data by id.",
)
@click.option("--heldout-share", type=click.FloatRange(0, 0.9), default=0.1, show_default=True)
@click.option(
    "--base-model",
    default="",
    show_default=True,
    help='Model folder, GGUF file or hub id; "" = the embedded SmolLM2-135M-Instruct.',
)
@click.option(
    "--format",
    type=click.Choice(["rewrite", "edits"]),
    default=TrainConfig.format,
    show_default=True,
    help="CnR format to train: rewrite = critique + the whole revised response (large models); edits = "
    "critique + quoted-span edits (small models). Recorded in OUTPUT/cnr_format.json.",
)
@click.option("--full", is_flag=True, help="Full fine-tuning instead of LoRA.")
@click.option("--lora-r", type=int, default=TrainConfig.lora_r, show_default=True)
@click.option("--lora-alpha", type=int, default=TrainConfig.lora_alpha, show_default=True)
@click.option("--lora-dropout", type=float, default=TrainConfig.lora_dropout, show_default=True)
@click.option(
    "--target-modules",
    default="all-linear",
    show_default=True,
    callback=_modules,
    help="Comma-separated module names for LoRA, or all-linear.",
)
@click.option("--load-in-4bit", is_flag=True, help="QLoRA: load the base in 4-bit NF4 (bitsandbytes, GPU).")
@click.option("--epochs", type=float, default=TrainConfig.epochs, show_default=True)
@click.option("--max-steps", type=int, help="Stop after N optimizer steps (overrides --epochs).")
@click.option("--learning-rate", type=float, default=TrainConfig.learning_rate, show_default=True)
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True, help="Per device.")
@click.option("--grad-accum", type=int, default=TrainConfig.grad_accum, show_default=True)
@click.option(
    "--max-length",
    type=int,
    default=TrainConfig.max_length,
    show_default=True,
    help="Tokens per example (prompt + target); longer ones are cut at the end.",
)
@click.option("--gradient-checkpointing", is_flag=True, help="Trade compute for memory (large models).")
@click.option("--limit", type=int, help="Train on only N records (a seeded random subset).")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option(
    "--dtype", type=click.Choice(["auto", "bfloat16", "float32"]), default="auto", show_default=True
)
@click.option(
    "--lr-scheduler",
    default=TrainConfig.lr_scheduler,
    show_default=True,
    help="transformers scheduler name (constant_with_warmup, cosine, linear, …).",
)
@click.option("--warmup-steps", type=int, default=TrainConfig.warmup_steps, show_default=True)
@click.option(
    "--snapshot-records",
    default="",
    callback=int_list,
    help="Also save the adapter after these many training records (e.g. 100,250,500), into "
    "OUTPUT/snapshots/n<records>: the data-efficiency curve from one run.",
)
@click.option("--save-steps", type=int, help="Checkpoint every N steps (default: each epoch).")
@click.option(
    "--time-budget-min",
    type=float,
    help="Stop after this many minutes of training, evaluate and save (records seen so far).",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT/checkpoints.")
@click.option("--skip-invalid", is_flag=True, help="Leave out invalid records instead of refusing the file.")
def command(**options: object) -> None:
    """Fine-tune a CnR model (LoRA by default) on feedback records with TRL's SFT trainer.

    The data is checked before any model loads. OUTPUT gets the adapter (or full model), the
    tokenizer, settings.json, split.json (ids), heldout.jsonl, metrics.json and a model card.
    On GPUs run the same command under `accelerate launch --config_file accelerate_configs/…`.
    """
    from refine.training.trainer import prepare_split, train

    config = TrainConfig(**options)  # type: ignore[arg-type]
    try:
        split = prepare_split(config)  # fail fast on bad data, before torch is imported
    except (TrainingDataError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(split.train)} training records, {len(split.heldout)} held out", err=True)
    result = train(config, split=split)
    summary = {k: v for k, v in result.metrics.items() if k != "log_history"}
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"wrote {result.output}", err=True)
