"""What a model server says when it fails, turned into the typed errors of `base.py`.

One place for both HTTP backends: an error status with its body, an error event inside a 200
stream, a transport failure (refused, cut, timed out), and the rule for failures after the first
delta. The bodies it reads:

- TGI: `{"error": "...", "error_type": "validation" | "generation" | "overloaded" |
  "incomplete_generation" | "healthcheck"}` (also as an event inside a 200 stream).
- OpenAI and most compatible servers (vLLM, SGLang, llama.cpp, TGI's Messages API):
  `{"error": {"message": ..., "type": ..., "code": ...}}`; older vLLM: `{"object": "error",
  "message": ..., "type": ..., "code": 400}`; FastAPI validation: `{"detail": ...}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from refine.backends.base import (
    BackendError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    StreamBroken,
)

# How servers say "the prompt (plus the tokens asked for) does not fit the context window".
_CONTEXT_PHRASES = (
    r"`?inputs`? tokens \+ `?max_new_tokens`? must be <=",  # TGI (and its Messages API)
    r"`?inputs`? must have less than \d+ tokens",  # TGI
    r"maximum context length",  # OpenAI, vLLM, Mistral, DeepSeek
    r"context_length_exceeded",  # OpenAI error code
    r"longer than the maximum model length",  # vLLM
    r"is too long and exceeds (the )?limit",  # vLLM
    r"longer than the model'?s context length",  # SGLang
    r"exceeds? the available context size",  # llama.cpp
    r"exceed_context_size_error",  # llama.cpp error type
    r"context size has been exceeded",  # llama.cpp (answered with 500)
    r"exceeds the context window",
    r"maximum prompt length",
    r"prompt is too long",
)
_CONTEXT_TOO_LONG = re.compile("|".join(_CONTEXT_PHRASES), re.IGNORECASE)

_MAX_MESSAGE = 500


def is_context_too_long(text: str) -> bool:
    """True when a server's error text says the prompt does not fit the model's context."""
    return bool(_CONTEXT_TOO_LONG.search(text))


def parse_body(raw: bytes) -> Any:
    """The body as JSON when it is JSON, else as text."""
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def describe(payload: Any) -> tuple[str, str, int | None]:
    """(message, error type, status code) found in an error body or event, as far as present."""
    if isinstance(payload, list) and payload:
        return describe(payload[0])
    if not isinstance(payload, dict):
        return _clip(str(payload)), "", None
    error = payload.get("error")
    if isinstance(error, dict):
        return (
            _clip(str(error.get("message") or error)),
            str(error.get("type") or error.get("code") or ""),
            _as_status(error.get("code")) or _as_status(error.get("http_status_code")),
        )
    if isinstance(error, str):
        return _clip(error), str(payload.get("error_type") or ""), None
    if "detail" in payload:  # FastAPI
        detail = payload["detail"]
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return _clip(str(detail)), "", None
    message = payload.get("message") or json.dumps(payload)
    return _clip(str(message)), str(payload.get("type") or ""), _as_status(payload.get("code"))


def is_error_payload(payload: Any) -> bool:
    """True for an error object sent where a normal event was expected."""
    return isinstance(payload, dict) and (
        payload.get("error") is not None or payload.get("object") == "error"
    )


def error_from_status(where: str, status: int, body: Any) -> BackendError:
    """The typed error for an HTTP error answer (status >= 400) from the server `where`."""
    message, error_type, _ = describe(body)
    cls = _classify(status, error_type, message)
    hint = " (check the API key)" if status in (401, 403) else ""
    kind = f" {error_type}" if error_type else ""
    return cls(f"{where} answered HTTP {status}{kind}: {message}{hint}", status=status)


def error_from_event(where: str, payload: Any) -> BackendError:
    """The typed error for an error event that arrived inside a 200 stream before any text."""
    message, error_type, status = describe(payload)
    cls = _classify(status, error_type, message) if (status or error_type) else BackendError
    if cls is BackendError and is_context_too_long(message):
        cls = ContextTooLong
    kind = f" ({error_type})" if error_type else ""
    return cls(f"{where} sent an error in its stream{kind}: {message}", status=status)


def error_from_transport(
    where: str, exc: Exception, *, timeout: float, connect_timeout: float
) -> BackendError:
    """The typed error for a failure below HTTP: refused, cut, or no bytes within the timeout."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return BackendTimeout(f"could not connect to {where} within {connect_timeout:g} s")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"{where} sent nothing for {timeout:g} s ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError):
        return BackendUnavailable(f"cannot connect to {where}: {detail}")
    if isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)):
        return BackendUnavailable(f"the connection to {where} was cut: {detail}")
    return BackendError(f"cannot talk to {where}: {detail}")


def after_first_delta(err: BackendError, partial: str) -> BackendError:
    """The error to raise once text has streamed: a timeout stays a timeout, all else is a
    broken stream; both carry the text so far."""
    if isinstance(err, (BackendTimeout, StreamBroken)):
        return err.with_partial(partial)
    broken = StreamBroken(
        f"the stream broke off after {len(partial)} characters: {err.message}",
        partial=partial,
        status=err.status,
    )
    broken.__cause__ = err
    return broken


def _classify(status: int | None, error_type: str, message: str) -> type[BackendError]:
    kind = error_type.lower()
    if status == 429 or kind in ("overloaded", "rate_limit_exceeded"):
        return BackendOverloaded
    if is_context_too_long(f"{message} {error_type}"):
        return ContextTooLong
    if status in (401, 403, 404):  # credentials or names to fix: neither invalid input nor retryable
        return BackendError
    if status in (400, 413, 422) or kind in ("validation", "invalid_request_error", "badrequesterror"):
        return BadRequest
    if status in (408, 504):
        return BackendTimeout
    if (
        kind in ("generation", "incomplete_generation", "healthcheck")
        or (status or 0) >= 500
        or status == 424
    ):
        return BackendUnavailable
    return BackendError


def _as_status(value: Any) -> int | None:
    if isinstance(value, int) and 100 <= value <= 599:
        return value
    if isinstance(value, str) and value.isdigit() and 100 <= int(value) <= 599:
        return int(value)
    return None


def _clip(text: str) -> str:
    text = re.sub(r"<[^>]+>", " ", text) if text.lstrip().startswith("<") else text  # HTML from a proxy
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
