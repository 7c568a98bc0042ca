"""The refinement loop for one turn: the base answer, then critique→revision rounds, as a
stream of typed events (see refine.events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from refine.backends.base import Backend, BackendError, GenerationParams, Message
from refine.cnr_format import CnRStreamParser, cnr_messages, normalize
from refine.events import (
    BaseDelta, BaseDone, CritiqueDelta, ErrorEvent, Event, RevisionDelta, RoundDone, RoundStart,
    StopReason, Timing, TurnDone,
)

MAX_ROUNDS = 10


@dataclass(frozen=True)
class LoopConfig:
    """How one turn is refined."""

    rounds: int = 3
    stop_early: bool = True
    few_shot: bool = False
    base_params: GenerationParams = field(default_factory=GenerationParams)
    cnr_params: GenerationParams = field(default_factory=lambda: GenerationParams(max_new_tokens=768))

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be between 1 and {MAX_ROUNDS}, got {self.rounds}")


class _Clock:
    """Measures time to first delta, duration and delta count of one generation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.tokens = 0

    def tick(self) -> None:
        self.tokens += 1
        if self.first is None:
            self.first = time.perf_counter() - self.start

    def timing(self) -> Timing:
        return Timing(ttft=self.first, duration=time.perf_counter() - self.start, tokens=self.tokens)


def _cancelled(cancel: asyncio.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


async def refine_turn(
    conversation: list[Message],
    *,
    cnr: Backend,
    config: LoopConfig,
    base: Backend | None = None,
    response: str | None = None,
    cancel: asyncio.Event | None = None,
) -> AsyncIterator[Event]:
    """Refine one turn. `conversation` ends with the user's message; give either a `base`
    backend to answer it or the `response` to revise. Setting `cancel` stops the turn at the
    next token: the round in progress is reported as cancelled with its partial text."""
    if response is None and base is None:
        raise ValueError("give a base backend or a response to revise")

    if response is None:
        assert base is not None
        clock, parts = _Clock(), []
        stream = base.stream(conversation, config.base_params)
        try:
            async for delta in stream:
                clock.tick()
                parts.append(delta)
                yield BaseDelta(delta)
                if _cancelled(cancel):
                    break
        except BackendError as exc:
            yield ErrorEvent(stage="base", kind=exc.kind, message=exc.message, partial=exc.partial)
            yield TurnDone(final=exc.partial, rounds_completed=0, stop_reason="error")
            return
        finally:
            await stream.aclose()
        response = "".join(parts)
        if _cancelled(cancel):
            yield TurnDone(final=response, rounds_completed=0, stop_reason="cancelled")
            return
        yield BaseDone(text=response, model=base.model_id, timing=clock.timing())
    else:
        yield BaseDone(text=response, model=base.model_id if base else "", given=True)

    current = response
    completed = 0
    stop: StopReason = "max_rounds"
    for k in range(1, config.rounds + 1):
        yield RoundStart(round=k, model=cnr.model_id)
        parser, clock = CnRStreamParser(), _Clock()
        stream = cnr.stream(cnr_messages(conversation, current, few_shot=config.few_shot), config.cnr_params)
        failure: BackendError | None = None
        try:
            async for delta in stream:
                clock.tick()
                for section, text in parser.feed(delta):
                    yield CritiqueDelta(k, text) if section == "critique" else RevisionDelta(k, text)
                if _cancelled(cancel):
                    break
        except BackendError as exc:
            failure = exc
        finally:
            await stream.aclose()
        parsed = parser.finish()
        common = dict(round=k, model=cnr.model_id, critique=parsed.critique, raw=parser.raw, timing=clock.timing())

        if failure is not None:
            yield ErrorEvent(stage="round", kind=failure.kind, message=failure.message, round=k, partial=parser.raw)
            yield RoundDone(**common, revision=parsed.revision, status="failed", stop_reason="failed", error=failure.message)
            stop = "failed"
            break
        if _cancelled(cancel):
            yield RoundDone(**common, revision=parsed.revision, status="cancelled", stop_reason="cancelled")
            stop = "cancelled"
            break
        if not parsed.ok:
            yield RoundDone(**common, revision=parsed.revision, status="failed", stop_reason="failed",
                            error=f"unparseable output: {parsed.error}")
            stop = "failed"
            break

        completed += 1
        revision = current if parsed.nothing_to_fix else parsed.revision
        reason: StopReason | None = None
        if config.stop_early and parsed.nothing_to_fix:
            reason = "nothing_to_fix"
        elif config.stop_early and normalize(revision) == normalize(current):
            reason = "unchanged"
        elif k == config.rounds:
            reason = "max_rounds"
        yield RoundDone(**common, revision=revision, status="complete", stop_reason=reason,
                        nothing_to_fix=parsed.nothing_to_fix)
        current = revision
        if reason is not None:
            stop = reason
            break

    yield TurnDone(final=current, rounds_completed=completed, stop_reason=stop)
