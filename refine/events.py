"""Typed events of one refinement turn, consumed alike by the UI, the CLI and storage.

Order for a turn: (ThinkingDelta | BaseDelta)* BaseDone, then per round k = 1..N:
RoundStart, then per candidate c = 0..C-1: CritiqueDelta*, then RevisionDelta* (the `rewrite`
format) or EditApplied* (the `edits` format), tagged with c;
Judging* when a selector compares candidates; RoundDone; finally TurnDone.
An error in the base answer yields ErrorEvent then TurnDone(stop_reason="error").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

# complete: the revision was accepted (or the critique found nothing to fix) and is the answer now;
# rejected: it parsed, but an acceptance rule (refine.acceptance) kept the previous answer;
# failed: unparseable output or a backend error; cancelled: the caller stopped it.
RoundStatus = Literal["complete", "rejected", "failed", "cancelled"]
StopReason = Literal[
    "max_rounds",      # every requested round ran
    "nothing_to_fix",  # the critique found nothing to improve
    "unchanged",       # the revision equals its input (near enough: see refine.acceptance)
    "rejected",        # an acceptance rule rejected the round's revision
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
class ThinkingDelta:
    """Reasoning the base model wrote before its answer (kept apart from the answer)."""

    text: str
    type: Literal["thinking_delta"] = "thinking_delta"


@dataclass(frozen=True)
class BaseDone:
    """The base answer. `finish_reason` is the backend's (stop, length, …) or "looping" when the
    loop stopped an answer that repeated itself; `thinking` is its reasoning, if any."""

    text: str
    model: str
    timing: Timing = field(default_factory=Timing)
    given: bool = False  # True when the answer came with the input instead of a model
    finish_reason: str | None = None
    thinking: str = ""
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
    candidate: int = 0
    type: Literal["critique_delta"] = "critique_delta"


@dataclass(frozen=True)
class RevisionDelta:
    round: int
    text: str
    candidate: int = 0
    type: Literal["revision_delta"] = "revision_delta"


@dataclass(frozen=True)
class EditApplied:
    """The `edits` format: one complete edit of round `round` (refine.edits.Edit as JSON: kind,
    span, text, applied, reason), and `revision`, the answer with every edit so far applied."""

    round: int
    edit: dict
    revision: str
    candidate: int = 0
    type: Literal["edit_applied"] = "edit_applied"


@dataclass(frozen=True)
class Judging:
    """A selector is comparing candidate `candidate` of round `round` with the current answer."""

    round: int
    candidate: int
    type: Literal["judging"] = "judging"


@dataclass(frozen=True)
class Candidate:
    """One sampled critique + revision of a round and what became of it: `status` complete
    (accepted), rejected (`rejection` names the rule, `detail` what was measured), failed or
    cancelled; `verdicts` are the selector's, if one ran."""

    critique: str
    revision: str
    status: RoundStatus
    nothing_to_fix: bool = False
    rejection: str | None = None
    detail: str = ""
    finish_reason: str | None = None
    verdicts: tuple[dict, ...] = ()
    raw: str = ""
    timing: Timing = field(default_factory=Timing)
    edits: tuple[dict, ...] = ()  # the `edits` format: every edit, applied or dropped (EditApplied.edit)


@dataclass(frozen=True)
class RoundDone:
    """A finished round: the chosen candidate's critique and revision, and every candidate.

    complete: `revision` is now the answer (for nothing_to_fix, the unchanged answer); rejected:
    `revision` is the rejected text, `rejection` the rule and `error` its explanation, and the
    previous answer stands; failed/cancelled: `revision` is the partial text, `error` says why."""

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
    rejection: str | None = None
    finish_reason: str | None = None
    candidates: tuple[Candidate, ...] = ()
    chosen: int = 0  # index of the candidate in `candidates` this round reports
    cnr_format: str = "cnr-v1"  # the CnR format version the round was generated in (refine.cnr_format)
    edits: tuple[dict, ...] = ()  # the `edits` format: the chosen candidate's edits, applied or dropped
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


Event = Union[BaseDelta, ThinkingDelta, BaseDone, RoundStart, CritiqueDelta, RevisionDelta, EditApplied, Judging,
              RoundDone, ErrorEvent, TurnDone]

