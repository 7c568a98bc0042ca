"""Stream plumbing shared by the backends: a server's finish reason turned into a `Finish`, and
stop strings applied client-side.

Every backend ends a normal stream with one `Finish` (see `base.py`). The HTTP backends take it
from the server's own word (`finish_from_server`); all of them also cut the text at the stop
strings themselves (`stop_at_strings`), because a server may ignore `stop` (or accept fewer stop
strings than asked) and a stop string must never reach the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from refine.backends.base import Finish, FinishReason, StreamItem
from refine.text import StopStringFilter

# Finish reasons as servers spell them (OpenAI-compatible `finish_reason`, TGI's
# `details.finish_reason`); any other value is reported as "unknown" with the value as detail.
_SERVER_REASONS: dict[str, FinishReason] = {
    "stop": "stop",  # OpenAI: end of turn or a stop sequence
    "eos_token": "stop",  # TGI
    "stop_sequence": "stop",  # TGI
    "length": "length",  # both
    "content_filter": "filtered",  # OpenAI
    "tool_calls": "tool_calls",  # OpenAI
    "function_call": "tool_calls",  # OpenAI, deprecated functions API
}

STOP_STRING = Finish("stop", "stop_string")


def finish_from_server(raw: object, tokens: object = None) -> Finish:
    """The `Finish` for a server's finish reason (None or "" when it sent none: "unknown") and
    its count of generated tokens (kept only when it is a non-negative int)."""
    detail = raw if isinstance(raw, str) else ""
    count = tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None
    return Finish(_SERVER_REASONS.get(detail, "unknown"), detail, count)


def stop_at_strings(stream: AsyncIterator[StreamItem], stops: tuple[str, ...]) -> AsyncIterator[StreamItem]:
    """`stream` cut at the first of `stops`: the text before it, then `Finish("stop",
    "stop_string")`. The inner stream (and so its connection, which stops the server's
    generation) is closed before that Finish is yielded. Text that may be the start of a stop
    string is held back until the next delta decides. Without stop strings, `stream` itself."""
    if not any(stops):
        return stream
    return _cut(stream, StopStringFilter(stops))


async def _cut(stream: AsyncIterator[StreamItem], cut: StopStringFilter) -> AsyncIterator[StreamItem]:
    finish: Finish | None = None
    last = ""
    async with aclosing(stream) as items:
        async for item in items:
            if isinstance(item, Finish):
                finish = item
                break
            piece = cut.push(item)
            if cut.stopped:
                finish, last = STOP_STRING, piece
                break
            if piece:
                yield piece
    if tail := last or cut.flush():
        yield tail
    if finish is not None:
        yield finish
