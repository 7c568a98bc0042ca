"""The local transformers backend on a tiny random model: token streaming, fair queueing,
cancellation, typed errors, why a generation ended, decoding settings, chat templates."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from refine.backends.base import BadRequest, ContextTooLong, Finish, GenerationParams, fold_system
from refine.backends.local import LocalBackend, LocalModel, generate_kwargs, split_model_ref
from tests.standin_servers import Drained, drain

CHAT = [{"role": "user", "content": "Say something."}]
REFUSING_TEMPLATE = Path(__file__).parent / "data" / "tokenizer_refuses_system" / "chat_template.jinja"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LocalModel:
    model = LocalModel(str(tiny_model_dir), dtype="float32")
    yield model
    model.close()


async def collect(backend: LocalBackend, params: GenerationParams, log: list | None = None, tag: str = "") -> list[str]:
    """The text deltas of one stream (its Finish checked to come last, then left out); each
    item appends `tag` to `log`."""

    async def logged():
        async for item in backend.stream(CHAT, params):
            if log is not None:
                log.append(tag)
            yield item

    result = await drain(logged())
    if result.error:
        raise result.error
    return result.deltas


async def finished(backend: LocalBackend, params: GenerationParams, chat: list = CHAT) -> Drained:
    result = await drain(backend.stream(chat, params))
    assert result.error is None, result.error
    return result


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


# --- why a generation ended -------------------------------------------------------------------


async def test_reaching_max_new_tokens_is_length(tiny: LocalModel) -> None:
    result = await finished(LocalBackend(tiny), GenerationParams(max_new_tokens=12))
    assert result.finish == Finish("length", "max_new_tokens", 12)


async def test_an_end_of_turn_token_is_stop(tiny: LocalModel) -> None:
    import torch

    params = GenerationParams(max_new_tokens=12, repetition_penalty=10.0)  # no loop on one token
    inputs = tiny.encode(CHAT)
    with torch.inference_mode():
        out = tiny.model.generate(**inputs, max_new_tokens=3, pad_token_id=tiny.tokenizer.pad_token_id,
                                  **generate_kwargs(params, prompt_length=inputs["input_ids"].shape[1]))
    first, second = out[0, inputs["input_ids"].shape[1]:][:2].tolist()
    assert first != second
    config = tiny.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [tiny.tokenizer.eos_token_id, second]  # the model's 2nd token now ends its turn
    try:
        result = await finished(LocalBackend(tiny), params)
    finally:
        config.eos_token_id = saved
    assert result.text == tiny.tokenizer.decode([first]) and result.finish == Finish("stop", "eos", 2)


async def test_a_stop_string_is_stop_and_ends_the_generation(tiny: LocalModel) -> None:
    backend = LocalBackend(tiny)
    params = GenerationParams(max_new_tokens=30, repetition_penalty=10.0)
    full = (await finished(backend, params)).text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    result = await finished(backend, replace(params, stop=(stop,)))
    assert result.text == full[: full.index(stop)]
    assert result.finish.reason == "stop" and result.finish.detail == "stop_string"
    assert result.finish.tokens is not None and result.finish.tokens < 30  # ended at the stop string


# --- decoding settings ------------------------------------------------------------------------


def test_decoding_settings_reach_generate() -> None:
    import torch

    assert generate_kwargs(GenerationParams()) == {"do_sample": False}
    assert generate_kwargs(GenerationParams(temperature=0.7, top_p=0.9)) == {
        "do_sample": True, "temperature": 0.7, "top_p": 0.9}
    kwargs = generate_kwargs(GenerationParams(repetition_penalty=2.0, no_repeat_ngram_size=2), prompt_length=3)
    penalty, ngrams = kwargs.pop("logits_processor")
    assert kwargs == {"do_sample": False}
    # the prompt (ids 5 6 5) is exempt; the generated tokens (7 8 7) are not
    ids = torch.tensor([[5, 6, 5, 7, 8, 7]])
    scores = penalty(ids, torch.ones(1, 10))
    assert scores[0, 5].item() == 1.0 and scores[0, 6].item() == 1.0 and scores[0, 7].item() == 0.5
    banned = ngrams(ids, torch.zeros(1, 10))
    assert banned[0, 8].item() == float("-inf")  # "7 8" again is forbidden …
    assert banned[0, 6].item() == 0.0  # … "5 6" from the prompt is not


async def test_repetition_controls_change_a_looping_greedy_output(tiny: LocalModel) -> None:
    backend = LocalBackend(tiny)
    plain = (await finished(backend, GenerationParams(max_new_tokens=20))).text
    penalised = (await finished(backend, GenerationParams(max_new_tokens=20, repetition_penalty=10.0))).text
    no_repeats = (await finished(backend, GenerationParams(max_new_tokens=20, no_repeat_ngram_size=2))).text
    unit = plain[: len(plain) // 20]
    assert unit and unit * 20 == plain  # the random model loops on one token
    assert penalised != plain and no_repeats != plain


# --- a chat template that refuses a system message --------------------------------------------


@pytest.fixture(scope="module")
def refusing(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    """The tiny model with Gemma's kind of template: no system role, roles must alternate."""
    folder = tmp_path_factory.mktemp("refusing") / "model"
    shutil.copytree(tiny_model_dir, folder)
    shutil.copy(REFUSING_TEMPLATE, folder / "chat_template.jinja")
    model = LocalModel(str(folder), dtype="float32")
    yield model
    model.close()


async def test_a_template_that_refuses_system_gets_it_folded(refusing: LocalModel) -> None:
    chat = [{"role": "system", "content": "Be brief."}, *CHAT]
    folded = refusing.encode(fold_system(chat))["input_ids"]
    assert refusing.encode(chat)["input_ids"].tolist() == folded.tolist()
    result = await finished(LocalBackend(refusing), GenerationParams(max_new_tokens=4), chat)
    assert result.finish == Finish("length", "max_new_tokens", 4)


async def test_a_conversation_the_template_refuses_is_a_clear_bad_request(refusing: LocalModel) -> None:
    result = await drain(LocalBackend(refusing).stream([*CHAT, *CHAT], GenerationParams(max_new_tokens=4)))
    err = result.error
    assert type(err) is BadRequest and err.partial == "" and "\n" not in err.message
    assert "also with the system prompt folded" not in err.message  # there was no system message to fold
    assert err.message == (f"the chat template of model {refusing.name!r} refuses this conversation: "
                           "Conversation roles must alternate user/assistant/user/assistant/...")
    assert await collect(LocalBackend(refusing), GenerationParams(max_new_tokens=2))  # the worker lives on
