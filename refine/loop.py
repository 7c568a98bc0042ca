"""The refinement loop for one turn: the base answer, then critique→revision rounds, as a
stream of typed events (see refine.events).

First, do no harm: a round's revision replaces the current answer only when the acceptance
rules pass (refine.acceptance) and, with a selector, when it beats the current answer
(refine.selection). A generation that starts to loop is stopped as soon as the loop is seen,
in both roles, so a looping model costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from refine.acceptance import AcceptanceConfig, Judgement, check_loop, check_revision
from refine.backends.base import Backend, BackendError, Finish, GenerationParams, Message
from refine.cnr_format import (
    CNR_STOP_STRINGS, FORMAT_VERSIONS, CnRFormat, CnRStreamParser, ParsedCnR, Section, cnr_messages,
)
from refine.edits_stream import EditsStreamParser
from refine.events import (
    BaseDelta, BaseDone, Candidate, CritiqueDelta, EditApplied, ErrorEvent, Event, Judging, RevisionDelta,
    RoundDone, RoundStart, StopReason, ThinkingDelta, Timing, TurnDone,
)
from refine.selection import Selector
from refine.thinking import ThinkingSplitter

MAX_ROUNDS = 10
MAX_CANDIDATES = 8
LOOP_CHECK_EVERY = 16  # deltas between two checks for a loop in a streaming generation
LOOP_CHECK_TAIL = 6000  # characters at the end of the text that a streaming check reads


@dataclass(frozen=True)
class LoopConfig:
    """How one turn is refined. `candidates` revisions are sampled per round (use a temperature
    above 0 in `cnr_params` for them to differ); `acceptance` holds the rules' thresholds;
    `cnr_format` is the CnR format the model writes (an adapter records its own)."""

    rounds: int = 3
    stop_early: bool = True
    few_shot: bool = False
    base_params: GenerationParams = field(default_factory=GenerationParams)
    cnr_params: GenerationParams = field(default_factory=lambda: GenerationParams(max_new_tokens=768))
    acceptance: AcceptanceConfig = field(default_factory=AcceptanceConfig)
    candidates: int = 1
    cnr_format: CnRFormat = "rewrite"

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise ValueError(f"rounds must be between 1 and {MAX_ROUNDS}, got {self.rounds}")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise ValueError(f"candidates must be between 1 and {MAX_CANDIDATES}, got {self.candidates}")


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


def _looping(text: str, count: int, config: AcceptanceConfig) -> Judgement | None:
    """Every LOOP_CHECK_EVERY deltas: the looping judgement of the text's tail, if it loops."""
    if count % LOOP_CHECK_EVERY:
        return None
    judgement = check_loop(text[-LOOP_CHECK_TAIL:], config)
    return None if judgement.accepted else judgement


def _no_answer_message(finish: Finish, thinking: str) -> str:
    """Why a base generation gave no answer text, in one sentence."""
    if finish.reason == "tool_calls":
        return "the model called a tool instead of answering (tool calls are not supported)"
    if thinking and finish.reason == "length":
        spent = f" ({finish.tokens} tokens)" if finish.tokens else ""
        return (f"the model spent its whole token budget{spent} on reasoning and wrote no answer; "
                "raise max new tokens for the answer")
    if thinking:
        return "the model wrote only reasoning and no answer"
    if finish.reason == "filtered":
        return "the server withheld the answer (content filter)"
    return "the model returned an empty answer"


@dataclass
class _Generation:
    """What one CnR candidate generation produced."""

    parser: CnRStreamParser | EditsStreamParser
    clock: _Clock
    finish: Finish | None = None
    error: BackendError | None = None
    cancelled: bool = False
    loop: Judgement | None = None
    parsed: ParsedCnR | None = None


def _piece_events(k: int, index: int, parser: CnRStreamParser | EditsStreamParser,
                  pieces: list[tuple[Section | str, Any]]) -> list[Event]:
    """The events of parsed pieces: critique and revision text, or applied edits."""
    events: list[Event] = []
    for section, piece in pieces:
        if section == "critique":
            events.append(CritiqueDelta(k, piece, index))
        elif section == "edit":
            events.append(EditApplied(k, piece.to_json(), parser.revision, index))  # type: ignore[union-attr]
        else:
            events.append(RevisionDelta(k, piece, index))
    return events


async def _generate(k: int, index: int, cnr: Backend, messages: list[Message], params: GenerationParams,
                    config: LoopConfig, cancel: asyncio.Event | None, out: list[_Generation],
                    current: str) -> AsyncIterator[Event]:
    """Stream one candidate's critique and revision (or edits of `current`) as events; its
    _Generation is appended to `out`. Stops reading (which stops the generation) at a loop, at the end of the revision, or
    at cancellation."""
    parser = EditsStreamParser(current) if config.cnr_format == "edits" else CnRStreamParser()
    gen = _Generation(parser, _Clock())
    thinking = ThinkingSplitter()
    stream = cnr.stream(messages, params)
    try:
        async for item in stream:
            if isinstance(item, Finish):
                gen.finish = item
                continue
            gen.clock.tick()
            for part, text in thinking.feed(item):
                if part == "answer":
                    for event in _piece_events(k, index, gen.parser, gen.parser.feed(text)):
                        yield event
            if gen.parser.done:  # the revision ended at a second label or template text
                gen.finish = Finish("stop", "end_of_revision")
                break
            section = gen.parser.section
            if section in ("critique", "revision") and (
                    loop := _looping(gen.parser.text(section), gen.clock.tokens, config.acceptance)):
                gen.loop = Judgement(loop.rule, f"the {section}: {loop.detail}")
                break
            if _cancelled(cancel):
                gen.cancelled = True
                break
    except BackendError as exc:
        gen.error = exc
    finally:
        await stream.aclose()
    for part, text in thinking.finish():
        if part == "answer":
            for event in _piece_events(k, index, gen.parser, gen.parser.feed(text)):
                yield event
    for event in _piece_events(k, index, gen.parser, gen.parser.flush()):
        yield event
    gen.parsed = gen.parser.finish()
    out.append(gen)


def _judge_candidate(gen: _Generation, current: str, config: LoopConfig) -> Candidate:
    """What the acceptance rules make of one generation (before any selector)."""
    parsed = gen.parsed
    assert parsed is not None
    base = dict(critique=parsed.critique, revision=parsed.revision, raw=gen.parser.raw, timing=gen.clock.timing(),
                finish_reason=gen.finish.reason if gen.finish else None, edits=tuple(e.to_json() for e in parsed.edits))
    if gen.cancelled:
        return Candidate(status="cancelled", **base)
    if gen.error is not None:
        return Candidate(status="failed", detail=gen.error.message, **base)
    if gen.loop is not None:
        return Candidate(status="rejected", rejection=gen.loop.rule, detail=gen.loop.detail, **base)
    if gen.finish is not None and gen.finish.reason != "stop":
        cut = check_revision(current, parsed.critique, parsed.revision, gen.finish, config.acceptance)
        return Candidate(status="rejected", rejection=cut.rule, detail=cut.detail, **base)
    if not parsed.ok:
        return Candidate(status="failed", detail=f"unparseable output: {parsed.error}", **base)
    if parsed.nothing_to_fix:
        return Candidate(status="complete", nothing_to_fix=True, **{**base, "revision": current})
    judgement = check_revision(current, parsed.critique, parsed.revision, gen.finish, config.acceptance)
    if not judgement.accepted:
        return Candidate(status="rejected", rejection=judgement.rule, detail=judgement.detail, **base)
    return Candidate(status="complete", **base)


def _pick(candidates: list[Candidate], winners: list[int] | None) -> int:
    """The index of the candidate the round reports: the best winner (with a selector) or the
    first accepted or nothing-to-fix candidate (without one); else the first rejected one, else
    the first."""
    if winners:
        return winners[0]
    usable = [i for i, c in enumerate(candidates) if c.status == "complete" and (winners is None or c.nothing_to_fix)]
    rejected = [i for i, c in enumerate(candidates) if c.status == "rejected"]
    return (usable or rejected or [0])[0]


async def _select(conversation: list[Message], current: str, candidates: list[Candidate], selector: Selector,
                  k: int) -> AsyncIterator[Event | list[int]]:
    """Ask the selector about every accepted revision; yields Judging events, then the winners'
    indices, best first (a knockout among winners). Losers become rejected (`not_better`)."""
    winners: list[int] = []
    for i, c in enumerate(candidates):
        if c.status != "complete" or c.nothing_to_fix:
            continue
        yield Judging(k, i)
        won, verdicts = await selector.prefer(conversation, current, c.revision)
        candidates[i] = replace(c, verdicts=tuple(verdicts), **(
            {} if won else {"status": "rejected", "rejection": "not_better",
                            "detail": f"{selector.name} did not prefer it in both orders"}))
        if won:
            winners.append(i)
    best = winners[:1]
    for i in winners[1:]:
        yield Judging(k, i)
        won, verdicts = await selector.prefer(conversation, candidates[best[0]].revision, candidates[i].revision)
        candidates[i] = replace(candidates[i], verdicts=candidates[i].verdicts + tuple(verdicts))
        best = [i] + best if won else best + [i]
    yield best


async def refine_turn(
    conversation: list[Message],
    *,
    cnr: Backend,
    config: LoopConfig,
    base: Backend | None = None,
    response: str | None = None,
    cancel: asyncio.Event | None = None,
    selector: Selector | None = None,
) -> AsyncIterator[Event]:
    """Refine one turn. `conversation` ends with the user's message; give either a `base`
    backend to answer it or the `response` to revise. Setting `cancel` stops the turn at the
    next token: the round in progress is reported as cancelled with its partial text. With a
    `selector`, a revision must also beat the current answer to be accepted."""
    if response is None and base is None:
        raise ValueError("give a base backend or a response to revise")

    if response is None:
        assert base is not None
        clock, splitter = _Clock(), ThinkingSplitter()
        finish: Finish = Finish("unknown")
        stream = base.stream(conversation, config.base_params)
        try:
            async for item in stream:
                if isinstance(item, Finish):
                    finish = item
                    continue
                clock.tick()
                for part, text in splitter.feed(item):
                    yield BaseDelta(text) if part == "answer" else ThinkingDelta(text)
                if _looping(splitter.answer, clock.tokens, config.acceptance):
                    finish = Finish("stop", "looping")
                    break
                if _cancelled(cancel):
                    break
        except BackendError as exc:
            splitter.finish()
            yield ErrorEvent(stage="base", kind=exc.kind, message=exc.message, partial=splitter.answer)
            yield TurnDone(final=splitter.answer, rounds_completed=0, stop_reason="error")
            return
        finally:
            await stream.aclose()
        for part, text in splitter.finish():
            yield BaseDelta(text) if part == "answer" else ThinkingDelta(text)
        response = splitter.answer.strip()
        if _cancelled(cancel):
            yield TurnDone(final=response, rounds_completed=0, stop_reason="cancelled")
            return
        if not response:
            yield ErrorEvent(stage="base", kind="no_answer", message=_no_answer_message(finish, splitter.thinking))
            yield TurnDone(final="", rounds_completed=0, stop_reason="error")
            return
        reason = "looping" if finish.detail == "looping" else finish.reason
        yield BaseDone(text=response, model=base.model_id, timing=clock.timing(), finish_reason=reason,
                       thinking=splitter.thinking)
    else:
        yield BaseDone(text=response, model=base.model_id if base else "", given=True)

    params = replace(config.cnr_params, stop=tuple(dict.fromkeys(config.cnr_params.stop + CNR_STOP_STRINGS)))
    current = response
    completed = 0
    stop: StopReason = "max_rounds"
    for k in range(1, config.rounds + 1):
        yield RoundStart(round=k, model=cnr.model_id)
        started = time.perf_counter()
        messages = cnr_messages(conversation, current, few_shot=config.few_shot, fmt=config.cnr_format)
        generations: list[_Generation] = []
        for index in range(config.candidates):
            async for event in _generate(k, index, cnr, messages, params, config, cancel, generations, current):
                yield event
            if generations[-1].cancelled or generations[-1].error is not None:
                break
        candidates = [_judge_candidate(g, current, config) for g in generations]
        winners: list[int] | None = None
        failure = next((g.error for g in generations if g.error is not None), None)
        cancelled = any(g.cancelled for g in generations)
        if selector is not None and failure is None and not cancelled:
            try:
                async for item in _select(conversation, current, candidates, selector, k):
                    if isinstance(item, list):
                        winners = item
                    else:
                        yield item
            except BackendError as exc:
                failure = type(exc)(f"the judge failed: {exc.message}", status=exc.status)
        chosen = len(candidates) - 1 if failure is not None or cancelled else _pick(candidates, winners)
        c = candidates[chosen]
        timing = Timing(ttft=c.timing.ttft, duration=time.perf_counter() - started,
                        tokens=sum(x.timing.tokens for x in candidates))
        common: dict[str, Any] = dict(round=k, model=cnr.model_id, critique=c.critique, raw=c.raw, timing=timing,
                                      finish_reason=c.finish_reason, candidates=tuple(candidates), chosen=chosen,
                                      cnr_format=FORMAT_VERSIONS[config.cnr_format], edits=c.edits)
        if cancelled:
            yield RoundDone(**common, revision=c.revision, status="cancelled", stop_reason="cancelled")
            stop = "cancelled"
            break
        if failure is not None or c.status == "failed":
            if failure is not None:  # a backend error (of the CnR model or the judge) ends the round
                yield ErrorEvent(stage="round", kind=failure.kind, message=failure.message, round=k, partial=c.raw)
            yield RoundDone(**common, revision=c.revision, status="failed", stop_reason="failed",
                            error=failure.message if failure is not None else c.detail)
            stop = "failed"
            break
        if c.status == "rejected":
            reason: StopReason | None = "unchanged" if c.rejection == "unchanged" else "rejected"
            retry = not config.stop_early and params.temperature > 0 and reason == "rejected" and k < config.rounds
            yield RoundDone(**common, revision=c.revision, status="rejected", rejection=c.rejection,
                            error=c.detail, stop_reason=None if retry else reason)
            if not retry:
                stop = reason  # type: ignore[assignment]
                break
            continue
        completed += 1
        reason = None
        if config.stop_early and c.nothing_to_fix:
            reason = "nothing_to_fix"
        elif k == config.rounds:
            reason = "max_rounds"
        yield RoundDone(**common, revision=c.revision, status="complete", stop_reason=reason,
                        nothing_to_fix=c.nothing_to_fix)
        current = c.revision
        if reason is not None:
            stop = reason
            break

    yield TurnDone(final=current, rounds_completed=completed, stop_reason=stop)
