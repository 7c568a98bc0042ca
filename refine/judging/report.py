"""Statistics as artefacts: an aligned markdown table (printed and saved), JSON, and the win
rate vs round plot (refine.winrate.save_plot)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refine.judging.stats import RoundSummary, summary_dict
from refine.winrate import save_plot, too_few_text

# (key in summary_dict, header); an optional column whose values are all None is left out.
COLUMNS = [("series", "series"), ("round", "round"), ("win_rate", "win rate"), ("ci", "95% CI"),
           ("wins", "win"), ("ties", "tie"), ("losses", "loss"), ("inconsistent", "inconsistent"),
           ("unparseable", "unparseable"), ("skipped", "skipped"), ("both_bad", "both bad"), ("n", "n"),
           ("units", "{unit}"), ("length_ratio", "length ratio")]
ALWAYS = {"series", "round", "win_rate", "ci", "wins", "ties", "losses", "n", "units"}


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with aligned columns (readable as plain text too)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _cell(key: str, data: dict[str, Any]) -> str:
    value = data.get(key)
    if key == "win_rate":
        return _pct(value)
    if key == "ci":
        if data["ci_low"] is None:  # no comparisons, or too few votes for a CI (refine.winrate.MIN_VOTES)
            return too_few_text(data["n"]) if data.get("n") else "—"
        return f"[{_pct(data['ci_low'])}, {_pct(data['ci_high'])}]"
    if key == "length_ratio":
        return "—" if value is None else f"{value:.2f}"
    return "" if value is None else str(value)


def summary_table(summaries: Sequence[RoundSummary], *, unit: str = "prompts") -> str:
    """The summaries as a markdown table (win rate counts ties and inconsistent pairs half)."""
    data = [summary_dict(s) for s in summaries]
    if not data:
        return "(no comparisons)"
    keys = [(k, h.format(unit=unit)) for k, h in COLUMNS if k in ALWAYS or any(d.get(k) is not None for d in data)]
    return markdown([h for _, h in keys], [[_cell(k, d) for k, _ in keys] for d in data])


def write_report(summaries: Sequence[RoundSummary], *, out_dir: Path | None = None, plot: Path | None = None,
                 json_path: Path | None = None, markdown_path: Path | None = None, title: str | None = None,
                 unit: str = "prompts", meta: dict[str, Any] | None = None) -> list[Path]:
    """Save the table (markdown), the numbers (JSON, with `meta`) and the plot (PNG) where asked;
    `out_dir` means stats.md, stats.json and winrate.png in it. Returns the paths written."""
    if out_dir is not None:
        markdown_path = markdown_path or out_dir / "stats.md"
        json_path = json_path or out_dir / "stats.json"
        plot = plot or out_dir / "winrate.png"
    written = []
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        heading = f"{title}\n\n" if title else ""
        markdown_path.write_text(f"{heading}{summary_table(summaries, unit=unit)}\n", encoding="utf-8")
        written.append(markdown_path)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        body = {**(meta or {}), "title": title, "rounds": [summary_dict(s) for s in summaries]}
        json_path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(json_path)
    if plot is not None:
        series: dict[str, list] = {}
        for s in summaries:
            series.setdefault(s.series, []).append(s.rate)
        written.append(save_plot(series, plot, title=title))
    return written
