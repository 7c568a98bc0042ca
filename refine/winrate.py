"""Win rates with bootstrap confidence intervals, as a table and as a plot. Pure math, no
database: used for human votes (db.stats) and for LLM-judge verdicts alike.

A "unit" is what the bootstrap resamples (a turn, a prompt): each unit contributes its wins,
ties and losses; the rate is (wins + ties/2) / (wins + ties + losses) over all units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

_MAX_CELLS = 4_000_000  # bootstrap draws held in memory at once
# The fewest comparisons (wins + ties + losses) of one cell — a round, per CnR model or pair of
# models — for which vote statistics give a confidence interval: a bootstrap over a handful of
# votes says nothing ("0.0% – 0.0%" from 2 votes). Below it the CI is left out and the tables say
# there are too few votes. The one rule for the app's Statistics tab and `refine stats --db`.
MIN_VOTES = 10


@dataclass(frozen=True)
class WinRate:
    """How often round `round` won its comparisons: ties count half, both-bad votes are
    reported apart and left out of the rate. `n` = wins + ties + losses; `units` = units with
    at least one of those; rate and CI are NaN when n is 0."""

    round: int
    wins: int
    ties: int
    losses: int
    both_bad: int
    n: int
    units: int
    rate: float
    ci_low: float
    ci_high: float


def bootstrap_ci(scores: ArrayLike, counts: ArrayLike, *, weights: ArrayLike | None = None,
                 n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of sum(scores)/sum(counts), resampling units with replacement.

    `scores[i]`/`counts[i]` are one unit's score sum and comparison count; `weights[i]`
    (integers) says how many identical units row i stands for. Identical units are merged and
    a resample is drawn as multinomial counts over the distinct ones — the same distribution
    as resampling units one by one, at a cost independent of how many units there are.
    """
    scores, counts = np.asarray(scores, dtype=float), np.asarray(counts, dtype=float)
    weights = np.ones_like(counts) if weights is None else np.asarray(weights, dtype=float)
    keep = (counts > 0) & (weights > 0)
    if not keep.any():
        return math.nan, math.nan
    patterns, inverse = np.unique(np.stack([scores[keep], counts[keep]], axis=1), axis=0, return_inverse=True)
    multiplicity = np.bincount(inverse.ravel(), weights=weights[keep])
    n_units = int(round(multiplicity.sum()))
    rng = np.random.default_rng(seed)
    rates = np.empty(n_boot)
    chunk = max(1, _MAX_CELLS // len(patterns))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        draws = rng.multinomial(n_units, multiplicity / multiplicity.sum(), size=stop - start)
        rates[start:stop] = (draws @ patterns[:, 0]) / (draws @ patterns[:, 1])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(rates, [tail, 1.0 - tail])
    return float(low), float(high)


def win_rate(round: int, wins: ArrayLike, ties: ArrayLike, losses: ArrayLike,
             both_bad: ArrayLike | None = None, *, weights: ArrayLike | None = None,
             n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> WinRate:
    """The win rate of `round` from per-unit counts of wins, ties, losses (and both-bad), with
    a bootstrap CI over units. `weights[i]` = how many identical units row i stands for."""
    wins, ties, losses = (np.asarray(a, dtype=float) for a in (wins, ties, losses))
    weights = np.ones_like(wins) if weights is None else np.asarray(weights, dtype=float)
    both_bad = np.zeros_like(wins) if both_bad is None else np.asarray(both_bad, dtype=float)
    counts = wins + ties + losses
    total = {name: int(np.rint((a * weights).sum())) for name, a in
             (("wins", wins), ("ties", ties), ("losses", losses), ("both_bad", both_bad))}
    n = total["wins"] + total["ties"] + total["losses"]
    rate = (total["wins"] + total["ties"] / 2) / n if n else math.nan
    low, high = bootstrap_ci(wins + ties / 2, counts, weights=weights, n_boot=n_boot, seed=seed, level=level)
    return WinRate(round=round, n=n, units=int(weights[counts > 0].sum()), rate=rate, ci_low=low,
                   ci_high=high, **total)


def too_few_votes(rate: WinRate) -> bool:
    """Whether a cell has votes, but fewer than MIN_VOTES comparisons: no CI for it."""
    return rate.n < MIN_VOTES and (rate.n > 0 or rate.both_bad > 0)


def too_few_text(n: int) -> str:
    """What a statistics table says instead of a CI from `n` < MIN_VOTES comparisons."""
    return f"too few votes ({n} of {MIN_VOTES})"


def vote_ci(rate: WinRate) -> WinRate:
    """The rate as vote statistics report it: without a CI (NaN) below MIN_VOTES comparisons."""
    return replace(rate, ci_low=math.nan, ci_high=math.nan) if rate.n < MIN_VOTES else rate


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.1f}%"


def render_table(rates: Sequence[WinRate], *, title: str | None = None, unit: str = "turns",
                 level: float = 0.95) -> str:
    """The win rates as an aligned plain-text table."""
    header = ["round", "win rate", f"{100 * level:.0f}% CI", "wins", "ties", "losses", "both bad", "n", unit]
    rows = [[str(r.round), _pct(r.rate), f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]", str(r.wins), str(r.ties),
             str(r.losses), str(r.both_bad), str(r.n), str(r.units)] for r in rates]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    if not rows:
        lines.append("(no comparisons)")
    return "\n".join(([title] if title else []) + lines)


def save_plot(series: Mapping[str, Sequence[WinRate]], path: str | Path, *, title: str | None = None,
              ylabel: str = "win rate") -> Path:
    """Save win rate vs round (one line per series, CI error bars, a 50% line) as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="50%")
    offsets = np.linspace(-0.08, 0.08, len(series)) if len(series) > 1 else [0.0]
    rounds: set[int] = set()
    for offset, (label, rates) in zip(offsets, series.items()):
        points = [r for r in rates if not math.isnan(r.rate)]
        rounds.update(r.round for r in points)
        x = np.array([r.round for r in points], dtype=float) + offset
        y = np.array([r.rate for r in points])
        # a point without a CI (too few votes) is drawn without error bars
        err = np.nan_to_num(np.array([[r.rate - r.ci_low for r in points], [r.ci_high - r.rate for r in points]]))
        ax.errorbar(x, y, yerr=err if points else None, marker="o", capsize=4, label=label)
    if rounds:
        ax.set_xticks(sorted(rounds))
        ax.set_xlim(min(rounds) - 0.5, max(rounds) + 0.5)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
