"""Typed events of one refinement turn, consumed alike by the UI, the CLI and storage.

Order for a turn: BaseDelta* BaseDone, then per round k = 1..N:
RoundStart, CritiqueDelta*, RevisionDelta*, RoundDone; finally TurnDone.
An error in the base answer yields ErrorEvent then TurnDone(stop_reason="error").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Union

RoundStatus = Literal["complete", "failed", "cancelled"]
StopReason = Literal[
    "max_rounds",      # every requested round ran
    "nothing_to_fix",  # the critique found nothing to improve
    "unchanged",       # the revision equals its input (after normalisation)
    "failed",          # a round failed (unparseable output or backend error)
    "cancelled",       # the caller cancelled
    "error",           # the base answer failed
]


@dataclass(frozen=True)
class Timing:
    """Seconds to the first token, total seconds, and streamed tokens of one generation."""

    ttft: float | None = None
    duration: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class BaseDelta:
    text: str
    type: Literal["base_delta"] = "base_delta"


@dataclass(frozen=True)
class BaseDone:
    text: str
    model: str
    timing: Timing = field(default_factory=Timing)
    given: bool = False  # True when the answer came with the input instead of a model
    type: Literal["base_done"] = "base_done"


@dataclass(frozen=True)
class RoundStart:
    round: int
    model: str
    type: Literal["round_start"] = "round_start"


@dataclass(frozen=True)
class CritiqueDelta:
    round: int
    text: str
    type: Literal["critique_delta"] = "critique_delta"


@dataclass(frozen=True)
class RevisionDelta:
    round: int
    text: str
    type: Literal["revision_delta"] = "revision_delta"


@dataclass(frozen=True)
class RoundDone:
    """A finished round. For a failed/cancelled round, `revision` is the partial text and the
    previous response stands; `error` says why it failed."""

    round: int
    model: str
    critique: str
    revision: str
    status: RoundStatus
    stop_reason: StopReason | None = None  # set when refinement stops after this round
    nothing_to_fix: bool = False
    error: str | None = None
    raw: str = ""
    timing: Timing = field(default_factory=Timing)
    type: Literal["round_done"] = "round_done"


@dataclass(frozen=True)
class ErrorEvent:
    """A backend failure. `stage` is "base" or "round"; `kind` is the BackendError kind."""

    stage: Literal["base", "round"]
    kind: str
    message: str
    round: int | None = None
    partial: str = ""
    type: Literal["error"] = "error"


@dataclass(frozen=True)
class TurnDone:
    """The end of a turn: `final` is the last good answer (the base answer if no round succeeded)."""

    final: str
    rounds_completed: int
    stop_reason: StopReason
    type: Literal["turn_done"] = "turn_done"


Event = Union[BaseDelta, BaseDone, RoundStart, CritiqueDelta, RevisionDelta, RoundDone, ErrorEvent, TurnDone]


def event_to_dict(event: Event) -> dict:
    """A JSON-ready dict of an event (used by logs and the UI)."""
    return asdict(event)
