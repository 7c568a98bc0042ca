"""Retries with exponential backoff and jitter, for failures before the first delta only.

A retryable failure (unavailable, timeout, overloaded) that happens before any text has been
yielded is retried; once a delta has gone out, nothing is retried (the caller already has part
of an answer) and the inner backend's error, carrying `partial`, passes through unchanged, as
does the closing `Finish`. Works around any `Backend`, remote or local.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from refine.backends.base import Backend, BackendError, GenerationParams, Message, StreamItem

log = logging.getLogger(__name__)


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
                if started or not err.retryable or attempt >= self.retries:
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
