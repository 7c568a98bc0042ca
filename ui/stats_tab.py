"""The Statistics tab: win rate of each round against the original answer per CnR model, from
the blind votes (the Arena); the votes cast beside the Refinement panel, apart."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from db.stats import model_head_to_head, round_outcomes, vote_win_rates, vote_win_rates_by_model
from refine.outcomes import tally
from refine.winrate import save_plot
from ui.context import AppContext
from ui.layout import Layout
from ui.render import model_stats_rows, stats_details, stats_summary
from ui.safety import public_message

CACHE_S = 30.0  # statistics are recomputed at most this often (and after each vote stored here)


class StatsEvents:
    """Handlers of the Statistics tab."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui
        self._cached: tuple[float, int, dict[Any, Any]] | None = None  # (when, votes stored then, result)
        self._computing = threading.Lock()
        self._plots = tempfile.TemporaryDirectory(prefix="refine-plots-")  # the shared results' plots

    def statistics(self, request: gr.Request) -> dict[Any, Any]:
        """The statistics for a visitor: within their request limit, and shared by everyone
        who asks at about the same time (one computation at once; reused until a vote is stored
        here or CACHE_S passes), so many requests cost one computation."""
        refused = self.ctx.limits.request_refused(request)
        if refused:
            return {self.ui.stats_summary: refused}
        with self._computing:
            cached, votes = self._cached, self.ctx.votes_stored
            if cached is None or cached[1] != votes or time.monotonic() - cached[0] > CACHE_S:
                cached = self._cached = (time.monotonic(), votes, self._plot_as_file(self.refresh()))
        return cached[2]

    def _plot_as_file(self, result: dict[Any, Any]) -> dict[Any, Any]:
        """The result with its plot saved as a file. Gradio writes a returned PIL image into its
        cache anew for every response, at a path named by its content: responses sharing one
        image rewrote the file while others were sending it (cut-off downloads). A file is
        copied into the cache once."""
        plot = result.get(self.ui.stats_plot)
        if not isinstance(plot, Image.Image):
            return result
        folder = Path(self._plots.name)
        for old in sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)[:-3]:
            old.unlink(missing_ok=True)  # a few stay, for responses still being sent
        path = folder / f"winrate-{time.monotonic_ns()}.png"
        plot.save(path)
        return {**result, self.ui.stats_plot: str(path)}

    def refresh(self) -> dict[Any, Any]:
        """Recompute the win rates (bootstrap CIs) from the blind votes per CnR model, and apart
        from the votes that are not blind and the models head to head; redraw the plot and the
        table, and count what became of the rounds (accepted, rejected by rule, failed, …)."""
        engine = self.ctx.engine
        blind = vote_win_rates_by_model(engine, "original", blind=True)
        not_blind = vote_win_rates(engine, "original", blind=False)
        head_to_head = model_head_to_head(engine)
        outcomes = tally(round_outcomes(engine)).markdown()
        series = {f"{public_message(model)} · blind": rates for model, rates in blind.items()}
        if not_blind:
            series["not blind (beside the panel)"] = not_blind
        with tempfile.TemporaryDirectory(prefix="refine-plot-") as folder:
            path = save_plot(series or {"revision vs original": []}, Path(folder) / "winrate.png",
                             title="Win rate of each round's revision vs the original")
            with Image.open(path) as image:
                plot = image.copy()
        ui = self.ui
        return {ui.stats_summary: stats_summary(blind, not_blind, head_to_head), ui.stats_plot: plot,
                ui.stats_table: model_stats_rows(blind),
                ui.stats_details: stats_details(not_blind, head_to_head, outcomes)}

    def wire(self) -> None:
        ui = self.ui
        outputs = [ui.stats_summary, ui.stats_plot, ui.stats_table, ui.stats_details]
        common = dict(concurrency_id="stats", concurrency_limit=2, show_progress="minimal")
        ui.stats_refresh.click(self.statistics, None, outputs, api_name="statistics", **common)
        ui.stats_tab.select(self.statistics, None, outputs, api_visibility="private", **common)
