"""HTTP plumbing shared by the remote backends: JSON GETs and a POST answered with server-sent
events, with a connect timeout, a next-event timeout, a bearer token, and every failure raised as
a typed error whose message names the server and never contains the token.

Why httpx directly rather than huggingface_hub's AsyncInferenceClient (2.4.0), checked against
the stand-in servers in tests/: that client (a) takes one `timeout` for connecting and reading,
so "connect within 10 s, then a token every 60 s" cannot be said; (b) lets httpx2's ConnectError,
RemoteProtocolError (stream cut) and ReadTimeout (stalled stream) escape unconverted; (c) fails
with httpx2.ResponseNotRead on an error status whose body is chunked instead of reporting it;
(d) ignores llama.cpp's non-standard `error:` lines, so a too-long prompt there becomes an empty
answer; (e) keeps every streamed response in its exit stack until `close()`; (f) refuses
`get_endpoint_info()` for a plain URL unless `provider="hf-inference"`. Mapping failures
precisely is the job here, and the protocol is small (one POST, SSE framing, JSON events).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from refine.backends.base import BackendError, BackendTimeout
from refine.backends.http_errors import (
    error_from_event,
    error_from_status,
    error_from_transport,
    is_error_payload,
    parse_body,
)


@dataclass(frozen=True)
class Event:
    """One server-sent event. `field` is "data", or "error" for llama.cpp's `error:` lines."""

    data: str
    field: str = "data"


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[Event]:
    """Group SSE lines into events; comment lines (keep-alives) and other fields are skipped."""
    data: list[str] = []
    field = "data"
    async for line in lines:
        if not line:
            if data:
                yield Event("\n".join(data), field)
            data, field = [], "data"
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name in ("data", "error"):
            data.append(value.removeprefix(" "))
            field = "error" if name == "error" else field
    # Bytes after the last blank line are an unfinished event: dropped, as the SSE spec says.


def display_url(url: str) -> str:
    """The URL without credentials or query string, fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class EventStreamClient:
    """One server: `base_url` + paths, a bearer token, and the two timeouts."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str,
        token: str | None,
        timeout: float,
        connect_timeout: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.where = f"{name} at {display_url(self.base_url)}"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._token = token or None
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"User-Agent": "refine"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            self._client = httpx.AsyncClient(
                headers=headers, timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout)
            )
        return self._client

    async def get(self, path: str) -> bytes:
        """GET `path`; the body of a 2xx answer, else a typed error."""
        try:
            response = await self._http().get(self.base_url + path)
        except httpx.HTTPError as exc:
            raise self._redact(self._transport_error(exc)) from exc
        if response.status_code >= 400:
            raise self._redact(
                error_from_status(self.where, response.status_code, parse_body(response.content))
            )
        return response.content

    async def get_json(self, path: str) -> Any:
        """GET `path` and decode its JSON body."""
        body = parse_body(await self.get(path))
        if isinstance(body, str):
            raise BackendError(
                f"{self.where} answered {path} with something that is not JSON: {body[:200]!r}"
            )
        return body

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[Event]:
        """POST `body` to `path` and yield the events of the streamed answer.

        Raises BackendTimeout when no event arrives within `timeout` seconds (keep-alive comments
        do not count), and a typed error for an HTTP error or a non-stream answer. Use it inside
        `contextlib.aclosing` so that the connection is released when the caller stops early.

        Whenever the answer is not read to its end (a timeout, an error, a caller that stops),
        its connection is closed, not returned to the pool: httpx closes a connection whose
        response was not read to its end, so the server sees the client leave (vLLM, TGI and
        llama.cpp then stop generating). The test in tests/test_backend_abandon.py holds it to that.
        """
        try:
            async with self._http().stream(
                "POST", self.base_url + path, json=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    raw = await response.aread()
                    raise error_from_status(self.where, response.status_code, parse_body(raw))
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    raise self._not_a_stream(parse_body(await response.aread()))
                async with aclosing(parse_sse(response.aiter_lines())) as parsed:
                    while True:
                        try:
                            async with asyncio.timeout(self.timeout):
                                event = await anext(parsed)
                        except StopAsyncIteration:
                            return
                        except TimeoutError:
                            raise BackendTimeout(
                                f"{self.where} sent no token for {self.timeout:g} s"
                            ) from None
                        yield event
        except httpx.HTTPError as exc:
            raise self._redact(self._transport_error(exc)) from exc
        except BackendError as err:
            raise self._redact(err)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _not_a_stream(self, body: Any) -> BackendError:
        # llama.cpp, for one, has answered a streaming request with 200 and a JSON error body.
        if is_error_payload(body):
            return error_from_event(self.where, body)
        return BackendError(
            f"{self.where} answered with something that is not an event stream: {str(body)[:200]!r}"
        )

    def _transport_error(self, exc: Exception) -> BackendError:
        return error_from_transport(
            self.where, exc, timeout=self.timeout, connect_timeout=self.connect_timeout
        )

    def _redact(self, err: BackendError) -> BackendError:
        """The error itself, or a copy without the token should the server have echoed it
        (with the same cause: the retry policy reads it)."""
        if not self._token or self._token not in err.message:
            return err
        copy = type(err)(err.message.replace(self._token, "***"), partial=err.partial, status=err.status)
        copy.__cause__ = err.__cause__
        return copy
