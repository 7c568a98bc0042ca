"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def as_finished(jobs: Iterable[Awaitable[T]]) -> AsyncIterator[T]:
    """Run the jobs as tasks and yield their results as each finishes; the ones still running
    are cancelled when the caller stops early."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        for finished in asyncio.as_completed(tasks):
            yield await finished
    finally:
        for task in tasks:
            task.cancel()
