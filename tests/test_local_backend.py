"""The local transformers backend on a tiny random model: token streaming, fair queueing,
cancellation, typed errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from refine.backends.base import ContextTooLong, GenerationParams
from refine.backends.local import LocalBackend, LocalModel, split_model_ref

CHAT = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LocalModel:
    model = LocalModel(str(tiny_model_dir), dtype="float32")
    yield model
    model.close()


async def collect(backend: LocalBackend, params: GenerationParams, log: list | None = None, tag: str = "") -> list[str]:
    deltas = []
    async for delta in backend.stream(CHAT, params):
        deltas.append(delta)
        if log is not None:
            log.append(tag)
    return deltas


async def test_streams_one_delta_per_token_and_matches_generate(tiny: LocalModel) -> None:
    import torch

    params = GenerationParams(max_new_tokens=12)
    deltas = await collect(LocalBackend(tiny), params)
    inputs = tiny.encode(CHAT)
    with torch.inference_mode():
        out = tiny.model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id)
    expected = tiny.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "".join(deltas) == expected
    assert len(deltas) > 1  # streamed, not one block


async def test_generations_run_one_at_a_time_in_arrival_order(tiny: LocalModel) -> None:
    backend = LocalBackend(tiny)
    params = GenerationParams(max_new_tokens=8)
    log: list[str] = []
    await asyncio.gather(*(collect(backend, params, log, tag) for tag in "abc"))
    # each stream ran to its end before the next began: no interleaving, FIFO order
    assert "".join(dict.fromkeys(log)) == "abc"
    assert log == sorted(log)


async def test_a_consumer_that_stops_reading_frees_the_model(tiny: LocalModel) -> None:
    backend = LocalBackend(tiny)
    stream = backend.stream(CHAT, GenerationParams(max_new_tokens=4000 - 200))
    async for _ in stream:
        break
    await stream.aclose()
    start = time.perf_counter()
    assert await collect(backend, GenerationParams(max_new_tokens=4))
    # the abandoned 3800-token generation was stopped, not finished first
    assert time.perf_counter() - start < 5


async def test_context_too_long_is_a_typed_error(tiny: LocalModel) -> None:
    with pytest.raises(ContextTooLong, match="exceeds the model's context of 4096"):
        await collect(LocalBackend(tiny), GenerationParams(max_new_tokens=5000))


async def test_stop_strings_cut_the_stream(tiny: LocalModel) -> None:
    backend = LocalBackend(tiny)
    full = "".join(await collect(backend, GenerationParams(max_new_tokens=30)))
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop
    cut = "".join(await collect(backend, GenerationParams(max_new_tokens=30, stop=(stop,))))
    assert cut == full[: full.index(stop)]


def test_model_references(tmp_path) -> None:
    folder, gguf = split_model_ref("")
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert split_model_ref("org/model") == ("org/model", None)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        split_model_ref(str(tmp_path / "missing.gguf"))
