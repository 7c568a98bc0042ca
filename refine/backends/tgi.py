"""The `tgi` backend: Text Generation Inference's native protocol.

The chat template is applied here, with the model's own tokenizer, and the prompt goes to
`/generate_stream` (one event per token; the last carries `generated_text` and, because
`details: true` is sent, the finish reason, which becomes the stream's `Finish`). `/info` gives
the served model id, its token limits (a prompt that cannot fit fails before it is sent) and how
many stop sequences it accepts (more are applied client-side only). `adapter_id` selects a LoRA
adapter loaded in the same server (TGI's `LORA_ADAPTERS`). See `sse.py` for why httpx is used
directly.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from refine.backends.base import (
    BackendError,
    ContextTooLong,
    Finish,
    GenerationParams,
    Message,
    StreamBroken,
    StreamItem,
)
from refine.backends.http_errors import after_first_delta, error_from_event, is_error_payload
from refine.backends.sse import EventStreamClient, parse_body
from refine.backends.streams import finish_from_server, stop_at_strings
from refine.backends.templates import render_chat


class TGIBackend:
    """Streams from a TGI server's `/generate_stream`, chat template applied client-side."""

    def __init__(
        self,
        url: str,
        *,
        model: str = "",
        adapter_id: str | None = None,
        tokenizer: str | None = None,
        api_key: SecretStr | str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        """`model` names the served model (default: what `/info` says); `tokenizer` is a local
        folder, GGUF file or hub id holding the chat template (default: the model);
        `api_key` defaults to the HF_TOKEN environment variable."""
        token = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._http = EventStreamClient(
            url,
            name="TGI",
            token=token or os.environ.get("HF_TOKEN"),
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self._model = model
        self._adapter = adapter_id or None
        self._tokenizer_name = tokenizer
        self._tokenizer: Any = None
        self._info: dict[str, Any] | None = None
        self._setup = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TGIBackend({self._http.where}, model_id={self.model_id!r})"

    @property
    def model_id(self) -> str:
        model = self._model or (self._info or {}).get("model_id") or self._http.where
        return f"{model}+{self._adapter}" if self._adapter else model

    async def info(self) -> dict[str, Any]:
        """The server's `/info` (model id, token limits, version), fetched once."""
        if self._info is None:
            info = await self._http.get_json("/info")
            if not isinstance(info, dict):
                raise BackendError(f"{self._http.where} answered /info with {info!r}, not an object")
            self._info = info
        return self._info

    async def health(self) -> None:
        """Return if `/health` answers 200; raise BackendUnavailable (503) or another typed error."""
        await self._http.get("/health")

    def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        """Yield the answer one token at a time (special tokens such as EOS are left out), cut
        before any stop string, then the `Finish` from the last event's `details` ("stop" for
        `eos_token` / `stop_sequence` or a stop string seen here, "length", else "unknown")."""
        return stop_at_strings(self._stream(messages, params), params.stop)

    async def _stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        prompt = await self._prompt(messages, params)
        body = {"inputs": prompt, "parameters": self._parameters(params, await self.info())}
        text: list[str] = []
        finish: Finish | None = None
        try:
            async with aclosing(self._http.events("/generate_stream", body)) as events:
                async for event in events:
                    payload = parse_body(event.data.encode())
                    if event.field == "error" or is_error_payload(payload):
                        raise error_from_event(self._http.where, payload)
                    token = payload.get("token") if isinstance(payload, dict) else None
                    if not isinstance(token, dict):
                        raise BackendError(
                            f"{self._http.where} sent an event that is not a TGI token: {event.data[:200]!r}"
                        )
                    if not token.get("special"):
                        text.append(token.get("text", ""))
                        yield text[-1]
                    if payload.get("generated_text") is not None:
                        finish = _finish(payload.get("details"))
                        break
            if finish is None:
                raise StreamBroken(f"{self._http.where} ended the stream before its last token")
        except BackendError as err:
            if text:
                raise after_first_delta(err, "".join(text)) from err
            raise
        yield finish

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def _parameters(self, params: GenerationParams, info: dict[str, Any]) -> dict[str, Any]:
        """The request's `parameters`. TGI refuses temperature <= 0 and top_p outside (0, 1):
        greedy is `do_sample: false`. Stop strings beyond `/info`'s `max_stop_sequences` are not
        sent (TGI would refuse the request); the client-side cut still applies them."""
        out: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "details": True,  # the server's default is false, despite its schema
            "return_full_text": False,
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            out["temperature"] = params.temperature
            if params.top_p < 1.0:
                out["top_p"] = params.top_p
        limit = info.get("max_stop_sequences")
        stop = [s for s in params.stop if s][: limit if isinstance(limit, int) and limit >= 0 else None]
        if stop:
            out["stop"] = stop
        if params.seed is not None:
            out["seed"] = params.seed
        if self._adapter:
            out["adapter_id"] = self._adapter
        return out

    async def _prompt(self, messages: list[Message], params: GenerationParams) -> str:
        """The chat-templated prompt, checked against the server's token limits."""
        async with self._setup:
            info = await self.info()
            if self._tokenizer is None:
                name = self._tokenizer_name or self._model or str(info.get("model_id", ""))
                self._tokenizer = await asyncio.to_thread(load_tokenizer, name)
        # On the loop thread: a few milliseconds, and a fast tokenizer shared between threads can
        # fail with "Already borrowed" when requests run concurrently.
        template_of = f"tokenizer {getattr(self._tokenizer, 'name_or_path', '') or self._tokenizer_name!r}"
        prompt, n_tokens = render_chat(
            lambda chat: render_prompt(self._tokenizer, chat), messages, template_of=template_of
        )
        max_input = info.get("max_input_tokens") or info.get("max_input_length")
        max_total = info.get("max_total_tokens")
        if max_input and n_tokens > max_input:
            raise ContextTooLong(
                f"the prompt is {n_tokens} tokens; {self._http.where} accepts at most {max_input} input tokens"
            )
        if max_total and n_tokens + params.max_new_tokens > max_total:
            raise ContextTooLong(
                f"the prompt ({n_tokens} tokens) + max_new_tokens ({params.max_new_tokens}) exceed the "
                f"{max_total} total tokens {self._http.where} allows; shorten the conversation or lower max_new_tokens"
            )
        return prompt


def _finish(details: Any) -> Finish:
    """The Finish of the last event's `details` (absent or null: "unknown")."""
    if not isinstance(details, dict):
        return finish_from_server(None)
    return finish_from_server(details.get("finish_reason"), details.get("generated_tokens"))


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Any:
    """Load a tokenizer from a folder, a GGUF file or a hub id (once per name); a BackendError
    if it cannot be."""
    from transformers import AutoTokenizer

    if not name:
        raise BackendError("no tokenizer for the tgi backend's chat template: set REFINE_TOKENIZER")
    try:
        path = Path(name).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return AutoTokenizer.from_pretrained(str(path) if path.exists() else name)
    except Exception as exc:  # OSError offline or missing, ValueError for unknown formats
        raise BackendError(
            f"cannot load the tokenizer {name!r} for the tgi backend's chat template ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); offline, set REFINE_TOKENIZER to a local folder "
            "holding the model's tokenizer files"
        ) from exc


def render_prompt(tokenizer: Any, messages: list[Message]) -> tuple[str, int]:
    """The prompt as TGI should receive it, and its length in tokens as TGI will count it.

    TGI's `/generate_stream` always adds the tokenizer's special tokens (the switch is not part of
    its API), so a BOS that the template wrote itself is removed here to avoid a doubled BOS.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(
            f"the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "point REFINE_TOKENIZER at the instruct model's tokenizer"
        )
    prompt = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and tokenizer.bos_token_id in tokenizer("")["input_ids"]:
        prompt = prompt[len(bos) :]
    return prompt, len(tokenizer(prompt)["input_ids"])
