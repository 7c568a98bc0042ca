"""The one small interface every model backend implements, and its typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one generation; temperature 0 means greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None


class BackendError(Exception):
    """Base of all backend failures. `partial` holds text streamed before the failure."""

    kind = "error"
    retryable = False

    def __init__(self, message: str, *, partial: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial
        self.status = status

    def with_partial(self, partial: str) -> "BackendError":
        """Return a copy of this error carrying the text produced before it happened."""
        err = type(self)(self.message, partial=partial, status=self.status)
        err.__cause__ = self.__cause__ or self
        return err


class BackendUnavailable(BackendError):
    """The server cannot be reached or is unhealthy (connection refused, 5xx, 503 health)."""

    kind = "unavailable"
    retryable = True


class BackendTimeout(BackendError):
    """Connecting or waiting for the next token took longer than the configured timeout."""

    kind = "timeout"
    retryable = True


class BackendOverloaded(BackendError):
    """The server refused the request because it is full (HTTP 429 or TGI `overloaded`)."""

    kind = "overloaded"
    retryable = True


class BadRequest(BackendError):
    """The server rejected the request as invalid (HTTP 400/422, TGI `validation`)."""

    kind = "bad_request"


class ContextTooLong(BadRequest):
    """The prompt plus requested new tokens do not fit in the model's context window."""

    kind = "context_too_long"


class StreamBroken(BackendError):
    """The stream started and then broke off; `partial` holds what arrived."""

    kind = "stream_broken"


@runtime_checkable
class Backend(Protocol):
    """Streams text deltas for a chat conversation."""

    @property
    def model_id(self) -> str:
        """A human-readable id of the model (and adapter) that answers."""
        ...

    def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[str]:
        """Yield the answer as text deltas (one per token where the server allows).

        Raises a BackendError subclass; one raised after the first delta carries `partial`.
        """
        ...

    async def aclose(self) -> None:
        """Release connections, threads or models held by the backend."""
        ...
