"""The Gradio app: layout plus event wiring, and how it is served."""

from __future__ import annotations

from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from ui.arena import ArenaEvents
from ui.chat_events import ChatEvents
from ui.context import AppContext
from ui.continuation import ContinueEvents
from ui.data_tab import DataEvents
from ui.feedback import FeedbackEvents
from ui.guard import PageGuard
from ui.layout import CSS, build_layout
from ui.safety import INERT_BUTTONS, content_security_policy
from ui.stats_tab import StatsEvents
from ui.tooltips import tooltips_js
from ui.voting import VoteEvents

STORE_LIMIT = 16  # votes and feedback at once: short writes, never behind a generation
MAX_BODY = 2 * 1024 * 1024  # bytes of one request: a 100,000-character prompt, JSON-escaped, fits
MAX_UPLOAD = "1mb"  # the app has no upload component: Gradio's upload route gets no more than this


def build_app(ctx: AppContext) -> gr.Blocks:
    """The Blocks app for a context. Generations are limited to what the backends take
    (`ctx.generation_limit`); votes, feedback, statistics and exports have their own
    concurrency groups, and UI-only events skip the queue, so nothing waits behind a generation."""
    with gr.Blocks(title="Refine", delete_cache=(3600, 3600)) as demo:
        ui = build_layout(ctx)
        chat = ChatEvents(ctx, ui)
        chat.wire()
        ContinueEvents(ui).wire()
        demo.load(chat.token_limits, None, [ui.max_new_tokens, ui.cnr_max_new_tokens], queue=False,
                  api_visibility="private")
        VoteEvents(ctx, ui).wire(STORE_LIMIT)
        ArenaEvents(ctx, ui.arena).wire(STORE_LIMIT)
        FeedbackEvents(ctx, ui).wire(STORE_LIMIT)
        StatsEvents(ctx, ui).wire()
        data = DataEvents(ctx, ui)
        data.wire()
        if ui.data_button is not None:
            demo.unload(data.forget)
    return demo


def launch(demo: gr.Blocks, ctx: AppContext, **overrides: Any) -> Any:
    """Queue and serve the app with the context's settings (`overrides` go to Blocks.launch)."""
    s = ctx.settings
    # api_open=False: a queued event cannot be called over plain HTTP (POST /gradio_api/run/...),
    # which would skip the queue and every concurrency limit (statistics, votes: tried).
    demo.queue(default_concurrency_limit=1, max_size=s.queue_size, api_open=False)
    guard = Middleware(PageGuard, csp=content_security_policy(s), max_body=MAX_BODY, exports=ctx.exports)
    page_js = "() => {\n  (" + INERT_BUTTONS + ")();" + tooltips_js() + "}"
    options: dict[str, Any] = dict(
        server_name=s.host, server_port=s.port, share=s.share, run_history=s.run_history, css=CSS,
        footer_links=["api", "settings", *(["runs"] if s.run_history else [])], show_error=False,
        max_file_size=MAX_UPLOAD, app_kwargs={"middleware": [guard]}, js=page_js,
    )
    return demo.launch(**{**options, **overrides})
