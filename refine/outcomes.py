"""What became of the rounds of a run: accepted, nothing to fix, unchanged, rejected (by rule),
failed or cancelled, per round, with generation speed. One summary for `revise`, `experiment`
and the app's Statistics tab (which reads the same fields from the database).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from refine.acceptance import RULES

OUTCOMES: tuple[str, ...] = (
    "accepted", "nothing_to_fix", "unchanged",
    *(f"rejected:{rule}" for rule in RULES if rule != "unchanged"),
    "failed", "cancelled",
)
HEADERS: dict[str, str] = {
    "accepted": "accepted", "nothing_to_fix": "nothing to fix", "unchanged": "unchanged",
    **{f"rejected:{rule}": f"rejected: {rule.replace('_', ' ')}" for rule in RULES if rule != "unchanged"},
    "failed": "failed", "cancelled": "cancelled",
}


def outcome(status: str, nothing_to_fix: bool = False, rejection: str | None = None) -> str:
    """The outcome name of a round from its stored status, nothing-to-fix flag and rejection rule."""
    if status == "complete":
        return "nothing_to_fix" if nothing_to_fix else "accepted"
    if status == "rejected":
        return "unchanged" if rejection == "unchanged" else f"rejected:{rejection}"
    return status


@dataclass
class OutcomeTable:
    """Counts of outcomes per round (1-based), and tokens and seconds spent per round."""

    counts: dict[int, Counter] = field(default_factory=dict)
    tokens: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)

    def add(self, round_index: int, name: str, n: int = 1, tokens: int = 0, seconds: float = 0.0) -> None:
        """Count `n` rounds of outcome `name` at `round_index`."""
        self.counts.setdefault(round_index, Counter())[name] += n
        self.tokens[round_index] += tokens
        self.seconds[round_index] += seconds

    def columns(self) -> list[str]:
        """The outcomes that occur, in the canonical order (unknown ones last)."""
        seen = {name for c in self.counts.values() for name in c}
        return [o for o in OUTCOMES if o in seen] + sorted(seen - set(OUTCOMES))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per round (and a total): round, each outcome's count, rounds, tokens/s."""
        out = []
        total = OutcomeTable()
        for k in sorted(self.counts):
            out.append(self._row(k, self.counts[k], self.tokens[k], self.seconds[k]))
            for name, n in self.counts[k].items():
                total.add(0, name, n)
        if len(self.counts) > 1:
            out.append(self._row("all", total.counts.get(0, Counter()), sum(self.tokens.values()),
                                 sum(self.seconds.values())))
        return out

    def _row(self, k: int | str, counts: Counter, tokens: int, seconds: float) -> dict[str, Any]:
        row: dict[str, Any] = {"round": k, **{name: counts.get(name, 0) for name in self.columns()}}
        row["rounds"] = sum(counts.values())
        row["tokens_per_s"] = round(tokens / seconds, 1) if seconds > 0 else None
        return row

    def markdown(self) -> str:
        """The table in Markdown (empty string when there are no rounds)."""
        rows = self.rows()
        if not rows:
            return ""
        names = ["round", *self.columns(), "rounds", "tokens_per_s"]
        head = ["round", *(HEADERS.get(n, n) for n in self.columns()), "rounds", "tokens/s"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            lines.append("| " + " | ".join("–" if row[n] is None else str(row[n]) for n in names) + " |")
        return "\n".join(lines)


def tally(rounds: Iterable[Mapping[str, Any]]) -> OutcomeTable:
    """An OutcomeTable of round records (`revise` output rounds or database rows): each with
    round, status, nothing_to_fix, rejection and optionally tokens, duration and n (a count)."""
    table = OutcomeTable()
    for r in rounds:
        table.add(int(r["round"]), outcome(r["status"], bool(r.get("nothing_to_fix")), r.get("rejection")),
                  int(r.get("n", 1)), int(r.get("tokens") or 0), float(r.get("duration") or 0.0))
    return table
