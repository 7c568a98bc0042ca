"""Where a turn is, in plain words, for the line under the chat: the phase (writing the answer,
critique k of N, revision k of N), the time it has taken, and an estimate of the time left from
the turn's own speed so far (streamed pieces ≈ tokens per second). Pure functions of a TurnView.

The estimate is honest about what it knows: while the answer is written only its token limit
bounds it; from round 1 on, each round is expected to take as many tokens as the rounds before
it did (for the first round: a critique plus a revision about as long as the answer), within
the round's token limit, and refinement may stop early.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ui.view import RoundView, TurnView

if TYPE_CHECKING:
    from ui.context import Controls

CRITIQUE_TOKENS = 40  # a short critique, for the first round's estimate
MIN_SECONDS = 2.0  # no speed is reported from less than this much time


def clock(seconds: float) -> str:
    """Elapsed time as m:ss (h:mm:ss from an hour on)."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def about(seconds: float) -> str:
    """A duration to come, rounded as people say it: 'under 10 s', 'about 40 s', 'about 3 min'."""
    if seconds < 10:
        return "under 10 s"
    if seconds < 90:
        return f"about {int(round(seconds / 10.0) * 10)} s"
    return f"about {max(2, round(seconds / 60))} min"


def speed(view: TurnView, now: float) -> float | None:
    """The turn's tokens per second so far (prompt reading included), once measurable."""
    elapsed = now - view.started
    if elapsed < MIN_SECONDS or view.tokens == 0:
        return None
    return view.tokens / elapsed


def expected_round_tokens(view: TurnView, controls: Controls) -> int:
    """Tokens one round is expected to take: as many as the finished rounds did on average,
    else a critique plus a revision as long as the answer; at most the round's token limit."""
    done = [r.deltas for r in view.rounds if not r.running and r.deltas]
    guess = sum(done) / len(done) if done else view.base_tokens + CRITIQUE_TOKENS
    return max(1, min(controls.cnr_max_new_tokens, math.ceil(guess)))


def _phase(r: RoundView, rounds: int) -> str:
    if r.phase == "critique":
        return f"🔍 Critique {r.index} of {rounds}"
    if r.phase == "judging":
        return f"⚖️ The judge compares revision {r.index} of {rounds} with the answer"
    return f"✏️ Revision {r.index} of {rounds}"


def ended_text(view: TurnView, now: float) -> str:
    """How long a finished turn took, and how fast it went."""
    took = (view.ended or now) - view.started
    rate = view.tokens / took if took > 0 and view.tokens else None
    how = {"cancelled": "Stopped after", "error": "Ended after", "failed": "Ended after"}.get(view.stop_reason or "",
                                                                                            "Done in")
    return f"{how} {clock(took)}" + (f" · {view.tokens} tokens at {rate:.1f} tokens/s" if rate else "")


def progress_text(view: TurnView, controls: Controls, now: float | None = None) -> str:
    """The progress line of a turn: phase · elapsed · speed · time left (or how it ended)."""
    now = time.perf_counter() if now is None else now
    if view.stop_reason is not None or view.finished:
        return ended_text(view, now)
    parts = []
    current = view.running_round
    if not view.base_done:
        parts.append("✍️ Writing the answer")
    elif current is not None:
        parts.append(_phase(current, controls.rounds))
    else:
        parts.append("Finishing")
    parts.append(f"{clock(now - view.started)} so far")
    rate = speed(view, now)
    if rate is None:
        return " · ".join(parts)
    parts.append(f"{rate:.1f} tokens/s")
    if not view.base_done:
        left = max(0, controls.max_new_tokens - view.base_tokens) / rate
        parts.append(f"the answer needs {about(left)} more at most, then up to {controls.rounds} round(s)")
    elif current is not None:
        per_round = expected_round_tokens(view, controls)
        tokens_left = max(0, per_round - current.deltas) + (controls.rounds - current.index) * per_round
        early = " (less if it stops early)" if controls.stop_early and current.index < controls.rounds else ""
        parts.append(f"{about(tokens_left / rate)} left{early}")
    return " · ".join(parts)
