"""The shipped CnR adapter loads offline on the embedded model, and its outputs on held-out
prompts parse, in the CnR format it records, into a critique and a revision or edits (or
"nothing to fix")."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from refine.embedded import SHIPPED_ADAPTER

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHIPPED_ADAPTER / "adapter_model.safetensors").exists(), reason="no shipped adapter"
    ),
]


def test_shipped_adapter_files_are_lean() -> None:
    config = json.loads((SHIPPED_ADAPTER / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert (SHIPPED_ADAPTER / "adapter_model.safetensors").stat().st_size < 10 * 1024 * 1024
    assert not (SHIPPED_ADAPTER / "checkpoints").exists() or not any(
        (SHIPPED_ADAPTER / "checkpoints").iterdir()
    )
    card = (SHIPPED_ADAPTER / "README.md").read_text()
    assert "CC BY-NC 4.0" in card and "Shepherd" in card and "python -m refine train" in card
    split = json.loads((SHIPPED_ADAPTER / "split.json").read_text())
    assert not set(split["train"]) & set(split["heldout"])


def test_shipped_adapter_outputs_parse_on_heldout_prompts() -> None:
    from refine.backends.base import GenerationParams, collect
    from refine.backends.local import LocalBackend, LocalModel
    from refine.adapter_format import read_adapter_format
    from refine.cnr_format import cnr_messages
    from refine.records import read_records
    from refine.training.evaluate import parse_output

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    heldout = read_records(SHIPPED_ADAPTER / "heldout.jsonl")
    # three short held-out records, one of them a no-change record when there is one
    plain = sorted((r for r in heldout if "nochange" not in (r.id or "") and r.critique != "Nothing to fix."),
                   key=lambda r: len(r.response))[:2]
    nochange = [r for r in heldout if "nochange" in (r.id or "") or r.critique == "Nothing to fix."][:1]
    fmt = read_adapter_format(SHIPPED_ADAPTER)
    local = LocalModel(model="", adapter=str(SHIPPED_ADAPTER))
    try:
        backend = LocalBackend(local)

        async def run(record) -> str:
            messages = cnr_messages(record.chat(), record.response, fmt=fmt)
            text, _ = await collect(backend.stream(messages, GenerationParams(max_new_tokens=160)))
            return text

        outputs = [asyncio.run(run(r)) for r in plain + nochange]
    finally:
        local.close()
    parsed = [parse_output(text, r.response, fmt) for text, r in zip(outputs, plain + nochange)]
    assert all(p.ok for p in parsed), outputs
