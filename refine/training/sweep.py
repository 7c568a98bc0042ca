"""`python -m refine sweep`: the data-efficiency curve — train on growing subsets of the training
split with identical settings, evaluate each (and the untuned base) on the same held-out records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from refine.training.config import TrainConfig
from refine.training.data import TrainingDataError
from refine.training.evaluate import BASE, evaluate_model, markdown_table

SWEEP_COLUMNS = ("model", "train_records", "loss", "perplexity", "generated", "parse_rate",
                 "nothing_to_fix_share", "mean_critique_chars", "mean_revision_chars", "train_minutes")
_VOLATILE = {"output", "limit", "resume"}  # settings that may differ between the runs of one sweep


def _same_settings(a: TrainConfig, b: TrainConfig) -> bool:
    keep = lambda c: {k: v for k, v in c.to_json().items() if k not in _VOLATILE}  # noqa: E731
    return keep(a) == keep(b)


def run_size(config: TrainConfig, size: int | None, folder: Path) -> dict[str, Any]:
    """Train one point of the curve (or reuse a finished run with the same settings)."""
    from refine.training.trainer import train

    run = replace(config, output=str(folder), limit=size, resume=True)
    done = folder / "metrics.json"
    if done.exists() and (folder / "settings.json").exists() and _same_settings(
            TrainConfig.load(folder / "settings.json"), run):
        click.echo(f"reusing finished run {folder}", err=True)
        return json.loads(done.read_text(encoding="utf-8"))
    return train(run).metrics


def plot(rows: list[dict[str, Any]], base: dict[str, Any], path: Path) -> None:
    """Held-out loss and parse rate vs training records, with the base model as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["train_records"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((left, "loss", "held-out loss (critique + revision)"),
                           (right, "parse_rate", "share of outputs that parse")):
        ax.plot(xs, [r[key] for r in rows], "o-", label="fine-tuned (LoRA)")
        if key in base:
            ax.axhline(base[key], color="grey", linestyle="--", label="untuned base, few-shot")
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("training records")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    right.set_ylim(0, 1.05)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command("sweep")
@click.option("--data", default="data/shepherd/records.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("--output", "-o", default="runs/sweep", show_default=True, type=click.Path(file_okay=False))
@click.option("--sizes", default="100,250,500,all", show_default=True, help="Training set sizes; 'all' = every record.")
@click.option("--settings", "settings_path", type=click.Path(exists=True, dir_okay=False),
              help="settings.json of a run to copy the training settings from (default: train's defaults).")
@click.option("--limit", type=int, default=40, show_default=True, help="Held-out records used for generation.")
@click.option("--max-new-tokens", type=int, default=160, show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG to write (default OUTPUT/sweep.png).")
def command(data: str, output: str, sizes: str, settings_path: str | None, limit: int, max_new_tokens: int,
            plot_path: str | None) -> None:
    """Train on 100/250/500/all records with identical settings, evaluate each and the untuned
    base on the same held-out split; write sweep.json, sweep.md and a plot. Finished runs are
    reused, so an interrupted sweep continues where it stopped."""
    from refine.training.trainer import prepare_split

    out = Path(output)
    base_config = TrainConfig.load(settings_path) if settings_path else TrainConfig(data=data, output=output)
    base_config = replace(base_config, data=data, eval_data=None, output=output)
    try:
        split = prepare_split(base_config)
    except (TrainingDataError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    heldout = split.heldout
    points = [None if s.strip() == "all" else int(s) for s in sizes.split(",")]
    rows = []
    for size in points:
        folder = out / (f"n{size}" if size else "all")
        metrics = run_size(base_config, size, folder)
        click.echo(f"evaluating {folder} …", err=True)
        result = evaluate_model(str(folder), heldout, limit=limit, max_new_tokens=max_new_tokens,
                                samples=folder / "heldout_generations.jsonl")
        result.update(train_records=metrics["train_records"],
                      train_minutes=round(metrics.get("train_runtime_s", 0) / 60, 1))
        rows.append(result)
    click.echo("evaluating the untuned base …", err=True)
    base = evaluate_model(BASE, heldout, base_model=base_config.base_model, limit=limit,
                          max_new_tokens=max_new_tokens, samples=out / "base_generations.jsonl")
    base["train_records"] = 0
    table = markdown_table([base, *rows], SWEEP_COLUMNS)
    note = (f"\nHeld-out: {len(heldout)} records (loss over all; generation metrics over the first "
            f"{min(limit, len(heldout))}, greedy, max {max_new_tokens} new tokens).\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.md").write_text(table + "\n" + note, encoding="utf-8")
    (out / "sweep.json").write_text(json.dumps({"base": base, "runs": rows}, indent=2) + "\n", encoding="utf-8")
    plot(rows, base, Path(plot_path) if plot_path else out / "sweep.png")
    click.echo(table + "\n" + note)
