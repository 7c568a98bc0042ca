"""One CnR fine-tuning run with TRL's SFTTrainer: LoRA (default), QLoRA or full fine-tuning,
the same code on a laptop CPU and under `accelerate launch` on GPUs."""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refine.adapter_format import write_adapter_format
from refine.records import write_jsonl
from refine.training.config import TrainConfig
from refine.training.data import DataSplit, load_records, record_id, split_records, to_dataset

log = logging.getLogger(__name__)

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was converted from


@dataclass
class TrainResult:
    """What a run produced and measured."""

    output: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def prepare_split(config: TrainConfig) -> DataSplit:
    """Read and split the data — every data error surfaces here, before any model loads."""
    records = load_records(config.data, skip_invalid=config.skip_invalid)
    eval_records = (
        load_records(config.eval_data, skip_invalid=config.skip_invalid) if config.eval_data else None
    )
    return split_records(
        records,
        eval_records=eval_records,
        heldout_share=config.heldout_share,
        limit=config.limit,
        seed=config.seed,
    )


def _use_bf16(config: TrainConfig) -> bool:
    import torch

    from refine.backends.local import resolve_dtype

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_dtype(config.dtype, device) == torch.bfloat16


def sft_config(config: TrainConfig, *, has_eval: bool) -> Any:
    """TRL's SFTConfig for a run (built before the model loads, so DeepSpeed ZeRO-3 can shard it)."""
    import torch
    from trl import SFTConfig

    per_epoch = "steps" if config.save_steps else "epoch"
    return SFTConfig(
        output_dir=str(Path(config.output) / "checkpoints"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(config.batch_size, 4),
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        max_length=config.max_length,
        completion_only_loss=True,  # loss on critique + revision only, never on the prompt
        # One example per step has no padding, and keeps the seeded order of `split_records`, so with a
        # constant learning rate the adapter after N records is the adapter of a run on those N.
        # Larger batches are grouped by length to avoid padding waste.
        train_sampling_strategy="sequential" if config.batch_size == 1 else "group_by_length",
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=_use_bf16(config),
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="epoch" if has_eval else "no",
        save_strategy=per_epoch,
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        dataloader_num_workers=0,
    )


def load_base(config: TrainConfig) -> tuple[Any, Any]:
    """The base model and tokenizer: the embedded GGUF (dequantised), a folder, a GGUF file or a
    hub id — resolved as the local backend does; 4-bit NF4 with `load_in_4bit` (GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refine.backends.local import resolve_dtype, split_model_ref

    ref, gguf = split_model_ref(config.base_model)
    kwargs: dict[str, Any] = {}
    if gguf:  # unpack to plain dense weights: a model still marked GGUF-quantized cannot train
        from transformers.utils.quantization_config import GgufConfig

        kwargs = {"gguf_file": gguf, "quantization_config": GgufConfig(dequantize=True)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Frozen LoRA bases run in the compute dtype; full fine-tuning keeps fp32 master weights.
    dtype = torch.float32 if config.full else resolve_dtype(config.dtype, device)
    if config.load_in_4bit:
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        if config.full or gguf:
            raise ValueError("--load-in-4bit is QLoRA on a safetensors model: not with --full or a GGUF file")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": PartialState().local_process_index}
    tokenizer = AutoTokenizer.from_pretrained(ref, **({"gguf_file": gguf} if gguf else {}))
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def lora_config(config: TrainConfig) -> Any:
    """PEFT LoRA settings of a run."""
    from peft import LoraConfig

    targets: Any = config.target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def snapshot_callback(config: TrainConfig, folder: Path) -> Any:
    """A callback saving the model after each of `config.snapshot_records` training records
    into folder/n<records> (with a settings.json saying `limit: <records>`)."""
    from dataclasses import replace

    from transformers import TrainerCallback

    per_step = config.batch_size * config.grad_accum

    class Snapshots(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            records = state.global_step * per_step * args.world_size
            if records in config.snapshot_records and state.is_world_process_zero:
                target = folder / f"n{records}"
                model.save_pretrained(str(target))
                write_adapter_format(target, config.format)
                replace(config, output=str(target), limit=records, snapshot_records=[]).save(
                    target / "settings.json"
                )

    return Snapshots()


def time_budget_callback(minutes: float) -> Any:
    """A callback ending training gracefully (evaluation, saving) once `minutes` have passed.
    With a constant learning rate the result is the model of a run on the records seen so far."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        started = time.time()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if time.time() - self.started > minutes * 60:
                log.warning("time budget of %s min reached at step %d: stopping", minutes, state.global_step)
                control.should_training_stop = True  # the Trainer then ends the epoch: evaluates

    return TimeBudget()


def build_trainer(config: TrainConfig, split: DataSplit, callbacks: list[Any] | None = None) -> Any:
    """An SFTTrainer over the split's prompt-completion datasets."""
    from trl import SFTTrainer

    args = sft_config(config, has_eval=bool(split.heldout))
    model, tokenizer = load_base(config)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(split.train, config.format),
        eval_dataset=to_dataset(split.heldout, config.format) if split.heldout else None,
        processing_class=tokenizer,
        peft_config=None if config.full else lora_config(config),
        callbacks=[
            *(callbacks or []),
            snapshot_callback(config, Path(config.output) / "snapshots"),
            *([time_budget_callback(config.time_budget_min)] if config.time_budget_min else []),
        ],
    )


def last_checkpoint(output: str | Path) -> str | None:
    """The newest checkpoint folder of a run, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(output) / "checkpoints"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def peak_memory_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def write_split(output: Path, split: DataSplit) -> None:
    """The ids trained on and held out (split.json) and the held-out records (heldout.jsonl)."""
    ids = {"train": [record_id(r) for r in split.train], "heldout": [record_id(r) for r in split.heldout]}
    (output / "split.json").write_text(json.dumps(ids, indent=1) + "\n", encoding="utf-8")
    write_jsonl(output / "heldout.jsonl", split.heldout)


def save_model(trainer: Any, config: TrainConfig, output: Path) -> None:
    """Adapter (safetensors, in the compute dtype to keep it small) or full model, plus tokenizer."""
    import torch

    model = trainer.model
    if not config.full:
        if trainer.args.bf16:
            model.to(torch.bfloat16)
        if not config.base_model:  # point the adapter at the hub model the embedded GGUF comes from
            model.peft_config["default"].base_model_name_or_path = EMBEDDED_HUB_ID
    trainer.save_model(str(output))
    trainer.processing_class.save_pretrained(str(output))
    write_adapter_format(output, config.format)


def train(
    config: TrainConfig, callbacks: list[Any] | None = None, split: DataSplit | None = None
) -> TrainResult:
    """Fine-tune a CnR model as configured and write the run folder (`split`: already prepared)."""
    from refine.training.card import write_model_card

    split = split or prepare_split(config)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    resume_from = last_checkpoint(output) if config.resume else None
    if config.resume and resume_from is None:
        log.warning("no checkpoint in %s/checkpoints: starting from the beginning", output)
    config.save(output / "settings.json")
    write_split(output, split)

    started = time.time()
    trainer = build_trainer(config, split, callbacks)
    trainer.model.config.use_cache = False
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - started
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    per_step = config.batch_size * config.grad_accum * trainer.args.world_size
    seen = min(len(lengths) * config.epochs, trainer.state.global_step * per_step)
    first = int(Path(resume_from).name.rsplit("-", 1)[-1]) * per_step if resume_from else 0
    # tokens trained in this process (exact for one example per step, in order)
    tokens = sum(lengths[i % len(lengths)] for i in range(first, int(seen)))
    metrics: dict[str, Any] = {
        "train_records": len(split.train),
        # TRL drops examples whose prompt alone fills max_length (nothing left to learn from)
        "train_examples": len(trainer.train_dataset),
        "examples_seen": int(seen),
        "heldout_records": len(split.heldout),
        "train_loss": round(result.training_loss, 4),
        "global_step": trainer.state.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", seconds), 1),
        "wall_time_s": round(seconds, 1),
        "train_tokens": int(tokens),
        "tokens_per_s": round(tokens / max(result.metrics.get("train_runtime", seconds), 1e-9), 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "bf16": trainer.args.bf16,
        "resumed_from": resume_from,
    }
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    if split.heldout:
        metrics["eval_loss"] = round(evals[-1] if evals else trainer.evaluate()["eval_loss"], 4)
    metrics["log_history"] = trainer.state.log_history
    save_model(trainer, config, output)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_model_card(output, config, metrics)
    return TrainResult(output=output, metrics=metrics)
