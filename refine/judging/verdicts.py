"""Reading a judge's answer (strictly: a `Verdict: A|B|tie` line, never a guess) and combining
the two presentation orders of a pair into one outcome for the revision.

Outcomes, from the revision's side: `win`, `loss`, `tie`; `inconsistent` when the two orders
disagree (counted as a tie); `unparseable` when either order has no valid verdict (left out of
the win rate); `skipped` when the round did not complete (nothing to judge).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["A", "B", "tie"]
Side = Literal["A", "B"]
Outcome = Literal["win", "loss", "tie", "inconsistent", "unparseable", "skipped"]

# Score of an outcome in the win rate (ties and inconsistent pairs count half); others are left out.
SCORES: dict[str, float] = {"win": 1.0, "tie": 0.5, "inconsistent": 0.5, "loss": 0.0}

# One whole line `Verdict: X`, tolerating case, markdown emphasis or quotes around the parts,
# "Answer A", brackets and a final full stop — but nothing else on the line.
_DECOR = r"[\s*_`'\"\[\]()]*"
_HEADING = r"(?:>\s*)?(?:#{1,6}\s*)?"  # a Markdown heading or quote before the label
_LINE = re.compile(rf"^{_HEADING}{_DECOR}verdict{_DECOR}[:：]{_DECOR}(?:answer\s+)?(a|b|tie){_DECOR}\.?{_DECOR}$",
                   re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class ParsedVerdict:
    """A judge answer read: `verdict` is None when it is unparseable, and `error` says why."""

    verdict: Verdict | None
    error: str | None = None


def parse_verdict(text: str) -> ParsedVerdict:
    """The verdict in a judge's answer. Valid: one or more `Verdict: …` lines that all agree
    (a reasoning model's `<think>` block is ignored). No such line, or lines that disagree,
    make the answer unparseable."""
    found = {m.group(1).lower() for line in _THINKING.sub("", text).splitlines() if (m := _LINE.match(line))}
    if not found:
        return ParsedVerdict(None, "no 'Verdict: A|B|tie' line")
    if len(found) > 1:
        return ParsedVerdict(None, f"conflicting verdict lines ({', '.join(sorted(found))})")
    value = found.pop()
    return ParsedVerdict("tie" if value == "tie" else value.upper())  # type: ignore[arg-type]


def order_outcome(verdict: Verdict | None, revision_side: Side) -> Outcome:
    """The outcome for the revision of one order's verdict, the revision shown as `revision_side`."""
    if verdict is None:
        return "unparseable"
    if verdict == "tie":
        return "tie"
    return "win" if verdict == revision_side else "loss"


def combine(first: Outcome, second: Outcome) -> Outcome:
    """One outcome from the two orders: agreement stands, disagreement is `inconsistent`, and
    an unparseable order makes the pair unparseable."""
    if "unparseable" in (first, second):
        return "unparseable"
    return first if first == second else "inconsistent"
