"""The Gradio app: layout plus event wiring, and how it is served."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ui.chat_events import ChatEvents
from ui.context import AppContext
from ui.data_tab import DataEvents
from ui.feedback import FeedbackEvents
from ui.layout import CSS, build_layout
from ui.stats_tab import StatsEvents
from ui.voting import VoteEvents

STORE_LIMIT = 16  # votes and feedback at once: short writes, never behind a generation


def build_app(ctx: AppContext) -> gr.Blocks:
    """The Blocks app for a context. Generations are limited to what the backends take
    (`ctx.generation_limit`); votes, feedback, statistics and exports have their own
    concurrency groups, and UI-only events skip the queue, so nothing waits behind a generation."""
    with gr.Blocks(title="Refine", delete_cache=(3600, 3600)) as demo:
        ui = build_layout(ctx)
        ChatEvents(ctx, ui).wire()
        VoteEvents(ctx, ui).wire(STORE_LIMIT)
        FeedbackEvents(ctx, ui).wire(STORE_LIMIT)
        StatsEvents(ctx, ui).wire()
        DataEvents(ctx, ui).wire()
    return demo


def launch(demo: gr.Blocks, ctx: AppContext, **overrides: Any) -> Any:
    """Queue and serve the app with the context's settings (`overrides` go to Blocks.launch)."""
    s = ctx.settings
    demo.queue(default_concurrency_limit=1)
    options: dict[str, Any] = dict(
        server_name=s.host, server_port=s.port, share=s.share, run_history=s.run_history, css=CSS,
        footer_links=["api", "settings", *(["runs"] if s.run_history else [])], show_error=False,
    )
    return demo.launch(**{**options, **overrides})
