"""The Statistics tab: win rate of each round against the original answer, from the votes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from db.stats import round_outcomes, vote_win_rates
from refine.outcomes import tally
from refine.winrate import save_plot
from ui.context import AppContext
from ui.layout import Layout
from ui.render import stats_rows, stats_summary


class StatsEvents:
    """Handlers of the Statistics tab."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui

    def refresh(self) -> dict[Any, Any]:
        """Recompute the win rates (bootstrap CIs), redraw the plot and the table, and count what
        became of the rounds (accepted, rejected by rule, failed, …)."""
        rates = vote_win_rates(self.ctx.engine, "original")
        outcomes = tally(round_outcomes(self.ctx.engine)).markdown()
        with tempfile.TemporaryDirectory(prefix="refine-plot-") as folder:
            path = save_plot({"revision vs original": rates}, Path(folder) / "winrate.png",
                             title="Win rate of each round's revision vs the original")
            with Image.open(path) as image:
                plot = image.copy()
        ui = self.ui
        summary = stats_summary(rates) + (f"\n\n#### What became of the rounds\n\n{outcomes}" if outcomes else "")
        return {ui.stats_summary: summary, ui.stats_plot: plot, ui.stats_table: stats_rows(rates)}

    def wire(self) -> None:
        ui = self.ui
        outputs = [ui.stats_summary, ui.stats_plot, ui.stats_table]
        common = dict(concurrency_id="stats", concurrency_limit=2, show_progress="minimal")
        ui.stats_refresh.click(self.refresh, None, outputs, api_name="statistics", **common)
        ui.stats_tab.select(self.refresh, None, outputs, api_visibility="private", **common)
