"""The `openai` backend: streaming `/v1/chat/completions` against any OpenAI-compatible server
(TGI's Messages API, vLLM, SGLang, llama.cpp's server, hosted APIs).

The server applies the chat template. One delta is yielded per chunk that carries text, so a
consumer that counts deltas counts tokens. The stream ends at `data: [DONE]`; a stream that ends
with neither text nor a finish reason is an error, not an empty answer (llama.cpp's server has
answered a prompt longer than its context that way). See `sse.py` for why httpx is used directly.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from pydantic import SecretStr

from refine.backends.base import BackendError, GenerationParams, Message, StreamBroken
from refine.backends.http_errors import after_first_delta, error_from_event, is_error_payload
from refine.backends.sse import EventStreamClient, parse_body


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

    def __repr__(self) -> str:
        return f"OpenAICompatBackend({self._http.where}, model_id={self.model_id!r})"

    @property
    def model_id(self) -> str:
        return self._model or self._served or self._http.where

    async def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[str]:
        """Yield the answer's text deltas, one per streamed chunk that carries text."""
        text: list[str] = []
        finished = False
        try:
            async with aclosing(self._http.events(self._path, self._body(messages, params))) as events:
                async for event in events:
                    if event.field == "data" and event.data.strip() == "[DONE]":
                        break
                    payload = parse_body(event.data.encode())
                    if event.field == "error" or is_error_payload(payload):
                        raise error_from_event(self._http.where, payload)
                    if not isinstance(payload, dict):
                        raise BackendError(
                            f"{self._http.where} sent an event that is not a chunk: {event.data[:200]!r}"
                        )
                    self._served = self._served or str(payload.get("model") or "")
                    for choice in payload.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            text.append(content)
                            yield content
                        finished = finished or bool(choice.get("finish_reason"))
                else:
                    if text and not finished:
                        raise StreamBroken(
                            f"{self._http.where} ended the stream without a finish reason or [DONE]"
                        )
            if not text and not finished:
                raise StreamBroken(
                    f"{self._http.where} ended the stream without any text or finish reason "
                    "(llama.cpp's server does this when the prompt does not fit its context size: check its log)"
                )
        except BackendError as err:
            if text:
                raise after_first_delta(err, "".join(text)) from err
            raise

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
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body
