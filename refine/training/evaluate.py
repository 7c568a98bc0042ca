"""`python -m refine evaluate-model`: score CnR models on held-out feedback records.

Per model: mean loss and perplexity of the reference critique+revision given the prompt (the
exact prompt the app sends; few-shot for the untuned base), and on up to `--limit` records a
greedy generation each: the share that parses into critique + revision, the share that says
"nothing to fix", and mean lengths."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from refine.adapter_format import read_adapter_format
from refine.cli_paths import OutputPath
from refine.cnr_format import CnRFormat, ParsedCnR, cnr_messages, parse_cnr
from refine.edits_stream import EditsStreamParser
from refine.textfiles import read_json_object
from refine.training.data import TrainingDataError, load_records

BASE = "base"  # the untuned embedded model, driven few-shot


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a base model (+ adapter), and whether prompts are few-shot."""

    name: str
    base_model: str
    adapter: str | None
    few_shot: bool
    fmt: CnRFormat = "rewrite"


def resolve_model(ref: str, base_model: str = "", base_format: CnRFormat = "rewrite") -> ModelSpec:
    """`base` → the untuned base model (few-shot, in `base_format`); a run folder → its base +
    adapter, or the full model it holds, in the CnR format the folder records."""
    if ref == BASE:
        return ModelSpec(name="base (few-shot)", base_model=base_model, adapter=None, few_shot=True, fmt=base_format)
    folder = Path(ref)
    if not folder.is_dir():
        raise click.BadParameter(f"{ref}: not a run folder (or 'base')")
    if (folder / "adapter_config.json").exists():
        settings = folder / "settings.json"
        if settings.exists():
            base_model = read_json_object(settings, "training settings (an object)").get("base_model", base_model)
        return ModelSpec(name=folder.name, base_model=base_model, adapter=str(folder), few_shot=False,
                         fmt=read_adapter_format(folder))
    return ModelSpec(name=folder.name, base_model=str(folder), adapter=None, few_shot=False,
                     fmt=read_adapter_format(folder))


def _prompt_and_target_ids(tokenizer: Any, record: Any, few_shot: bool,
                           fmt: CnRFormat = "rewrite") -> tuple[list[int], list[int]]:
    """Token ids of the CnR prompt (generation prompt included) and of the reference target
    (critique + revision or edits + end of turn), split as in training."""
    from refine.training.data import to_example

    example = to_example(record, fmt)
    prompt = cnr_messages(record.chat(), record.response, few_shot=few_shot, fmt=fmt)
    answer = example["completion"][0]
    prompt_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    full_ids = tokenizer.apply_chat_template([*prompt, answer], tokenize=True, return_dict=True)["input_ids"]
    return list(prompt_ids), list(full_ids[len(prompt_ids) :])


def target_loss(
    model: Any,
    tokenizer: Any,
    records: list[Any],
    *,
    few_shot: bool = False,
    batch_size: int = 8,
    max_length: int = 1024,
    fmt: CnRFormat = "rewrite",
) -> dict[str, float]:
    """Token-weighted mean negative log-likelihood of the reference targets, and perplexity."""
    import torch

    pairs = [_prompt_and_target_ids(tokenizer, r, few_shot, fmt) for r in records]
    pairs.sort(key=lambda p: len(p[0]) + len(p[1]))  # similar lengths together: little padding
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id
    for start in range(0, len(pairs), batch_size):
        batch = [(p + t)[-max_length:] for p, t in pairs[start : start + batch_size]]
        labels = [([-100] * len(p) + t)[-max_length:] for p, t in pairs[start : start + batch_size]]
        width = max(len(ids) for ids in batch)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
        lab = torch.tensor([x + [-100] * (width - len(x)) for x in labels])
        with torch.inference_mode():
            logits = model(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
            ).logits.float()
        shift = lab[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), shift, ignore_index=-100, reduction="sum"
        )
        total += nll.item()
        count += int((shift != -100).sum())
    loss = total / max(count, 1)
    return {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 2), "target_tokens": count}


def generate(
    model: Any,
    tokenizer: Any,
    records: list[Any],
    *,
    few_shot: bool = False,
    max_new_tokens: int = 192,
    batch_size: int = 8,
    fmt: CnRFormat = "rewrite",
) -> list[dict[str, Any]]:
    """Greedy CnR generations for `records`, batched with left padding."""
    import torch

    tokenizer.padding_side = "left"
    out: list[dict[str, Any]] = []
    eos = tokenizer.eos_token_id
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts = [
            tokenizer.apply_chat_template(
                cnr_messages(r.chat(), r.response, few_shot=few_shot, fmt=fmt),
                add_generation_prompt=True,
                tokenize=False,
            )
            for r in chunk
        ]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
            model.device
        )
        with torch.inference_mode():
            ids = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
            )
        for record, row in zip(chunk, ids[:, inputs["input_ids"].shape[1] :].tolist(), strict=True):
            ended = eos in row
            row = row[: row.index(eos)] if ended else row
            out.append(
                {
                    "id": record.id,
                    "response": record.response,
                    "output": tokenizer.decode(row, skip_special_tokens=True),
                    "tokens": len(row),
                    "stopped": ended,
                }
            )
    return out


def parse_output(output: str, response: str, fmt: CnRFormat) -> ParsedCnR:
    """One complete CnR generation parsed in its format (`edits` are applied to `response`)."""
    if fmt == "edits":
        parser = EditsStreamParser(response)
        parser.feed(output)
        return parser.finish()
    return parse_cnr(output)


def generation_metrics(outputs: list[dict[str, Any]], fmt: CnRFormat = "rewrite") -> dict[str, Any]:
    """Parse rate, nothing-to-fix share and mean lengths (characters) of generated outputs; in
    the `edits` format also the edits applied and dropped."""
    if not outputs:
        return {"generated": 0}
    parsed = [parse_output(o["output"], o["response"], fmt) for o in outputs]
    ok = [p for p in parsed if p.ok]
    n = len(outputs)
    revised = [p for p in ok if not p.nothing_to_fix]
    return {
        "generated": n,
        "parse_rate": round(len(ok) / n, 3),
        "nothing_to_fix_share": round(sum(p.nothing_to_fix for p in ok) / n, 3),
        "mean_critique_chars": round(sum(len(p.critique) for p in ok) / max(len(ok), 1), 1),
        "mean_revision_chars": round(sum(len(p.revision) for p in revised) / max(len(revised), 1), 1),
        "mean_output_tokens": round(sum(o["tokens"] for o in outputs) / n, 1),
        "hit_max_new_tokens": sum(not o["stopped"] for o in outputs),
        **({"edits_applied": sum(bool(e.applied) for p in parsed for e in p.edits),
            "edits_dropped": sum(not e.applied for p in parsed for e in p.edits)} if fmt == "edits" else {}),
    }


def evaluate_model(
    ref: str,
    records: list[Any],
    *,
    base_model: str = "",
    limit: int = 40,
    max_new_tokens: int = 192,
    batch_size: int = 8,
    samples: Path | None = None,
    base_format: CnRFormat = "rewrite",
) -> dict[str, Any]:
    """Loss on all `records` and generation metrics on the first `limit` of them, for one model."""
    from refine.backends.local import load_model_and_tokenizer

    spec = resolve_model(ref, base_model, base_format)
    model, tokenizer = load_model_and_tokenizer(spec.base_model, adapter=spec.adapter)
    started = time.time()
    result: dict[str, Any] = {
        "model": spec.name,
        "path": ref,
        "few_shot": spec.few_shot,
        "records": len(records),
    }
    result["format"] = spec.fmt
    result.update(target_loss(model, tokenizer, records, few_shot=spec.few_shot, batch_size=batch_size, fmt=spec.fmt))
    outputs = (
        generate(
            model,
            tokenizer,
            records[:limit],
            few_shot=spec.few_shot,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            fmt=spec.fmt,
        )
        if limit > 0
        else []
    )
    result.update(generation_metrics(outputs, spec.fmt))
    result["max_new_tokens"] = max_new_tokens
    result["seconds"] = round(time.time() - started, 1)
    if samples is not None:
        samples.parent.mkdir(parents=True, exist_ok=True)
        with samples.open("w", encoding="utf-8") as fh:
            for row in outputs:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return result


COLUMNS = (
    "model",
    "format",
    "records",
    "loss",
    "perplexity",
    "generated",
    "parse_rate",
    "nothing_to_fix_share",
    "mean_critique_chars",
    "mean_revision_chars",
    "hit_max_new_tokens",
)


def markdown_table(results: list[dict[str, Any]], columns: tuple[str, ...] = COLUMNS) -> str:
    """Results as a markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in results]
    return "\n".join(lines)


@click.command("evaluate-model")
@click.option("--data", required=True, type=click.Path(dir_okay=False), help="Held-out records (JSONL/CSV).")
@click.option(
    "--model",
    "models",
    required=True,
    multiple=True,
    help="A run folder from `refine train`, or 'base' (the untuned model, few-shot). Repeatable.",
)
@click.option("--baseline", "baselines", multiple=True, help="More models to compare against (e.g. base).")
@click.option("--base-model", default="", help='Base for "base" (default: the embedded model).')
@click.option("--base-format", type=click.Choice(["rewrite", "edits"]), default="rewrite", show_default=True,
              help='CnR format "base" is prompted in (run folders use the format they record).')
@click.option(
    "--limit", type=int, default=40, show_default=True, help="Records used for the generation metrics."
)
@click.option("--max-new-tokens", type=int, default=192, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--output", "-o", type=OutputPath(path_type=str), help="Write the results as JSON here.")
@click.option("--samples-dir", type=OutputPath(folder=True, path_type=str), help="Write each model's generations here.")
def command(
    data: str,
    models: tuple[str, ...],
    baselines: tuple[str, ...],
    base_model: str,
    base_format: str,
    limit: int,
    max_new_tokens: int,
    batch_size: int,
    output: str | None,
    samples_dir: str | None,
) -> None:
    """Score CnR models on held-out records: target loss/perplexity, parse rate, "nothing to
    fix" share and lengths; prints a table, and JSON with --output."""
    from refine.adapter_check import check_adapter

    try:
        records = load_records(data)
    except TrainingDataError as exc:
        raise click.ClickException(str(exc)) from exc
    for ref in (*models, *baselines):  # every model checked before the first one loads
        spec = resolve_model(ref, base_model, base_format)  # type: ignore[arg-type]
        if spec.adapter:
            check_adapter(spec.adapter, spec.base_model, setting=f"--model {ref}",
                          base_setting="base_model in its settings.json (or --base-model)")
    results = []
    for i, ref in enumerate((*models, *baselines)):
        samples = Path(samples_dir) / f"{i}-{Path(ref).name}.jsonl" if samples_dir else None
        click.echo(f"evaluating {ref} …", err=True)
        results.append(
            evaluate_model(
                ref,
                records,
                base_model=base_model,
                limit=limit,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                samples=samples,
                base_format=base_format,  # type: ignore[arg-type]
            )
        )
    click.echo(markdown_table(results))
    click.echo(
        f"\nloss over all {len(records)} records; generation metrics over the first "
        f"{min(limit, len(records))} (greedy, max {max_new_tokens} new tokens)"
    )
    if output:
        Path(output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
