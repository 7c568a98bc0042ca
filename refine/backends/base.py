"""The one small interface every model backend implements, and its typed errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}

# Why a generation ended, as every backend reports it:
#   stop        it ended by itself: end of turn / EOS token, or one of the stop strings
#   length      it hit max_new_tokens (the text is cut off)
#   filtered    the server withheld the rest (OpenAI's `content_filter`)
#   tool_calls  the model called a tool instead of (or after) answering
#   unknown     the server did not say (a stream that ended with [DONE] but no finish reason)
FinishReason = Literal["stop", "length", "filtered", "tool_calls", "unknown"]


@dataclass(frozen=True)
class Finish:
    """The last item of every stream that ends normally: why the generation ended.

    `detail` keeps the server's own word (OpenAI `finish_reason`, TGI `details.finish_reason`:
    "eos_token", "stop_sequence", "length"; local: "eos", "stop_string", "max_new_tokens").
    `tokens` is the number of generated tokens where the backend knows it.
    """

    reason: FinishReason
    detail: str = ""
    tokens: int | None = None


StreamItem = str | Finish  # a text delta, or the closing Finish

# Reasoning text a backend receives apart from the answer (OpenAI-compatible `reasoning_content`)
# is passed on inside these tags, so that one splitter (refine.thinking) keeps every model's
# reasoning out of the answer, whichever way the server sent it.
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one generation; temperature 0 means greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    # Local backend only (remote servers get these from their own launch settings):
    repetition_penalty: float = 1.0  # >1 lowers the odds of tokens already in the text (CTRL, Keskar et al. 2019)
    no_repeat_ngram_size: int = 0  # >0 forbids repeating any n-gram of this many tokens


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

    def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        """Yield the answer as text deltas (one per token where the server allows), then one
        `Finish` saying why it ended. Stop strings in `params.stop` end the text before them.

        Raises a BackendError subclass; one raised after the first delta carries `partial`.
        """
        ...

    async def aclose(self) -> None:
        """Release connections, threads or models held by the backend."""
        ...


async def collect(stream: AsyncIterator[StreamItem]) -> tuple[str, Finish]:
    """Drain a stream: (the whole text, its Finish). A stream that ends without a Finish
    reports reason "unknown". Closes the stream."""
    from contextlib import aclosing

    parts: list[str] = []
    finish = Finish("unknown")
    async with aclosing(stream) as items:
        async for item in items:
            if isinstance(item, Finish):
                finish = item
            else:
                parts.append(item)
    return "".join(parts), finish


def fold_system(messages: list[Message]) -> list[Message]:
    """The same chat without a system message: its text opens the first user message (what
    Gemma's template and some servers require, since they refuse a system role). Unchanged when
    there is no system message."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if not system:
        return rest
    prefix = "\n\n".join(system)
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{prefix}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": prefix}, *rest]
