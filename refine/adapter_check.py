"""Checking a PEFT adapter folder against its base model before anything loads.

A missing or empty folder, or an adapter made for another base model, is found in milliseconds
from small files — the adapter's `adapter_config.json` and the header of its safetensors file
(tensor names and shapes), and the base model's `config.json` or GGUF header — instead of after
minutes of loading, as a 100-line "size mismatch" traceback from PEFT.

The shapes decide, not the names: a base given as a local copy of the adapter's
`base_model_name_or_path` is the same model. A LoRA `lora_A` weight is [r, in_features] and a
`lora_B` weight [out_features, r]; for the projections of Llama-style models (most chat models)
those follow from the config's hidden size, intermediate size, head counts and layer count.
Modules the check does not know are left to the loader.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO

from refine.errors import FileProblem, RefineError

ADAPTER_SETTING = "REFINE_CNR_ADAPTER (--cnr-adapter)"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(RefineError):
    """The adapter folder cannot be used with the base model it is given."""


# --- the base model's dimensions ------------------------------------------------------------

_GGUF_KEYS = {
    "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
    "block_count": "num_hidden_layers", "attention.key_length": "head_dim",
}
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def _read(fh: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("the GGUF header ends early")
    return struct.unpack(fmt, data)[0]


def _gguf_string(fh: BinaryIO) -> str:
    return fh.read(_read(fh, "<Q")).decode("utf-8", "replace")


def _gguf_value(fh: BinaryIO, kind: int) -> Any:
    if kind in _GGUF_SCALARS:
        return _read(fh, _GGUF_SCALARS[kind])
    if kind == 8:
        return _gguf_string(fh)
    if kind == 9:  # an array: skipped (tokenizer vocabularies), its items read past
        item, count = _read(fh, "<I"), _read(fh, "<Q")
        if item in _GGUF_SCALARS:
            fh.seek(struct.calcsize(_GGUF_SCALARS[item]) * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _gguf_value(fh, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def gguf_config(path: str | Path) -> dict[str, Any]:
    """The model dimensions in a GGUF file's header (as transformers config names), its
    architecture and name; reads the key-value header only, not the tensors."""
    config: dict[str, Any] = {}
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = _read(fh, "<I")
        _read(fh, "<Q" if version >= 2 else "<I")  # tensor count
        count = _read(fh, "<Q" if version >= 2 else "<I")
        for _ in range(count):
            key = _gguf_string(fh)
            if key.startswith("tokenizer.") and "hidden_size" in config:
                break  # the vocabulary follows: the dimensions came before it
            value = _gguf_value(fh, _read(fh, "<I"))
            if key == "general.architecture":
                config["model_type"] = value
            elif key == "general.name":
                config["name"] = value
            else:
                arch, _, rest = key.partition(".")
                if arch == config.get("model_type") and rest in _GGUF_KEYS:
                    config[_GGUF_KEYS[rest]] = value
    return config


def base_config(model: str) -> dict[str, Any] | None:
    """The base model's config (hidden size, …) from its config.json or GGUF header, or None when
    it cannot be read cheaply (a hub id not in the local cache); '' is the embedded model."""
    from refine.embedded import embedded_gguf

    try:
        if not model:
            return gguf_config(embedded_gguf())
        path = Path(model).expanduser()
        if path.suffix == ".gguf":
            return gguf_config(path) if path.is_file() else None
        if path.is_dir():
            file = path / "config.json"
            return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text(encoding="utf-8"))
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return None
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(model, "config.json")).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - the check is a courtesy: the loader still reports what it finds
        return None


# --- the adapter ----------------------------------------------------------------------------

def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a safetensors file's header only."""
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        if size > 100_000_000:
            raise ValueError("implausible safetensors header")
        header = json.loads(fh.read(size))
    return {name: list(info["shape"]) for name, info in header.items() if name != "__metadata__"}


_LORA = re.compile(r"layers\.(\d+)\..*?(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


def _expected(config: dict[str, Any]) -> dict[str, tuple[int, int]] | None:
    hidden = config.get("hidden_size") or config.get("n_embd")
    if not isinstance(hidden, int):
        return None
    heads = config.get("num_attention_heads")
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or (hidden // heads if isinstance(heads, int) and heads else None)
    inner = config.get("intermediate_size")
    shapes: dict[str, tuple[int, int]] = {}  # module -> (in_features, out_features)
    if isinstance(heads, int) and isinstance(head_dim, int):
        shapes |= {"q_proj": (hidden, heads * head_dim), "o_proj": (heads * head_dim, hidden)}
        if isinstance(kv, int):
            shapes |= {"k_proj": (hidden, kv * head_dim), "v_proj": (hidden, kv * head_dim)}
    if isinstance(inner, int):
        shapes |= {"gate_proj": (hidden, inner), "up_proj": (hidden, inner), "down_proj": (inner, hidden)}
    return shapes


def shape_mismatch(shapes: dict[str, list[int]], config: dict[str, Any]) -> str | None:
    """What in the adapter's tensor shapes does not fit the base model's config, or None."""
    expected = _expected(config)
    if expected is None:
        return None
    layers = config.get("num_hidden_layers")
    for name, shape in sorted(shapes.items()):
        match = _LORA.search(name)
        if not match or len(shape) != 2:
            continue
        layer, module, side = int(match.group(1)), match.group(2), match.group(3)
        if isinstance(layers, int) and layer >= layers:
            return f"it has weights for layer {layer}, the base model has {layers} layers"
        if module not in expected:
            continue
        want_in, want_out = expected[module]
        got = shape[1] if side == "A" else shape[0]
        want = want_in if side == "A" else want_out
        if got != want:
            which = "input" if side == "A" else "output"
            return f"its {module} weights have {which} size {got}, the base model's have {want}"
    return None


def _made_for(config: dict[str, Any], shapes: dict[str, list[int]]) -> str:
    name = config.get("base_model_name_or_path") or "another model"
    widths = sorted({s[1] for n, s in shapes.items() if ".lora_A" in n and len(s) == 2
                     and re.search(r"\.(q_proj|k_proj|v_proj|gate_proj|up_proj)\.", n)})
    return f"{name} (hidden size {widths[0]})" if len(widths) == 1 else str(name)


def base_label(model: str) -> str:
    """How a base model reference is named in messages."""
    from refine.embedded import EMBEDDED_NAME

    return model or f"the embedded {EMBEDDED_NAME}"


def check_adapter(adapter: str, base_model: str, *, setting: str = ADAPTER_SETTING,
                  base_setting: str = "REFINE_CNR_MODEL (--cnr-model)") -> None:
    """Refuse, in one sentence, an adapter folder that is missing, empty, not a PEFT adapter, or
    made for another base model than `base_model` ('' = the embedded model). Reads small files
    only; a base whose config cannot be read cheaply is not compared (the loader then decides)."""
    folder = Path(adapter).expanduser()
    if not folder.exists():
        raise AdapterError(f"the adapter folder {adapter} does not exist; set {setting} to a PEFT adapter folder "
                           "(e.g. a `refine train` run folder), or to 'none' for no adapter")
    if not folder.is_dir():
        raise AdapterError(f"the adapter {adapter} is a file, not a folder; set {setting} to a PEFT adapter folder, "
                           "or to 'none' for no adapter")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        contents = "empty" if not any(folder.iterdir()) else "not a PEFT adapter"
        raise AdapterError(f"the adapter folder {adapter} has no adapter_config.json ({contents}); set {setting} to a "
                           "folder written by `refine train` or PEFT's save_pretrained, or to 'none' for no adapter")
    from refine.textfiles import read_json_object

    config = read_json_object(config_file, "a PEFT adapter config (an object)")
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise AdapterError(f"the adapter folder {adapter} has no adapter_model.safetensors (only its config); copy "
                           f"the whole adapter folder, or set {setting} to another adapter or 'none'")
    if weights.suffix != ".safetensors":
        return
    try:
        shapes = safetensors_shapes(weights)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise FileProblem(weights, None, f"not a readable safetensors file ({exc}); the adapter is damaged: copy it "
                                         f"again, or set {setting} to another adapter or 'none'") from exc
    base = base_config(base_model)
    if base is None:
        return
    problem = shape_mismatch(shapes, base)
    if problem:
        hidden = base.get("hidden_size") or base.get("n_embd")
        loaded = f"{base_label(base_model)} (hidden size {hidden})" if hidden else base_label(base_model)
        raise AdapterError(f"the adapter {adapter} was made for {_made_for(config, shapes)}, not for the base model "
                           f"loaded with it, {loaded}: {problem}; set {setting} to an adapter trained on this base, "
                           f"or {base_setting} to the adapter's base model")
