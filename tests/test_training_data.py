"""Bad training data is refused with a clear message before any model loads; the held-out
split is fixed by id and keeps derived records with their parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refine.records import FeedbackRecord
from refine.training.data import is_heldout, split_records

GOOD = {"id": "a", "prompt": "2+2?", "response": "5", "critique": "Wrong sum.", "revision": "4"}


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from refine.training import trainer

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although the data is bad")

    monkeypatch.setattr(trainer, "load_base", refuse)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "no records"),
        ("\n\n", "no records"),
        (json.dumps(GOOD) + "\n{broken\n", ":2: not valid JSON"),
        (json.dumps({**GOOD, "revision": ""}) + "\n", ":1: revision"),
    ],
)
@pytest.mark.parametrize("cli", ["train", "sweep"])
def test_bad_data_is_refused_before_training(tmp_path: Path, content: str, message: str, cli: str) -> None:
    from refine.training.cli import command as train_command
    from refine.training.sweep import command as sweep_command

    data = tmp_path / "records.jsonl"
    data.write_text(content, encoding="utf-8")
    command = train_command if cli == "train" else sweep_command
    result = CliRunner().invoke(command, ["--data", str(data), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_missing_files_are_refused(tmp_path: Path) -> None:
    from refine.training.cli import command

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    for args in (
        ["--data", str(tmp_path / "nope.jsonl")],
        ["--data", str(good), "--eval-data", str(tmp_path / "nope.jsonl")],
    ):
        result = CliRunner().invoke(command, [*args, "--output", str(tmp_path / "out")])
        assert result.exit_code == 1 and "no such records file" in result.output


def test_heldout_split_is_fixed_by_id() -> None:
    records = [FeedbackRecord(**{**GOOD, "id": f"r{i}"}) for i in range(400)]
    children = [r.model_copy(update={"id": f"{r.id}-nochange", "meta": {"parent_id": r.id}}) for r in records]
    split = split_records(records + children, heldout_share=0.1)
    held = {r.id for r in split.heldout}
    assert 0.06 < len(held) / 800 < 0.14
    assert all((r.id in held) == (f"{r.id}-nochange" in held) for r in records)  # parent and child together
    assert split_records(records + children, heldout_share=0.1).heldout == split.heldout
    assert {r.id for r in split.heldout} == {r.id for r in records + children if is_heldout(r, 0.1)}
    first = split_records(records, heldout_share=0.1, limit=50).train
    assert first == split_records(records, heldout_share=0.1, limit=100).train[:50]  # nested subsets


@pytest.mark.parametrize("name", ["single_gpu_qlora", "fsdp", "deepspeed_zero3", "cpu"])
def test_accelerate_configs_parse(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parents[1] / "accelerate_configs" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type in {"NO", "FSDP", "DEEPSPEED"} or config.distributed_type.value
