"""The embedded backend: a transformers model in this process, streaming token by token.

One worker thread per loaded model runs generations one at a time, in arrival order (FIFO),
so concurrent callers queue fairly; a caller that stops reading cancels its generation. The
worker also cuts the text at the stop strings (ending the generation there) and says why each
generation ended: end-of-turn token, stop string or `max_new_tokens`.

A model loaded with a PEFT adapter serves both roles: each generation runs with the adapter on
(the CnR role) or off (the base role), so the base weights are loaded once. A GGUF model is read
from its dequantized copy in the cache after its first load (refine.backends.gguf_cache).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from refine.backends.base import BackendError, ContextTooLong, Finish, GenerationParams, Message, StreamItem
from refine.backends.templates import render_chat
from refine.embedded import EMBEDDED_NAME, embedded_gguf
from refine.text import StopStringFilter

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 is faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> Any:
    """torch dtype for a setting: 'auto' is bf16 on GPUs and bf16-capable CPUs, else fp32."""
    import torch

    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    if device != "cpu":
        return torch.bfloat16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def split_model_ref(model: str) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for a model reference; '' is the embedded model."""
    if not model:
        path = embedded_gguf()
        return str(path.parent), path.name
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    return model, None


def load_model_and_tokenizer(model: str, *, adapter: str | None = None, dtype: str = "auto",
                             device: str = "cpu", cache_dir: str | None = None) -> tuple[Any, Any]:
    """Load a causal LM (+ optional PEFT adapter) and its tokenizer from a folder, a GGUF file or
    a hub id (a hub id only works online). A GGUF file is read from its dequantized copy in the
    cache when there is one, and cached when not (refine.backends.gguf_cache; `cache_dir` is the
    cache folder, None = the default, 'none' = no cache)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refine.backends.gguf_cache import cache_root, load_gguf

    ref, gguf = split_model_ref(model)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        if gguf:
            lm, tokenizer = load_gguf(Path(ref) / gguf, torch_dtype, cache_root(cache_dir))
        else:
            tokenizer = AutoTokenizer.from_pretrained(ref)
            lm = AutoModelForCausalLM.from_pretrained(ref, dtype=torch_dtype)
    except OSError as exc:
        raise BackendError(f"cannot load model {model or EMBEDDED_NAME!r}: {exc}") from exc
    if adapter:
        from peft import PeftModel

        if not Path(adapter).exists():
            raise FileNotFoundError(f"adapter folder not found: {adapter}")
        lm = PeftModel.from_pretrained(lm, adapter)
    lm.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer


class _IncrementalDecoder:
    """Turns token ids into text deltas, one per token, without splitting a UTF-8 character."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the window decoded for context
        self.read = 0  # tokens already turned into text

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]


class _GeneratedOnly:
    """A logits processor applied to the generated tokens only (the prompt is left out)."""

    def __init__(self, inner: Any, prompt_length: int) -> None:
        self.inner, self.prompt_length = inner, prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self.inner(input_ids[:, self.prompt_length:], scores)


def generate_kwargs(params: GenerationParams, prompt_length: int = 0) -> dict[str, Any]:
    """The decoding arguments of `model.generate()` for these settings: greedy or sampling, and
    the repetition controls when set (`repetition_penalty` != 1.0, `no_repeat_ngram_size` > 0)
    as logits processors that look at the generated tokens only — the first `prompt_length`
    tokens are exempt, so a revision may copy the answer it revises (transformers' own
    `repetition_penalty=` and `no_repeat_ngram_size=` would count the prompt too).
    `max_new_tokens`, the streamer and the stopping criteria are added by the caller."""
    from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    kwargs: dict[str, Any] = {"do_sample": False}
    if params.temperature > 0:
        kwargs = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
    processors = []
    if params.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty, prompt_ignore_length=prompt_length))
    if params.no_repeat_ngram_size > 0:
        processors.append(_GeneratedOnly(NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size), prompt_length))
    if processors:
        kwargs["logits_processor"] = LogitsProcessorList(processors)
    return kwargs


@dataclass
class _Job:
    """One generation: its request, and the consumer's queue of StreamItems (a `Finish` or an
    exception is the last item)."""

    messages: list[Message]
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)
    adapter: bool = True  # run with the model's PEFT adapter (when it has one); False = the base model alone


@dataclass
class _Progress:
    """What the worker saw of one generation: tokens generated (the end-of-turn token included),
    whether an end-of-turn token came, and the stop-string filter over the text."""

    stops: StopStringFilter
    tokens: int = 0
    eos: bool = False

    def finish(self, max_new_tokens: int) -> Finish:
        """Why the generation ended, once `generate()` has returned."""
        if self.stops.stopped:
            return Finish("stop", "stop_string", self.tokens)
        if self.eos:
            return Finish("stop", "eos", self.tokens)
        if self.tokens >= max_new_tokens:
            return Finish("length", "max_new_tokens", self.tokens)
        return Finish("unknown", "generate() ended early", self.tokens)


def _post(job: _Job, item: object) -> None:
    """Hand an item to the job's consumer; a consumer that left (or whose loop closed) cancels."""
    if job.cancelled.is_set():
        return
    try:
        job.loop.call_soon_threadsafe(job.out.put_nowait, item)
    except RuntimeError:  # the consumer's event loop is closed
        job.cancelled.set()


class LocalModel:
    """A loaded model with its own generation worker thread.

    With an adapter, the model is the base model with the PEFT adapter attached, and each
    generation says whether the adapter is on: one copy of the base weights serves both the
    base role (adapter switched off for its generations) and the CnR role (adapter on)."""

    def __init__(self, model: str = "", *, adapter: str | None = None, dtype: str = "auto",
                 device: str = "cpu", cache_dir: str | None = None) -> None:
        self.model_ref = model
        self.adapter = adapter
        self.model, self.tokenizer = load_model_and_tokenizer(
            model, adapter=adapter, dtype=dtype, device=device, cache_dir=cache_dir)
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.max_context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name=f"refine-local-{id(self):x}", daemon=True)
        self._worker.start()

    @property
    def base_name(self) -> str:
        """The base model's name (what the model is with its adapter switched off)."""
        return Path(self.model_ref).name if self.model_ref else EMBEDDED_NAME

    @property
    def name(self) -> str:
        """The model's name: the base model's, '+adapter' when it has one."""
        return f"{self.base_name}+{Path(self.adapter).name}" if self.adapter else self.base_name

    def role_name(self, adapter: bool) -> str:
        """The name of the model a generation runs with, its adapter on or off."""
        return self.name if adapter else self.base_name

    def encode(self, messages: list[Message], *, name: str | None = None) -> Any:
        """Token ids (and attention mask, as tensors of shape [1, n]) of a chat rendered with the
        model's chat template, generation prompt added. A template that refuses the system role
        gets the system prompt folded into the first user message; BadRequest if it still refuses
        (naming the model as `name`, default `self.name`)."""
        return render_chat(
            lambda chat: self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ),
            messages,
            template_of=f"model {name or self.name!r}",
        )

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the generation in progress (waiting at most `timeout` s)."""
        self._jobs.put(None)
        if self._worker is not threading.current_thread():
            self._worker.join(timeout)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                result: object = self._generate(job)
            except BackendError as exc:  # a typed refusal (context, template): no traceback to log
                log.info("local generation refused: %s", exc.message)
                result = exc
            except Exception as exc:  # reported to the caller, never kills the worker
                log.exception("local generation failed")
                result = exc
            _post(job, result)

    def _generate(self, job: _Job) -> Finish:
        """Run one generation, posting its text deltas to the job; return why it ended."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        with_adapter = bool(self.adapter) and job.adapter
        inputs = self.encode(job.messages, name=self.role_name(with_adapter))
        length = inputs["input_ids"].shape[1]
        if self.max_context and length + job.params.max_new_tokens > self.max_context:
            raise ContextTooLong(
                f"the prompt has {length} tokens; with max_new_tokens={job.params.max_new_tokens} it "
                f"exceeds the model's context of {self.max_context} tokens"
            )
        decoder = _IncrementalDecoder(self.tokenizer)
        configured = self.model.generation_config.eos_token_id
        eos = {self.tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
        progress = _Progress(StopStringFilter(job.params.stop))

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() first hands over the prompt
                    self.prompt_seen = True
                    return
                for token_id in value.reshape(-1).tolist():
                    progress.tokens += 1
                    if token_id in eos:
                        progress.eos = True
                        continue
                    text = decoder.push(token_id)
                    if text and (piece := progress.stops.push(text)):
                        _post(job, piece)

            def end(self) -> None:
                pass

        class Ended(StoppingCriteria):
            """Stops at the next token once the consumer left or a stop string came."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = job.cancelled.is_set() or progress.stops.stopped
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

        if job.params.temperature > 0 and job.params.seed is not None:
            torch.manual_seed(job.params.seed)
        # The base role's generations run with the adapter's layers switched off (PEFT's LoRA
        # layers then compute exactly the base layer); the worker runs one generation at a time,
        # so the switch never overlaps another role's generation.
        adapter_off = self.model.disable_adapter() if self.adapter and not with_adapter else nullcontext()
        with torch.inference_mode(), adapter_off:
            self.model.generate(
                **inputs.to(self.model.device),
                max_new_tokens=job.params.max_new_tokens,
                streamer=Streamer(),
                stopping_criteria=StoppingCriteriaList([Ended()]),
                pad_token_id=self.tokenizer.pad_token_id,
                **generate_kwargs(job.params, prompt_length=inputs["input_ids"].shape[1]),
            )
        if tail := progress.stops.flush():
            _post(job, tail)
        return progress.finish(job.params.max_new_tokens)


class LocalBackend:
    """Backend over a LocalModel; several backends may share one model (one queue). A backend
    over a model with an adapter runs with it (`adapter=True`, the default) or without it
    (`adapter=False`: the base model, e.g. the base role sharing the CnR role's model)."""

    def __init__(self, model: LocalModel, *, adapter: bool | None = None) -> None:
        if adapter and not model.adapter:
            raise ValueError(f"model {model.name!r} has no adapter to run with")
        self.local = model
        self.adapter = bool(model.adapter) if adapter is None else adapter

    @property
    def model_id(self) -> str:
        return self.local.role_name(self.adapter)

    async def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        """Text deltas (about one per token, cut before any stop string), then the `Finish`:
        ("stop", "eos"), ("stop", "stop_string") or ("length", "max_new_tokens"), with the number
        of tokens generated. Queued behind the model's other generations; leaving early (closing
        the stream) cancels this one."""
        loop = asyncio.get_running_loop()
        job = _Job(messages=messages, params=params, loop=loop, out=asyncio.Queue(), adapter=self.adapter)
        self.local.submit(job)
        produced: list[str] = []
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, Finish):
                    yield item
                    return
                if isinstance(item, BaseException):
                    partial = "".join(produced)
                    if isinstance(item, BackendError):
                        raise item.with_partial(partial) from item
                    raise BackendError(f"local generation failed: {item}", partial=partial) from item
                produced.append(item)
                yield item
        finally:
            job.cancelled.set()

    async def aclose(self) -> None:
        """Nothing to release: the LocalModel is owned (and closed) by whoever loaded it."""

