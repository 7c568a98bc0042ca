"""The `openai` backend: streaming `/v1/chat/completions` against any OpenAI-compatible server
(TGI's Messages API, vLLM, SGLang, llama.cpp's server, hosted APIs).

The server applies the chat template. One delta is yielded per chunk that carries text, so a
consumer that counts deltas counts tokens (give or take the think tags below). The stream ends
at `data: [DONE]`; a stream that ends with neither text nor a finish reason is an error, not an
empty answer (llama.cpp's server has answered a prompt longer than its context that way). The
chunks' `finish_reason` (and `usage.completion_tokens`, when the server sends usage) becomes the
closing `Finish`.

Reasoning that the server sends apart (`reasoning_content`: vLLM, SGLang, llama.cpp, DeepSeek;
`reasoning`: newer vLLM, OpenRouter) is passed on as text inside THINK_OPEN/THINK_CLOSE, ahead of
the answer, as a model that writes its reasoning inline would have it.

A server (or its chat template) that refuses a system message answers 400/422 before streaming;
the request is then sent once more with the system prompt folded into the first user message,
and if that is accepted the backend folds every later request directly.
See `sse.py` for why httpx is used directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from refine.backends.base import (
    THINK_CLOSE,
    THINK_OPEN,
    BackendError,
    BadRequest,
    ContextTooLong,
    Finish,
    GenerationParams,
    Message,
    StreamBroken,
    StreamItem,
    fold_system,
)
from refine.backends.http_errors import after_first_delta, error_from_event, is_error_payload
from refine.backends.sse import EventStreamClient, parse_body
from refine.backends.streams import finish_from_server, stop_at_strings
from refine.backends.templates import has_system

log = logging.getLogger(__name__)

MAX_STOP = 4  # stop sequences OpenAI's hosted API accepts; more are applied client-side only


def chat_completions_endpoint(url: str) -> tuple[str, str]:
    """Split a server URL into (base, path of chat completions): `http://h:8000`,
    `http://h:8000/v1` and `.../v1/chat/completions` all reach `/v1/chat/completions`."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url.removesuffix("/chat/completions"), "/chat/completions"
    if url.endswith("/v1"):
        return url, "/chat/completions"
    return url, "/v1/chat/completions"


class OpenAICompatBackend:
    """Streams chat completions from an OpenAI-compatible server."""

    def __init__(
        self,
        url: str,
        *,
        model: str = "",
        api_key: SecretStr | str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
    ) -> None:
        """`model` is the served model name (empty: let the server pick, as TGI, llama.cpp and
        vLLM with one model do); `api_key` defaults to the OPENAI_API_KEY environment variable."""
        token = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        base, self._path = chat_completions_endpoint(url)
        self._http = EventStreamClient(
            base,
            name="OpenAI-compatible server",
            token=token or os.environ.get("OPENAI_API_KEY"),
            timeout=timeout,
            connect_timeout=connect_timeout,
        )
        self._model = model
        self._served = ""  # the model name the server reports in its chunks
        self._fold_system = False  # set once the server refused a system message and took it folded

    def __repr__(self) -> str:
        return f"OpenAICompatBackend({self._http.where}, model_id={self.model_id!r})"

    @property
    def model_id(self) -> str:
        return self._model or self._served or self._http.where

    def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        """Yield the answer's text deltas, one per streamed chunk that carries text (reasoning
        wrapped in think tags first), cut before any stop string, then the `Finish` from the
        chunks' `finish_reason` ("unknown" when the stream ended at [DONE] without one)."""
        return stop_at_strings(self._stream_folding(messages, params), params.stop)

    async def _stream_folding(
        self, messages: list[Message], params: GenerationParams
    ) -> AsyncIterator[StreamItem]:
        """`_stream`, sent again with the system prompt folded into the first user message when
        the server refuses the request (400/422, not "context too long") before any delta."""
        folding = self._fold_system and has_system(messages)
        first = fold_system(messages) if folding else messages
        try:
            async with aclosing(self._stream(first, params)) as items:
                async for item in items:
                    yield item
            return
        except BadRequest as err:
            if folding or not has_system(messages) or isinstance(err, ContextTooLong) or err.partial:
                raise
            refused = err.message
        async with aclosing(self._stream(fold_system(messages), params)) as items:
            async for item in items:
                if not self._fold_system:
                    self._fold_system = True
                    log.info("%s refused a system message (%s); folding system prompts into the first "
                             "user message from now on", self._http.where, refused)
                yield item

    async def _stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        text: list[str] = []  # everything yielded so far (think tags included): the partial answer
        chunks = _ChunkState()
        done = False
        try:
            async with aclosing(self._http.events(self._path, self._body(messages, params))) as events:
                async for event in events:
                    if event.field == "data" and event.data.strip() == "[DONE]":
                        done = True
                        break
                    payload = parse_body(event.data.encode())
                    if event.field == "error" or is_error_payload(payload):
                        raise error_from_event(self._http.where, payload)
                    if not isinstance(payload, dict):
                        raise BackendError(
                            f"{self._http.where} sent an event that is not a chunk: {event.data[:200]!r}"
                        )
                    self._served = self._served or str(payload.get("model") or "")
                    for piece in chunks.read(payload):
                        text.append(piece)
                        yield piece
            if not done and text and chunks.finish_reason is None:
                raise StreamBroken(f"{self._http.where} ended the stream without a finish reason or [DONE]")
            if not text and chunks.finish_reason is None:
                raise StreamBroken(
                    f"{self._http.where} ended the stream without any text or finish reason "
                    "(llama.cpp's server does this when the prompt does not fit its context size: check its log)"
                )
        except BackendError as err:
            if text:
                raise after_first_delta(err, "".join(text)) from err
            raise
        if chunks.thinking:
            yield THINK_CLOSE
        yield chunks.finish()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def _body(self, messages: list[Message], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "stream": True,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
        }
        if self._model:
            body["model"] = self._model
        if params.top_p < 1.0:  # 1.0 is everyone's default, and TGI refuses it
            body["top_p"] = params.top_p
        if stop := [s for s in params.stop if s][:MAX_STOP]:
            body["stop"] = stop
        if params.seed is not None:
            body["seed"] = params.seed
        return body


@dataclass
class _ChunkState:
    """What the chunks of one stream said so far (choice 0 only): the last finish reason, the
    completion token count from a usage chunk, and whether a reasoning block is open."""

    finish_reason: str | None = None
    completion_tokens: int | None = None
    thinking: bool = False  # inside THINK_OPEN … (reasoning deltas), THINK_CLOSE not yet sent
    answered: bool = False  # a content delta has been passed on

    def read(self, chunk: dict[str, Any]) -> list[str]:
        """The text pieces to pass on for one chunk: reasoning (opening the think block before
        the first), then content (closing the block before the first content after it).
        Reasoning that arrives after the answer has started is dropped: it cannot be shown apart
        from the answer any more."""
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.completion_tokens = usage["completion_tokens"]
        pieces: list[str] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning and not self.answered:
                if not self.thinking:
                    self.thinking = True
                    pieces.append(THINK_OPEN)
                pieces.append(reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                if self.thinking:
                    self.thinking = False
                    pieces.append(THINK_CLOSE)
                self.answered = True
                pieces.append(content)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        return pieces

    def finish(self) -> Finish:
        """The stream's Finish, once it has ended."""
        return finish_from_server(self.finish_reason, self.completion_tokens)
