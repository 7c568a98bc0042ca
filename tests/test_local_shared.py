"""Load once, load fast: one local model serves the base role (adapter off) and the CnR role
(adapter on) with the outputs of two separate models; a GGUF model's dequantized weights are
cached on disk and read back identical (weights, config, tokenizer), safely under concurrency."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from refine.backends import BackendPool, gguf_cache
from refine.backends.base import GenerationParams
from refine.backends.local import LocalBackend, LocalModel, load_model_and_tokenizer
from refine.settings import Settings
from tests.standin_servers import drain

CHATS = [
    [{"role": "user", "content": "Say something."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 + 30?"}],
]
PARAMS = GenerationParams(max_new_tokens=16)


async def text(backend: LocalBackend, chat: list) -> str:
    result = await drain(backend.stream(chat, PARAMS))
    assert result.error is None, result.error
    return result.text


# --- one model, both roles ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter on the tiny model (non-zero B, so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    folder = tmp_path_factory.mktemp("lora") / "tiny-lora"
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def separate(tiny_model_dir: Path, lora_dir: Path) -> dict[str, list[str]]:
    """Today's outputs: a plain model for the base role, a second model with the adapter for CnR."""
    plain = LocalModel(str(tiny_model_dir), dtype="float32")
    attached = LocalModel(str(tiny_model_dir), adapter=str(lora_dir), dtype="float32")
    try:
        async def run() -> dict[str, list[str]]:
            return {"base": [await text(LocalBackend(plain), c) for c in CHATS],
                    "cnr": [await text(LocalBackend(attached), c) for c in CHATS]}

        return asyncio.run(run())
    finally:
        plain.close()
        attached.close()


@pytest.fixture
async def pool(tiny_model_dir: Path, lora_dir: Path):
    pool = BackendPool(Settings(base_model=str(tiny_model_dir), cnr_adapter=str(lora_dir), dtype="float32",
                                cache_dir="none"))
    yield pool
    await pool.aclose()


async def test_the_roles_share_one_model_and_keep_their_names(pool: BackendPool, tiny_model_dir: Path,
                                                               lora_dir: Path) -> None:
    base, cnr = pool.get("base"), pool.get("cnr")
    judge = pool.backend("local", str(tiny_model_dir))  # a judge on the same model shares it too
    assert base.local is cnr.local is judge.local and len(pool._local) == 1  # type: ignore[attr-defined]
    assert type(base.local.model).__name__.startswith("Peft")  # type: ignore[attr-defined]
    assert base.model_id == judge.model_id == tiny_model_dir.name
    assert cnr.model_id == f"{tiny_model_dir.name}+{lora_dir.name}"


async def test_each_role_generates_what_its_own_model_did(pool: BackendPool, separate: dict) -> None:
    base, cnr = pool.get("base"), pool.get("cnr")
    assert separate["base"] != separate["cnr"]  # the adapter matters
    # interleaved and concurrent: the adapter is switched per generation, in the one queue
    outputs = await asyncio.gather(*(text(backend, chat) for chat in CHATS for backend in (base, cnr, base)))
    for i, _chat in enumerate(CHATS):
        assert outputs[3 * i] == outputs[3 * i + 2] == separate["base"][i]
        assert outputs[3 * i + 1] == separate["cnr"][i]


async def test_base_role_equals_the_plain_model_and_cnr_the_attached_adapter(tiny_model_dir: Path,
                                                                             lora_dir: Path) -> None:
    """Against transformers/PEFT directly: the base role is the plain model's greedy output, the
    CnR role the output of the adapter attached (and merged, to rounding) — not via LocalModel."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    shared = LocalModel(str(tiny_model_dir), adapter=str(lora_dir), dtype="float32")
    try:
        inputs = shared.encode(CHATS[1])
        n = inputs["input_ids"].shape[1]

        def greedy(model) -> list[int]:
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=16, do_sample=False,
                                     pad_token_id=shared.tokenizer.pad_token_id)
            return out[0, n:].tolist()

        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        attached = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), lora_dir).eval()
        expected_base, expected_cnr = greedy(plain), greedy(attached)
        merged = greedy(attached.merge_and_unload())
        assert expected_base != expected_cnr and merged == expected_cnr
        decode = lambda ids: shared.tokenizer.decode(ids, skip_special_tokens=True)
        assert await text(LocalBackend(shared, adapter=False), CHATS[1]) == decode(expected_base)
        assert await text(LocalBackend(shared), CHATS[1]) == decode(expected_cnr)
        assert await text(LocalBackend(shared, adapter=False), CHATS[1]) == decode(expected_base)  # switched back
    finally:
        shared.close()


async def test_a_model_without_adapter_serves_both_roles_plainly(tiny_model_dir: Path, separate: dict) -> None:
    pool = BackendPool(Settings(base_model=str(tiny_model_dir), cnr_adapter="none", dtype="float32"))
    try:
        base, cnr = pool.get("base"), pool.get("cnr")
        assert base.local is cnr.local and base.model_id == cnr.model_id  # type: ignore[attr-defined]
        assert await text(cnr, CHATS[0]) == separate["base"][0]
        with pytest.raises(ValueError, match="has no adapter"):
            LocalBackend(base.local, adapter=True)  # type: ignore[attr-defined]
    finally:
        await pool.aclose()


# --- the GGUF cache -------------------------------------------------------------------------


def build_tiny_gguf(path: Path, *, seed: int = 0) -> Path:
    """A tiny random Llama GGUF file (2 layers, hidden size 64; Q4_1 projections, a Q8_0
    embedding, like the embedded file) carrying the embedded file's metadata: its tokenizer
    (vocabulary, merges, special tokens, chat template) and all."""
    import gguf
    import numpy as np

    from refine.embedded import embedded_gguf

    source = gguf.GGUFReader(embedded_gguf())
    writer = gguf.GGUFWriter(str(path), "llama")
    dims = {"llama.block_count": 2, "llama.context_length": 4096, "llama.embedding_length": 64,
            "llama.feed_forward_length": 128, "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 16}
    for key, field in source.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        types = field.types
        writer.add_key_value(key, dims.get(key, field.contents()), types[0], types[1] if len(types) > 1 else None)
    rng = np.random.default_rng(seed)
    f32, q41, q80 = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.Q4_1,
                     gguf.GGMLQuantizationType.Q8_0)

    def add(name: str, shape: tuple[int, ...], kind) -> None:
        data = rng.standard_normal(shape).astype(np.float32)
        if kind == f32:
            writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, gguf.quants.quantize(data * 0.2, kind), raw_dtype=kind)

    add("token_embd.weight", (49152, 64), q80)
    for block in range(2):
        for name, shape, kind in (("attn_norm", (64,), f32), ("ffn_norm", (64,), f32), ("attn_q", (64, 64), q41),
                                  ("attn_k", (32, 64), q41), ("attn_v", (32, 64), q41),
                                  ("attn_output", (64, 64), q41), ("ffn_gate", (128, 64), q41),
                                  ("ffn_up", (128, 64), q41), ("ffn_down", (64, 128), q41)):
            add(f"blk.{block}.{name}.weight", shape, kind)
    add("output_norm.weight", (64,), f32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def cold(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, object]:
    """(cache folder, model, tokenizer) of a first load in float32, which writes the cache."""
    root = tmp_path_factory.mktemp("cache")
    model, tokenizer = load_model_and_tokenizer(str(tiny_gguf), dtype="float32", cache_dir=str(root))
    return root, model, tokenizer


class _Spy:
    """Records the arguments of `from_pretrained` calls (to see whether a GGUF file was read)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.calls: list[tuple] = []
        for cls in (AutoModelForCausalLM, AutoTokenizer):
            original = cls.from_pretrained

            def spy(*args, _original=original, **kwargs):
                self.calls.append((args, kwargs))
                return _original(*args, **kwargs)

            monkeypatch.setattr(cls, "from_pretrained", spy)

    @property
    def read_gguf(self) -> bool:
        return any(kwargs.get("gguf_file") for _, kwargs in self.calls)


def _entries(root: Path) -> list[Path]:
    return sorted((root / "gguf").iterdir())


def test_the_first_load_writes_a_complete_folder_keyed_by_the_files_hash(cold, tiny_gguf: Path) -> None:
    import hashlib

    root, model, _ = cold
    (folder,) = _entries(root)  # no temporary folder left
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert folder.name.startswith(f"{sha}-float32-transformers-")
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            gguf_cache.MARKER} <= names
    assert gguf_cache.is_dequantized(model)


def test_a_later_load_reads_the_cache_and_gets_the_same_model(cold, tiny_gguf: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    root, model, _ = cold
    spy = _Spy(monkeypatch)
    warm, _ = load_model_and_tokenizer(str(tiny_gguf), dtype="float32", cache_dir=str(root))
    assert spy.calls and not spy.read_gguf  # the folder, not the GGUF file
    expected, got = model.state_dict(), warm.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert warm.dtype == torch.float32 and not hasattr(warm.config, "quantization_config")
    assert warm.generation_config.to_diff_dict() == model.generation_config.to_diff_dict()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "max_position_embeddings", "rope_parameters",
                 "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(warm.config, name) == getattr(model.config, name), name
    ids = torch.tensor([[1, 2, 3, 4, 5, 216, 33]])
    with torch.inference_mode():
        assert torch.equal(warm(ids).logits, model(ids).logits)


def test_the_cached_tokenizer_is_the_gguf_tokenizer(cold, tiny_gguf: Path) -> None:
    from transformers import AutoTokenizer

    root, _, direct = cold
    _, cached = load_model_and_tokenizer(str(tiny_gguf), dtype="float32", cache_dir=str(root))
    fresh = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    for tok in (direct, cached, fresh):
        assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2
        assert tok.pad_token_id == 2
        assert tok("Hello")["input_ids"][0] != tok.bos_token_id  # no BOS added
        digits = tok("12345")["input_ids"]
        assert [tok.decode([i]) for i in digits] == list("12345")  # digits split one by one
    assert cached.get_vocab() == fresh.get_vocab()
    assert cached.all_special_tokens == fresh.all_special_tokens
    samples = ["Hello world!", "  leading spaces\tand\ttabs\n\nnew lines", "3.14159 × 2 = 6.28318",
               "<|im_start|>user\nhi<|im_end|>", "naïve café — 日本語 🙂", "def f(x):\n    return x**2"]
    for sample in samples:
        assert cached(sample)["input_ids"] == fresh(sample)["input_ids"], sample
        assert cached.decode(cached(sample)["input_ids"]) == fresh.decode(fresh(sample)["input_ids"])
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 12 and 30."}]
    for messages in (chat, chat[1:]):
        assert (cached.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                == fresh.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def test_bfloat16_has_its_own_folder_and_reloads_bit_identical(cold, tiny_gguf: Path) -> None:
    import torch

    root = cold[0]
    direct, _ = load_model_and_tokenizer(str(tiny_gguf), dtype="bfloat16", cache_dir=str(root))
    warm, _ = load_model_and_tokenizer(str(tiny_gguf), dtype="bfloat16", cache_dir=str(root))
    assert sorted(p.name.split("-")[1] for p in _entries(root)) == ["bfloat16", "float32"]
    assert warm.dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), warm.state_dict().values()))


def test_a_damaged_cache_folder_is_rebuilt(cold, tiny_gguf: Path, tmp_path: Path, caplog) -> None:
    import shutil

    import torch

    root = tmp_path / "cache"
    shutil.copytree(cold[0] / "gguf", root / "gguf", ignore=shutil.ignore_patterns("*bfloat16*"))
    (folder,) = _entries(root)
    (folder / "model.safetensors").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="refine.backends.gguf_cache"):
        model, _ = load_model_and_tokenizer(str(tiny_gguf), dtype="float32", cache_dir=str(root))
    assert "does not load" in caplog.text
    assert [p.name for p in _entries(root)] == [folder.name]  # rebuilt in place, nothing left over
    assert (folder / "model.safetensors").stat().st_size > 1000
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), cold[1].state_dict().values()))


def test_an_unwritable_cache_is_warned_about_once_and_the_model_loads(cold, tiny_gguf: Path, tmp_path: Path,
                                                                     caplog, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(gguf_cache, "_warned", set())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    root = blocker / "cache"  # cannot be created, even by root
    with caplog.at_level(logging.INFO, logger="refine.backends.gguf_cache"):
        model, tokenizer = load_model_and_tokenizer(str(tiny_gguf), dtype="float32", cache_dir=str(root))
        assert gguf_cache.store(model, tokenizer, root, "key", tiny_gguf) is None  # again: not warned again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == gguf_cache.__name__]
    assert len(warnings) == 1 and "cannot use the model cache" in warnings[0].getMessage()
    # loaded without the cache, from the GGUF file alone: the same model the cached one is
    cached = cold[1].state_dict()
    assert all(torch.equal(tensor, cached[name]) for name, tensor in model.state_dict().items())


def test_concurrent_first_loads_leave_one_complete_folder(cold, tiny_gguf: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers that finish together: each wrote its own temporary folder, the first rename wins,
    the others keep that folder and delete theirs; no reader ever sees a partial folder."""
    _, model, tokenizer = cold
    root = tmp_path / "cache"
    writers = 3
    both_written = threading.Barrier(writers)
    save = gguf_cache.save_folder

    def save_then_wait(*args):
        save(*args)
        both_written.wait(timeout=60)

    monkeypatch.setattr(gguf_cache, "save_folder", save_then_wait)
    key = gguf_cache.cache_key(tiny_gguf, model.dtype)
    results: list[Path | None] = []
    threads = [threading.Thread(target=lambda: results.append(gguf_cache.store(model, tokenizer, root, key, tiny_gguf)))
               for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [root / "gguf" / key] * writers
    assert [p.name for p in _entries(root)] == [key]
    assert gguf_cache.cached_folder(root, key) == root / "gguf" / key
    monkeypatch.setattr(gguf_cache, "save_folder", save)
    warm, _ = gguf_cache.load_gguf(tiny_gguf, model.dtype, root)
    assert warm.config.vocab_size == model.config.vocab_size


def test_where_the_cache_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(gguf_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "refine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert gguf_cache.cache_root() == Path.home() / ".cache" / "refine"
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(tmp_path / "env"))
    assert gguf_cache.cache_root() == tmp_path / "env"
    assert Settings().cache_dir == str(tmp_path / "env")  # REFINE_CACHE_DIR is the setting
    assert gguf_cache.cache_root(str(tmp_path / "setting")) == tmp_path / "setting"  # the setting wins
    assert gguf_cache.cache_root("none") is None
    monkeypatch.setenv(gguf_cache.CACHE_ENV, "none")
    assert gguf_cache.cache_root() is None


def test_folders_left_by_a_killed_writer_are_swept_after_a_day(cold, tiny_gguf: Path, tmp_path: Path) -> None:
    import os
    import time

    _, model, tokenizer = cold
    parent = tmp_path / "cache" / "gguf"
    old, recent = parent / ".tmp-0123456789abcdef-old", parent / ".tmp-0123456789abcdef-recent"
    for folder in (old, recent):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert gguf_cache.store(model, tokenizer, tmp_path / "cache", "key", tiny_gguf) == parent / "key"
    assert sorted(p.name for p in parent.iterdir()) == [recent.name, "key"]  # a writer may still be at work
