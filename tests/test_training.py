"""Training on a tiny random model: loss goes down, the adapter saves and serves through the
local backend, resume continues at the right step, and only critique+revision tokens carry loss."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from refine.records import FeedbackRecord, write_jsonl
from refine.training.config import TrainConfig

pytestmark = pytest.mark.slow


def _records(n: int = 8) -> list[FeedbackRecord]:
    return [
        FeedbackRecord(
            id=f"r{i}",
            prompt=f"What is {i} + {i}?",
            response=f"{i} + {i} = {i + 1}.",
            critique=f"The sum is wrong: {i} + {i} is {2 * i}.",
            revision=f"{i} + {i} = {2 * i}.",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "records.jsonl"
    write_jsonl(path, _records())
    return path


def _config(data: Path, tiny: Path, out: Path, **kw) -> TrainConfig:
    base = {
        "data": str(data),
        "output": str(out),
        "base_model": str(tiny),
        "heldout_share": 0.0,
        "epochs": 3,
        "batch_size": 2,
        "grad_accum": 1,
        "learning_rate": 5e-3,
        "warmup_steps": 0,
        "lora_r": 4,
        "lora_alpha": 8,
        "max_length": 256,
        "logging_steps": 1,
        "save_steps": 4,
        "dtype": "float32",
    }
    return TrainConfig(**{**base, **kw})


class _StopAt:
    """A callback that interrupts training after step `step` (as a crash or Ctrl-C would)."""

    def __init__(self, step: int) -> None:
        from transformers import TrainerCallback

        outer = self

        class Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == outer.step:
                    raise KeyboardInterrupt

        self.step = step
        self.callback = Stop()


class _FirstStep:
    def __init__(self) -> None:
        from transformers import TrainerCallback

        outer = self
        self.first: int | None = None

        class Record(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if outer.first is None:
                    outer.first = state.global_step

        self.callback = Record()


@pytest.fixture(scope="module")
def resumed_run(data_file: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Train, get interrupted after step 5 (last checkpoint: step 4), then resume to the end."""
    from refine.training.trainer import train

    out = tmp_path_factory.mktemp("run")
    with pytest.raises(KeyboardInterrupt):
        train(_config(data_file, tiny_model_dir, out), callbacks=[_StopAt(5).callback])
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    first = _FirstStep()
    result = train(_config(data_file, tiny_model_dir, out, resume=True), callbacks=[first.callback])
    return out, result, first.first


def test_resume_continues_at_the_right_step(resumed_run) -> None:
    _, result, first_step = resumed_run
    assert result.metrics["resumed_from"].endswith("checkpoint-4")
    assert first_step == 5  # step 5 is the first one run after resuming from step 4
    assert result.metrics["global_step"] == 12  # 3 epochs x 8 records / batch 2


def test_loss_goes_down(resumed_run) -> None:
    _, result, _ = resumed_run
    losses = [h["loss"] for h in result.metrics["log_history"] if "loss" in h]
    assert len(losses) >= 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_run_folder_contents(resumed_run) -> None:
    out, _, _ = resumed_run
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "settings.json",
        "split.json",
        "heldout.jsonl",
        "metrics.json",
        "README.md",
    ):
        assert (out / name).exists(), name
    assert len(json.loads((out / "split.json").read_text())["train"]) == 8
    assert TrainConfig.load(out / "settings.json").resume is True
    card = (out / "README.md").read_text()
    assert "python -m refine train" in card and "train_loss" in card


def test_adapter_loads_into_local_backend_and_generates(resumed_run, tiny_model_dir: Path) -> None:
    from refine.backends.base import Finish, GenerationParams
    from refine.backends.local import LocalBackend, LocalModel

    out, _, _ = resumed_run
    local = LocalModel(model=str(tiny_model_dir), adapter=str(out))
    try:
        backend = LocalBackend(local)

        async def collect() -> list[str]:
            messages = [{"role": "user", "content": "What is 2 + 2?"}]
            return [d async for d in backend.stream(messages, GenerationParams(max_new_tokens=8))
                    if not isinstance(d, Finish)]

        deltas = asyncio.run(collect())
        assert deltas and "".join(deltas)
        assert type(local.model).__name__.startswith("Peft")
    finally:
        local.close()


def test_snapshots_after_n_records(data_file: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from refine.training.trainer import train

    config = _config(
        data_file,
        tiny_model_dir,
        tmp_path,
        epochs=1,
        batch_size=1,
        grad_accum=2,
        snapshot_records=[4],
        save_steps=None,
    )
    train(config)
    snap = tmp_path / "snapshots" / "n4"
    assert (snap / "adapter_model.safetensors").exists()
    assert TrainConfig.load(snap / "settings.json").limit == 4


def test_prompt_tokens_carry_no_loss(data_file: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Labels are -100 exactly on the prompt — byte-identical to the app's CnR prompt — and equal
    the input ids on the critique + revision + end of turn."""
    from refine.backends.local import LocalModel
    from refine.cnr_format import cnr_messages, cnr_target
    from refine.training.data import split_records
    from refine.training.trainer import build_trainer

    records = _records(2)
    config = _config(data_file, tiny_model_dir, tmp_path)
    trainer = build_trainer(config, split_records(records, heldout_share=0.0))
    local = LocalModel(model=str(tiny_model_dir))
    local.close()
    by_prompt = {
        tuple(local.encode(cnr_messages(r.chat(), r.response))["input_ids"][0].tolist()): r for r in records
    }
    seen = 0
    for example in trainer.train_dataset:
        ids, labels = example["input_ids"], example["labels"]
        start = next(i for i, label in enumerate(labels) if label != -100)
        record = by_prompt[tuple(ids[:start])]  # the masked part is exactly the inference prompt
        assert all(label == -100 for label in labels[:start])
        assert labels[start:] == ids[start:]
        target = trainer.processing_class.decode(ids[start:])
        assert target.startswith(cnr_target(record.critique, record.revision, record.response))
        assert target.rstrip().endswith("<|im_end|>")
        seen += 1
    assert seen == 2
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding carries no loss either


def test_sweep_and_evaluate_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The sweep trains one run with snapshots, evaluates every point and the base on the same
    held-out records, and writes its table, JSON and plot; a second call reuses everything."""
    from click.testing import CliRunner

    from refine.training.evaluate import command as evaluate_command
    from refine.training.sweep import command as sweep_command

    data = tmp_path / "records.jsonl"
    write_jsonl(data, _records(16))
    out = tmp_path / "sweep"
    out.mkdir()
    _config(
        data, tiny_model_dir, out, heldout_share=0.3, epochs=1, batch_size=1, grad_accum=2, save_steps=None
    ).save(out / "settings.json")
    args = [
        "--data",
        str(data),
        "--output",
        str(out),
        "--sizes",
        "2,4",
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
    ]
    result = CliRunner().invoke(sweep_command, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["train_records"] for r in summary["runs"]][:2] == [2, 4]
    heldout = summary["base"]["records"]
    assert heldout > 0 and all(r["records"] == heldout and r["generated"] == 2 for r in summary["runs"])
    assert summary["base"]["few_shot"] is True and summary["base"]["loss"] > 0
    assert (out / "sweep.png").stat().st_size > 0 and "| untuned base" in (out / "sweep.md").read_text()
    again = CliRunner().invoke(sweep_command, args)
    assert again.exit_code == 0 and "reusing the finished run" in again.output

    result = CliRunner().invoke(
        evaluate_command,
        [
            "--data",
            str(out / "heldout.jsonl"),
            "--model",
            str(out),
            "--limit",
            "1",
            "--max-new-tokens",
            "4",
            "--output",
            str(tmp_path / "eval.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    [row] = json.loads((tmp_path / "eval.json").read_text())
    assert {"loss", "perplexity", "parse_rate", "nothing_to_fix_share", "mean_critique_chars"} <= set(row)


def test_an_edits_run_trains_on_edit_targets_records_its_format_and_is_evaluated_in_it(
        data_file: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from refine.adapter_format import read_adapter_format
    from refine.cnr_format import cnr_target
    from refine.edits import derive_edits
    from refine.training.evaluate import evaluate_model
    from refine.training.trainer import build_trainer, train

    records = _records(2)
    config = _config(data_file, tiny_model_dir, tmp_path / "run", format="edits", epochs=1, batch_size=1,
                     grad_accum=2, snapshot_records=[4], save_steps=None)
    trainer = build_trainer(config, __import__("refine.training.data", fromlist=["x"]).split_records(
        records, heldout_share=0.0))
    targets = []
    for example in trainer.train_dataset:
        start = next(i for i, label in enumerate(example["labels"]) if label != -100)
        targets.append(trainer.processing_class.decode(example["input_ids"][start:]))
    expected = {cnr_target(r.critique, r.revision, r.response, fmt="edits",
                           edits=derive_edits(r.response, r.revision)) for r in records}
    assert all(any(t.startswith(e) for e in expected) for t in targets)
    assert any(t.startswith("Critique: The sum is wrong: 0 + 0 is 0.\nReplace: 0 = 1.\nWith: 0 = 0.") for t in targets)

    train(config)
    assert read_adapter_format(tmp_path / "run") == "edits"
    assert read_adapter_format(tmp_path / "run" / "snapshots" / "n4") == "edits"
    result = evaluate_model(str(tmp_path / "run"), records, limit=1, max_new_tokens=4)
    assert result["format"] == "edits" and "edits_applied" in result and result["loss"] > 0
