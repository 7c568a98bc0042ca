"""The Data tab (only when an admin token is configured): the exports as downloads.

The token check shares nothing with anyone: it runs at once (no queue, no delay), and a visitor
who entered REFINE_ADMIN_MAX_FAILURES wrong tokens is locked out for a while (see ui/limits.py),
so guessing never slows the admin down. Only the exports themselves run one at a time."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from db.app_queries import write_exports
from ui.context import AppContext
from ui.layout import Layout
from ui.limits import wait_text

log = logging.getLogger(__name__)


class DataEvents:
    """Handlers of the Data tab."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui
        self._exporting = asyncio.Lock()  # exports write every table: one at a time

    async def export(self, token: str | None, request: gr.Request) -> dict[Any, Any]:
        """Check the token, then write every export into a fresh private folder and offer its
        files as one-time links of this session."""
        ui, limits = self.ui, self.ctx.limits
        assert ui.data_status is not None and ui.data_links is not None
        visitor = limits.visitor(request)
        verdict = limits.admin.check(visitor, token)
        if verdict != "ok":
            log.warning("Data tab: %s admin token", "locked-out" if verdict == "locked" else "wrong")
            if verdict == "locked":
                wait = wait_text(limits.admin.locked_for(visitor))
                return {ui.data_status: f"🔒 Too many wrong tokens from your address; try again in {wait}.",
                        ui.data_links: ""}
            left = limits.admin.failures_left(visitor)
            return {ui.data_status: f"⚠️ Wrong admin token ({left} attempt(s) left before a lockout).",
                    ui.data_links: ""}
        session = request.session_hash or ""
        async with self._exporting:
            folder = Path(tempfile.mkdtemp(prefix="refine-export-"))
            files = await asyncio.to_thread(write_exports, self.ctx.engine, folder)
            grant = self.ctx.exports.publish(session, folder, [Path(f) for f in files])
        links = "\n".join(f"- [{name}]({link})" for name, link in grant.links().items())
        ttl = f"{self.ctx.settings.export_ttl_minutes:g}"
        return {ui.data_status: f"{len(files)} files ready: each link works once, for {ttl} minutes.",
                ui.data_links: links}

    def forget(self, request: gr.Request) -> None:
        """The page was closed: its exports end (links dead, files deleted)."""
        self.ctx.exports.revoke_session(request.session_hash or "")

    def wire(self) -> None:
        ui = self.ui
        if ui.data_button is None:
            return
        # Not queued: a token is checked as soon as it arrives, never behind someone else's check
        # or export (the exports themselves take turns on a lock).
        ui.data_button.click(self.export, [ui.data_token], [ui.data_status, ui.data_links], api_name="export",
                             queue=False)
