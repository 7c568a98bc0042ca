"""Per-round win rates of verdict rows (from `refine judge`): ties and inconsistent pairs count
half, unparseable and skipped pairs are counted apart; bootstrap CI over prompts; mean length
ratio (revision ÷ baseline, in words)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from refine.winrate import WinRate, win_rate


@dataclass(frozen=True)
class RoundSummary:
    """One row of the statistics table: a series ("vs original", "vs previous") at one round.
    `rate.ties` includes the inconsistent pairs; fields that do not apply to a source are None
    (e.g. `both_bad` for judge verdicts, `unparseable` for votes)."""

    series: str
    rate: WinRate
    inconsistent: int | None = None
    unparseable: int | None = None
    skipped: int | None = None
    both_bad: int | None = None
    length_ratio: float | None = None


def verdict_summaries(rows: Iterable[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> list[RoundSummary]:
    """Summaries per (series, round) of verdict rows; one row = one prompt's pair. A file with
    several judges or prompt versions gets one series per judge."""
    rows = list(rows)
    judges = {(r.get("judge"), r.get("prompt_version")) for r in rows}
    groups: dict[tuple[int, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series = f"vs {r['versus']}"
        if len(judges) > 1:
            series += f" · {r.get('judge')} {r.get('prompt_version')}"
        groups[(r["versus"] != "original", series, int(r["round"]))].append(r)
    summaries = []
    for (_, series, k), group in sorted(groups.items()):
        outcomes = [r["outcome"] for r in group]
        wins = [o == "win" for o in outcomes]
        ties = [o in ("tie", "inconsistent") for o in outcomes]
        losses = [o == "loss" for o in outcomes]
        ratios = [r["length_ratio"] for r in group if r["outcome"] != "skipped" and r.get("length_ratio") is not None]
        summaries.append(RoundSummary(
            series=series, rate=win_rate(k, wins, ties, losses, n_boot=n_boot, seed=seed),
            inconsistent=outcomes.count("inconsistent"), unparseable=outcomes.count("unparseable"),
            skipped=outcomes.count("skipped"), length_ratio=float(np.mean(ratios)) if ratios else None,
        ))
    return summaries


def summary_dict(s: RoundSummary) -> dict[str, Any]:
    """A JSON-ready dict of a summary (NaN becomes null); `ties` excludes inconsistent pairs."""
    r = s.rate
    data: dict[str, Any] = {
        "series": s.series, "round": r.round, "win_rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high,
        "wins": r.wins, "ties": r.ties - (s.inconsistent or 0), "losses": r.losses,
        "inconsistent": s.inconsistent, "unparseable": s.unparseable, "skipped": s.skipped,
        "both_bad": s.both_bad, "n": r.n, "units": r.units, "length_ratio": s.length_ratio,
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}
