"""Retries with exponential backoff and jitter, for failures before the first delta only.

Only failures where the server cannot still be working on the request are retried
(`worth_retrying`): the connection could not be made (refused, or no connect within the connect
timeout), or the server refused the request as full (429, TGI's `overloaded`) or unavailable
(503). A read timeout is not retried: the server took the prompt and may still be working on
it (a long prompt's prefill), and sending it again would make it work twice. The abandoned
request's connection is closed before the error arrives here (see sse.py), so a server that
notices disconnects stops. Once a delta has gone out, nothing is retried (the caller already
has part of an answer) and the inner backend's error, carrying `partial`, passes through
unchanged, as does the closing `Finish`. Works around any `Backend`, remote or local.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

import httpx

from refine.backends.base import (
    Backend,
    BackendError,
    BackendOverloaded,
    GenerationParams,
    Message,
    StreamItem,
)

log = logging.getLogger(__name__)
RETRY_STATUSES = (429, 503)


def worth_retrying(err: BackendError) -> bool:
    """Whether a failure before the first delta may be retried: a connection that was never
    made, or a server that said it is full or unavailable (429, 503, TGI `overloaded`)."""
    if isinstance(err, BackendOverloaded) or err.status in RETRY_STATUSES:
        return True
    cause: BaseException | None = err
    for _ in range(8):  # the transport error the backend converted, through any copies
        cause = cause.__cause__ if cause is not None else None
        if cause is None:
            return False
        if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
            return True
    return False


def backoff_delay(
    attempt: int, *, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (0-based): base·2^attempt, capped, times a
    random factor in [0.5, 1) so that many clients do not retry in step."""
    return min(cap, base * 2**attempt) * (0.5 + 0.5 * rand())


class RetryingBackend:
    """A Backend that retries its inner backend's failures before the first delta."""

    def __init__(
        self, inner: Backend, *, retries: int = 2, base_delay: float = 0.5, max_delay: float = 8.0
    ) -> None:
        """`retries` is the number of extra attempts (0 = try once)."""
        self.inner = inner
        self.retries = retries
        self.base_delay = base_delay
        self.max_delay = max_delay

    def __repr__(self) -> str:
        return f"RetryingBackend({self.inner!r}, retries={self.retries})"

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    async def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[StreamItem]:
        """The inner stream (its deltas and Finish as they are), restarted after a retryable
        failure that came before any item."""
        attempt = 0
        while True:
            started = False
            try:
                async with aclosing(self.inner.stream(messages, params)) as deltas:
                    async for item in deltas:
                        started = True
                        yield item
                return
            except BackendError as err:
                if started or not err.retryable or not worth_retrying(err) or attempt >= self.retries:
                    if attempt and not started:
                        raise type(err)(
                            f"{err.message} (gave up after {attempt + 1} attempts)",
                            partial=err.partial,
                            status=err.status,
                        ) from err
                    raise
                delay = backoff_delay(attempt, base=self.base_delay, cap=self.max_delay)
                attempt += 1
                log.warning("%s; retry %d of %d in %.1f s", err.message, attempt, self.retries, delay)
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the inner backend."""
        await self.inner.aclose()
