"""`python -m refine sweep`: the data-efficiency curve — held-out loss and parse rate after
100 / 250 / 500 / all training records, next to the untuned base model.

One run makes every point: the training records come in a fixed seeded order, one example per
step at a constant learning rate, and the adapter is saved after 100, 250 and 500 records. The
adapter after N records is then exactly the adapter a run on those N records alone would give
(same order, same steps, same settings), at the cost of one run instead of four."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from refine.cli_paths import OutputPath, int_list
from refine.training.config import TrainConfig
from refine.training.data import TrainingDataError, load_records
from refine.training.evaluate import BASE, evaluate_model, markdown_table

SWEEP_COLUMNS = (
    "model",
    "train_records",
    "loss",
    "perplexity",
    "generated",
    "parse_rate",
    "nothing_to_fix_share",
    "mean_critique_chars",
    "mean_revision_chars",
)
_VOLATILE = {"output", "resume", "snapshot_records"}  # may differ between runs of equal training


def _same_training(a: TrainConfig, b: TrainConfig) -> bool:
    def keep(c: TrainConfig) -> dict[str, Any]:
        return {k: v for k, v in c.to_json().items() if k not in _VOLATILE}

    return keep(a) == keep(b)


def ensure_run(config: TrainConfig) -> dict[str, Any]:
    """Train the sweep's run, or reuse a finished one with the same settings and snapshots."""
    from refine.training.trainer import train

    folder = Path(config.output)
    done = folder / "metrics.json"
    snapshots_done = all((folder / "snapshots" / f"n{n}").is_dir() for n in config.snapshot_records)
    if (
        done.exists()
        and snapshots_done
        and _same_training(TrainConfig.load(folder / "settings.json"), config)
    ):
        click.echo(f"reusing the finished run in {folder}", err=True)
        return json.loads(done.read_text(encoding="utf-8"))
    return train(replace(config, resume=True)).metrics


def cached_eval(
    ref: str, heldout: list[Any], result_path: Path, *, base_model: str, limit: int, max_new_tokens: int
) -> dict[str, Any]:
    """evaluate_model, or the result an earlier `evaluate-model --output result_path` wrote with
    the same held-out records and generation settings."""
    if result_path.exists():
        saved = json.loads(result_path.read_text(encoding="utf-8"))
        saved = saved[0] if isinstance(saved, list) else saved
        if (
            saved.get("records") == len(heldout)
            and saved.get("max_new_tokens") == max_new_tokens
            and saved.get("generated") == min(limit, len(heldout))
        ):
            click.echo(f"reusing {result_path}", err=True)
            return saved
    click.echo(f"evaluating {ref} …", err=True)
    result = evaluate_model(
        ref,
        heldout,
        base_model=base_model,
        limit=limit,
        max_new_tokens=max_new_tokens,
        samples=result_path.with_suffix(".generations.jsonl"),
    )
    result_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def plot(rows: list[dict[str, Any]], base: dict[str, Any], path: Path) -> None:
    """Held-out loss and parse rate vs training records, with the base model as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["train_records"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in (
        (left, "loss", "held-out loss (critique + revision)"),
        (right, "parse_rate", "share of outputs that parse"),
    ):
        ax.plot(xs, [r[key] for r in rows], "o-", label="fine-tuned (LoRA)")
        if key in base:
            ax.axhline(base[key], color="grey", linestyle="--", label="untuned base, few-shot")
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.minorticks_off()
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
@click.option(
    "--data", default="data/shepherd/records.jsonl", show_default=True, type=click.Path(dir_okay=False)
)
@click.option(
    "--output",
    "-o",
    default="runs/sweep",
    show_default=True,
    type=OutputPath(folder=True, path_type=str),
    help="Run folder (a finished run with the same settings is reused, e.g. the shipped adapter).",
)
@click.option(
    "--sizes",
    default="100,250,500",
    show_default=True,
    callback=int_list,
    help="Training-set sizes to snapshot; the full training split is always the last point.",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(exists=True, dir_okay=False),
    help="settings.json to copy the training settings from (default: OUTPUT/settings.json if "
    "present, else train's defaults).",
)
@click.option(
    "--limit", type=int, default=40, show_default=True, help="Held-out records used for generation."
)
@click.option("--max-new-tokens", type=int, default=160, show_default=True)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG to write (default OUTPUT/sweep.png)."
)
def command(
    data: str,
    output: str,
    sizes: list[int],
    settings_path: str | None,
    limit: int,
    max_new_tokens: int,
    plot_path: str | None,
) -> None:
    """Data-efficiency curve: the adapter after 100/250/500/all training records (one run, see
    module doc) and the untuned base, all evaluated on the same held-out split; writes
    OUTPUT/sweep.json, OUTPUT/sweep.md and a plot."""
    from refine.training.trainer import prepare_split

    out = Path(output)
    existing = Path(settings_path) if settings_path else out / "settings.json"
    config = TrainConfig.load(existing) if existing.exists() else TrainConfig(data=data, output=output)
    points = sorted(sizes)
    config = replace(config, data=data, output=output, snapshot_records=points, limit=None)
    try:
        prepare_split(config)  # bad data fails here, before any model loads
        metrics = ensure_run(config)
        heldout = load_records(out / "heldout.jsonl")
    except (TrainingDataError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    (out / "eval").mkdir(parents=True, exist_ok=True)
    settings = {"base_model": config.base_model, "limit": limit, "max_new_tokens": max_new_tokens}
    rows = []
    for size, folder in [
        *((n, out / "snapshots" / f"n{n}") for n in points),
        (metrics.get("examples_seen", metrics["train_examples"]), out),
    ]:
        name = "all" if folder == out else f"n{size}"
        result = cached_eval(str(folder), heldout, out / "eval" / f"{name}.json", **settings)
        rows.append({**result, "model": f"LoRA, {size} records", "train_records": size})
    base = cached_eval(BASE, heldout, out / "eval" / "base.json", **settings)
    base = {**base, "model": "untuned base (few-shot)", "train_records": 0}
    table = markdown_table([base, *rows], SWEEP_COLUMNS)
    note = (
        f"\nHeld-out: {len(heldout)} records (loss over all of them; generation metrics over the first "
        f"{min(limit, len(heldout))}, greedy, at most {max_new_tokens} new tokens).\n"
    )
    (out / "sweep.md").write_text(table + "\n" + note, encoding="utf-8")
    (out / "sweep.json").write_text(
        json.dumps({"base": base, "runs": rows}, indent=2) + "\n", encoding="utf-8"
    )
    plot(rows, base, Path(plot_path) if plot_path else out / "sweep.png")
    click.echo(table + "\n" + note)
