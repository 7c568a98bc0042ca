"""What the UI knows about one turn: the engine's events folded into a view model (no Gradio)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from refine.cnr_format import FORMAT_VERSIONS
from refine.events import (
    BaseDelta, BaseDone, Candidate, CritiqueDelta, EditApplied, ErrorEvent, Event, Judging, RevisionDelta,
    RoundDone, RoundStart, StopReason, ThinkingDelta, Timing, TurnDone,
)
from ui.safety import public_message

RoundPhase = Literal["critique", "revision", "judging", "complete", "rejected", "failed", "cancelled"]


@dataclass
class RoundView:
    """One critique→revision round as it streams; `phase` is the part being written until it ends.
    In the `edits` format the revision is replaced at each edit (the answer with every edit so
    far applied) and `edits` lists them (refine.edits.Edit as JSON), dropped ones included."""

    index: int
    model: str
    critique: str = ""
    revision: str = ""
    phase: RoundPhase = "critique"
    error: str | None = None
    stop_reason: StopReason | None = None
    nothing_to_fix: bool = False
    rejection: str | None = None
    candidate: int = 0  # the candidate streaming (or, once done, the one chosen)
    candidates: tuple[Candidate, ...] = ()
    edits: list[dict] = field(default_factory=list)
    cnr_format: str | None = None  # the format version (refine.cnr_format.FORMAT_VERSIONS), once known
    duration: float | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    deltas: int = 0

    @property
    def running(self) -> bool:
        return self.phase in ("critique", "revision", "judging")

    def timing(self) -> Timing:
        """Timing so far (for a round cut off before its RoundDone)."""
        ttft = None if self.first_token is None else self.first_token - self.started
        return Timing(ttft=ttft, duration=time.perf_counter() - self.started, tokens=self.deltas)


@dataclass
class TurnView:
    """A turn as far as it has streamed: the base answer, the rounds, and how it ended."""

    base_text: str = ""
    base_model: str = ""
    base_done: bool = False
    base_finish: str | None = None
    thinking: str = ""
    rounds: list[RoundView] = field(default_factory=list)
    error: ErrorEvent | None = None  # the base answer failed
    stop_reason: StopReason | None = None
    final: str | None = None
    finished: bool = False  # the turn ended and everything it produced was written
    turn_id: int | None = None
    save_error: str | None = None
    cnr_format: str | None = None  # the rounds' format version, for a round cut off before it shows
    started: float = field(default_factory=time.perf_counter)  # when the turn started generating
    ended: float | None = None  # when it ended (TurnDone)
    base_tokens: int = 0  # streamed pieces of the answer (and its reasoning), ≈ tokens

    def _round_event(self, event: CritiqueDelta | RevisionDelta | EditApplied) -> RoundView:
        """The running round, reset when `event` starts the round's next candidate."""
        current = self.rounds[-1]
        if event.candidate != current.candidate:
            current.candidate, current.critique, current.revision, current.edits = event.candidate, "", "", []
        current.first_token = current.first_token or time.perf_counter()
        return current

    def apply(self, event: Event) -> None:
        """Fold one engine event into the view."""
        if isinstance(event, BaseDelta):
            self.base_text += event.text
            self.base_tokens += 1
        elif isinstance(event, ThinkingDelta):
            self.thinking += event.text
            self.base_tokens += 1
        elif isinstance(event, BaseDone):
            self.base_text, self.base_model, self.base_done = event.text, public_message(event.model), True
            self.base_finish, self.thinking = event.finish_reason, event.thinking or self.thinking
        elif isinstance(event, RoundStart):
            self.rounds.append(RoundView(event.round, event.model))
        elif isinstance(event, CritiqueDelta | RevisionDelta):
            current = self._round_event(event)
            current.deltas += 1
            if isinstance(event, CritiqueDelta):
                current.critique += event.text
            else:
                current.phase, current.cnr_format = "revision", FORMAT_VERSIONS["rewrite"]
                current.revision += event.text
        elif isinstance(event, EditApplied):  # a whole edit: the revision is the answer with the edits so far
            current = self._round_event(event)
            current.phase, current.cnr_format = "revision", FORMAT_VERSIONS["edits"]
            current.revision = event.revision
            current.edits.append(event.edit)
        elif isinstance(event, Judging):
            self.rounds[-1].phase = "judging"
        elif isinstance(event, RoundDone):
            current = self.rounds[-1]
            current.critique, current.revision, current.phase = event.critique, event.revision, event.status
            current.error = public_message(event.error) if event.error else event.error  # no server address
            current.stop_reason = event.stop_reason
            current.nothing_to_fix, current.duration = event.nothing_to_fix, event.timing.duration
            current.rejection, current.candidate, current.candidates = event.rejection, event.chosen, event.candidates
            current.edits, current.cnr_format = list(event.edits), event.cnr_format
        elif isinstance(event, ErrorEvent) and event.stage == "base":
            self.error = event
            self.base_text = event.partial or self.base_text
        elif isinstance(event, TurnDone):
            self.stop_reason, self.final, self.ended = event.stop_reason, event.final, time.perf_counter()

    @property
    def tokens(self) -> int:
        """Pieces streamed so far (≈ tokens): the answer's and every round's."""
        return self.base_tokens + sum(r.deltas for r in self.rounds)

    @property
    def running_round(self) -> RoundView | None:
        return self.rounds[-1] if self.rounds and self.rounds[-1].running else None

    def last_good(self) -> str:
        """The latest accepted revision, else the base answer: what the chat shows at any moment
        (a round's text is never shown as the answer before it is accepted)."""
        complete = [r for r in self.rounds if r.phase == "complete"]
        return complete[-1].revision if complete else self.base_text

    def versions(self) -> dict[int, str]:
        """The comparable versions: 0 = the base answer (when complete), k = each accepted round."""
        found = {0: self.base_text} if self.base_done and self.error is None else {}
        found.update({r.index: r.revision for r in self.rounds if r.phase == "complete"})
        return found

    def interruption(self, kind: Literal["cancelled", "error"], message: str) -> list[Event]:
        """The events that close this turn when it is cut off (stopped, or an unexpected
        failure): the part in progress is reported with its partial text, then TurnDone."""
        if self.stop_reason is not None:
            return []
        if self.error is not None:
            return [TurnDone(final=self.base_text, rounds_completed=0, stop_reason="error")]
        if not self.base_done:
            return [ErrorEvent(stage="base", kind=kind, message=message, partial=self.base_text),
                    TurnDone(final=self.base_text, rounds_completed=0,
                             stop_reason="cancelled" if kind == "cancelled" else "error")]
        events: list[Event] = []
        stop: StopReason = "cancelled" if kind == "cancelled" else "failed"
        if (current := self.running_round) is not None:
            if kind == "error":
                events.append(ErrorEvent(stage="round", kind=kind, message=message, round=current.index))
            events.append(RoundDone(
                round=current.index, model=current.model, critique=current.critique.strip(),
                revision=current.revision.strip(), status="cancelled" if kind == "cancelled" else "failed",
                stop_reason=stop, error=None if kind == "cancelled" else message, timing=current.timing(),
                cnr_format=current.cnr_format or self.cnr_format or FORMAT_VERSIONS["rewrite"],
                edits=tuple(current.edits)))
        completed = sum(r.phase == "complete" for r in self.rounds)
        return [*events, TurnDone(final=self.last_good(), rounds_completed=completed, stop_reason=stop)]
