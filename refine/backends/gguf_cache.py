"""The dequantized weights of a GGUF model, cached on disk so the next start skips dequantizing.

Loading a GGUF file with transformers parses its metadata (a 49k-token vocabulary and its merges,
in Python), converts its tokenizer and dequantizes every tensor — seconds to minutes on a small
CPU. The first load of a file therefore saves the model it produced as an ordinary transformers
folder (safetensors weights, config, generation config, tokenizer) under

    <cache>/gguf/<sha256 of the file>-<dtype>-transformers-<version>/

and later loads read that folder instead. `<cache>` is the `cache_dir` setting
(REFINE_CACHE_DIR), else $XDG_CACHE_HOME/refine, else ~/.cache/refine; 'none' turns caching off.

The key is the sha256 of the whole file: about 0.1 s for the 98 MB embedded model (≈1 GB/s, SHA-NI),
a few seconds for a multi-GB file — small next to dequantizing it, and exact, where size + mtime +
a hash of the first MB would be fooled by two fine-tunes of one architecture (same size, and a
first MB that is all metadata and vocabulary) and miss on every copy or reinstall (new mtime). The
dtype is in the key because the cached weights are stored in the dtype they were loaded in (bf16
halves the folder and its read time, and reloads bit-identical), and the transformers version
because the GGUF conversion (tensor layout, tokenizer) is its code.

A folder is written to a temporary folder beside its final name, synced to disk, and renamed into
place once complete, with a marker file written last: concurrent first starts each write their
own copy and the first rename wins; a reader only ever sees a complete folder. A folder that fails to load is
discarded and rebuilt from the GGUF file. A cache that cannot be written is warned about once and
the model loads without it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_ENV = "REFINE_CACHE_DIR"
MARKER = "refine-gguf-cache.json"
_OFF = {"none", "off", "0", "false", "no"}
_warned: set[str] = set()


def cache_root(setting: str | os.PathLike | None = None) -> Path | None:
    """Refine's cache folder: `setting`, else $REFINE_CACHE_DIR, else $XDG_CACHE_HOME/refine,
    else ~/.cache/refine; None when the setting (or the variable) says 'none'."""
    value = os.fspath(setting) if setting is not None else os.environ.get(CACHE_ENV, "")
    if value.strip().lower() in _OFF:
        return None
    if value.strip():
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "refine"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def cache_key(gguf: Path, dtype: Any) -> str:
    """The cache folder name of a GGUF file loaded in `dtype` (a torch dtype)."""
    import transformers

    return f"{file_sha256(gguf)}-{str(dtype).removeprefix('torch.')}-transformers-{transformers.__version__}"


def cached_folder(root: Path, key: str) -> Path | None:
    """The complete cache folder for `key`, or None."""
    folder = root / "gguf" / key
    return folder if (folder / MARKER).is_file() else None


def _warn_once(root: Path, what: str, exc: BaseException) -> None:
    if str(root) in _warned:
        log.info("GGUF cache %s: %s (%s)", root, what, exc)
        return
    _warned.add(str(root))
    log.warning("cannot use the model cache %s (%s: %s); loading without it — set REFINE_CACHE_DIR to a "
                "writable folder, or to 'none' to silence this", root, what, exc)


def is_dequantized(model: Any) -> bool:
    """True when no weight stayed packed in GGUF blocks (transformers' `Gguf*` modules, used when
    a GGUF matmul kernel is available): only a dense model is worth caching."""
    return not any(type(module).__name__.startswith("Gguf") for module in model.modules())


def _discard(folder: Path) -> None:
    """Move a broken cache folder out of the way (atomically), then delete it."""
    trash = folder.with_name(f".discarded-{folder.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, trash)
    except OSError:  # gone already (another process discarded it)
        return
    shutil.rmtree(trash, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep(parent: Path, keep: Path, age: float = 86400.0) -> None:
    """Delete temporary folders that a process killed mid-write left more than `age` s ago."""
    for entry in parent.glob(".*"):
        try:
            if entry != keep and entry.name.startswith((".tmp-", ".discarded-")) and \
                    time.time() - entry.stat().st_mtime > age:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def save_folder(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save a model loaded from GGUF (dequantized) and its tokenizer as a plain transformers folder.
    transformers refuses to save a model loaded through its GGUF quantizer, so a shallow copy
    without the quantizer (and a config without `quantization_config`) is saved: same tensors."""
    plain = copy.copy(model)  # shares the modules and their tensors; its own attribute dict
    plain.hf_quantizer = None
    plain.config = copy.deepcopy(model.config)
    if hasattr(plain.config, "quantization_config"):
        del plain.config.quantization_config
    plain.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def store(model: Any, tokenizer: Any, root: Path, key: str, source: Path) -> Path | None:
    """Write the cache folder for `key` (temporary folder, then an atomic rename); the folder, or
    None when the cache cannot be written (warned once per cache folder)."""
    parent = root / "gguf"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:16]}-", dir=parent))
    except OSError as exc:
        _warn_once(root, "cannot create a folder there", exc)
        return None
    final = parent / key
    start = time.perf_counter()
    _sweep(parent, keep=tmp)
    try:
        save_folder(model, tokenizer, tmp)
        for path in tmp.iterdir():
            path.chmod(0o644)  # readable by other users, like any model folder (mkdtemp made it private)
            _fsync(path)  # on disk before the folder gets its name: a crash leaves no torn weights behind
        tmp.chmod(0o755)
        meta = {"source": str(source), "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")  # last: the folder is complete
        _fsync(tmp / MARKER)
        if final.exists() and not (final / MARKER).is_file():
            _discard(final)  # an incomplete folder left by hand or by an older version
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: keep theirs
            return final
    except Exception as exc:  # noqa: BLE001 - caching must never fail a load
        shutil.rmtree(tmp, ignore_errors=True)
        _warn_once(root, "cannot write the dequantized weights there", exc)
        return None
    size = sum(f.stat().st_size for f in final.iterdir())
    log.info("cached the dequantized weights of %s in %s (%.0f MB, %.1f s)", source.name, final, size / 1e6,
             time.perf_counter() - start)
    return final


def load_gguf(gguf: Path, dtype: Any, root: Path | None) -> tuple[Any, Any]:
    """(model, tokenizer) of a GGUF file in `dtype`: from the cache under `root` when it holds this
    file, else from the file itself (and then cached). `root` None = no cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = None
    if root is not None:
        key = cache_key(gguf, dtype)
        folder = cached_folder(root, key)
        if folder is not None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
                log.info("loaded %s from its dequantized copy in %s", gguf.name, folder)
                return model, tokenizer
            except Exception as exc:  # noqa: BLE001 - a damaged copy: discarded, rebuilt below
                log.warning("the cached copy %s of %s does not load (%s); loading the GGUF file again",
                            folder, gguf.name, exc)
                _discard(folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    if root is not None and key is not None:
        if is_dequantized(model):
            store(model, tokenizer, root, key, gguf)
        else:
            log.info("%s keeps its weights packed (a GGUF kernel is available): nothing to cache", gguf.name)
    return model, tokenizer
