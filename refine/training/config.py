"""Settings of one training run (what `refine train` accepts, and what it writes to settings.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    """Everything that decides a CnR fine-tuning run. `base_model` "" is the embedded
    SmolLM2-135M-Instruct GGUF; otherwise a model folder, a GGUF file or a hub id."""

    data: str
    output: str
    eval_data: str | None = None
    heldout_share: float = 0.1  # held out by id hash when no eval_data is given
    base_model: str = ""
    format: str = "rewrite"  # the CnR format trained: "rewrite" (critique + whole revision) or "edits"
    # LoRA (default) or full fine-tuning
    full: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    load_in_4bit: bool = False  # QLoRA (bitsandbytes, GPU only)
    # optimisation
    epochs: float = 1.0
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    learning_rate: float = 2e-4
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 5
    batch_size: int = 1  # with 1 there is no padding at all; above 1 batches are grouped by length
    grad_accum: int = 10
    max_length: int = 512
    gradient_checkpointing: bool = False
    seed: int = 42
    limit: int | None = None  # use only the first N training records (after a seeded shuffle)
    dtype: str = "auto"  # bf16 on GPUs and bf16-capable CPUs, else fp32
    # bookkeeping
    save_steps: int | None = None  # None: checkpoint at the end of each epoch
    snapshot_records: list[int] = field(default_factory=list)  # also save the adapter after N records
    save_total_limit: int = 2
    logging_steps: int = 10
    resume: bool = False
    time_budget_min: float | None = None  # stop (and save) after this many minutes of training
    skip_invalid: bool = False

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the settings as JSON."""
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read settings written by `save` (unknown keys are ignored)."""
        from refine.textfiles import read_json_object

        data = read_json_object(path, "training settings (an object)")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
