"""Pairwise verdict files made by other tools, and their metrics as those tools define them, so
our numbers can be compared with published ones on the same footing.

Preferences use AlpacaEval's encoding: 1 = the first output (the baseline) wins, 2 = the second
(the model being evaluated) wins, 1.5 (or 0, its older spelling) = a draw; values in between are
weighted preferences, anything else (NaN, null, out of range) is dropped. `head_to_head` follows
alpaca_eval's `metrics.helpers.AbsoluteScoringRule.describe_head2head` (what its
`pairwise_to_winrate`/`get_winrate` report) and `ZeroOneScoringRule` for the discrete win rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refine.errors import FileProblem
from refine.textfiles import csv_rows, json_or_jsonl_values

WIN, LOSS, DRAW = 2.0, 1.0, 1.5


@dataclass(frozen=True)
class HeadToHead:
    """AlpacaEval's head-to-head metrics of one group: `win_rate` = 100·mean(preference − 1)
    over valid preferences, `standard_error` = 100·its standard error (ddof 1), `n_wins` /
    `n_wins_base` = preferences above / below 1.5, `n_draws` = exactly 1.5 (or 0), `n_total` =
    valid preferences; `discrete_win_rate` rounds each preference to a win, loss or draw first.
    `n_dropped` counts the rows that were not preferences."""

    group: str
    win_rate: float
    standard_error: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int
    discrete_win_rate: float
    n_dropped: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _valid(p: np.ndarray) -> np.ndarray:
    return ~np.isnan(p) & (p >= 1) & (p <= 2)


def _mean_sem(x: np.ndarray) -> tuple[float, float]:
    mean = float(x.mean()) if len(x) else math.nan
    sem = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
    return mean, sem


def head_to_head(preferences: Sequence[float | None], group: str = "all") -> HeadToHead:
    """AlpacaEval's win rate, standard error and counts of a sequence of preferences."""
    raw = np.array([math.nan if p is None else float(p) for p in preferences], dtype=float)
    p = np.where(raw == 0, DRAW, raw)
    n_draws = int((p == DRAW).sum())
    valid = p[_valid(p)] - 1
    win_rate, sem = _mean_sem(valid)
    # ZeroOneScoringRule: 1.5 → 0, round (half to even, as pandas), then 0 → 1.5 (a draw).
    rounded = np.round(np.where(raw == DRAW, 0.0, raw))
    discrete = np.where(rounded == 0, DRAW, rounded)
    discrete_rate, _ = _mean_sem(discrete[_valid(discrete)] - 1)
    return HeadToHead(group=group, win_rate=100 * win_rate, standard_error=100 * sem, n_wins=int((valid > 0.5).sum()),
                      n_wins_base=int((valid < 0.5).sum()), n_draws=n_draws, n_total=len(valid),
                      discrete_win_rate=100 * discrete_rate, n_dropped=len(p) - len(valid))


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) for each record of a JSON array (e.g. AlpacaEval's annotations.json), JSONL or
    CSV file; text that is not UTF-8, a line, row or array that does not parse (or is cut off), or
    a record that is not an object raise FileProblem naming the file and line."""
    if path.suffix.lower() == ".csv":
        return list(csv_rows(path))
    records = []
    for number, value in json_or_jsonl_values(path):
        if isinstance(value, FileProblem):
            raise value
        if not isinstance(value, dict):
            raise FileProblem(path, number, f"expected an object (one record per line or array element), got "
                                            f"{type(value).__name__}; fix the record")
        records.append((number, value))
    return records


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_alpaca_eval(path: Path) -> dict[str, list[float | None]]:
    """Preferences of an AlpacaEval annotations file, grouped as '<generator_2> vs <generator_1>'."""
    groups: dict[str, list[float | None]] = {}
    for number, record in read_records(path):
        if "preference" not in record:
            raise FileProblem(path, number, "the record has no 'preference' field; is this AlpacaEval's "
                                            "annotations.json? (else use --format table)")
        if "generator_2" in record:
            label = f"{record['generator_2']} vs {record.get('generator_1', 'baseline')}"
        else:
            label = "all"
        groups.setdefault(label, []).append(_number(record["preference"]))
    return groups


def parse_mapping(text: str | None) -> dict[str, str]:
    """`a=x,b=y` as {a: x, b: y}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"expected NAME=VALUE, got {part!r}")
        mapping[key.strip()] = value.strip()
    return mapping


def label_preferences(values: Mapping[str, str]) -> dict[str, float]:
    """A {cell value: preference} map from `win=V1|V2,loss=…,tie=…` (win = the second output
    wins, i.e. preference 2)."""
    scores = {"win": WIN, "loss": LOSS, "tie": DRAW}
    unknown = set(values) - set(scores)
    if unknown:
        raise ValueError(f"value names must be win, loss or tie; got {', '.join(sorted(unknown))}")
    return {label: scores[name] for name, labels in values.items() for label in labels.split("|")}


def read_table(path: Path, columns: Mapping[str, str], labels: Mapping[str, float] | None = None
               ) -> dict[str, list[float | None]]:
    """Preferences of a CSV/JSONL/JSON table: `columns["preference"]` names the verdict column
    (AlpacaEval-encoded numbers, or labels mapped by `labels`), `columns["group"]` optionally the
    column(s) to group by (`a+b` for several). Rows whose verdict maps to nothing count as dropped."""
    if "preference" not in columns:
        raise ValueError("the column mapping needs preference=<column>")
    unknown = set(columns) - {"preference", "group"}
    if unknown:
        raise ValueError(f"unknown column role(s) {', '.join(sorted(unknown))}; use preference and group")
    groups: dict[str, list[float | None]] = {}
    for number, record in read_records(path):
        if columns["preference"] not in record:
            raise FileProblem(path, number, f"the row has no column {columns['preference']!r}; name the verdict "
                                            f"column with --columns preference=COLUMN (it has {sorted(record)})")
        cell = record[columns["preference"]]
        value = labels.get(str(cell)) if labels is not None else _number(cell)
        group = " ".join(str(record.get(c, "")) for c in columns["group"].split("+")) if "group" in columns else "all"
        groups.setdefault(group, []).append(value)
    return groups
