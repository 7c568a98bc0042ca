"""The Data tab (only when an admin token is configured): the exports as downloads."""

from __future__ import annotations

import hmac
import logging
import tempfile
import time
from typing import Any

from db.app_queries import write_exports
from ui.context import AppContext
from ui.layout import Layout

log = logging.getLogger(__name__)
WRONG_TOKEN_DELAY_S = 1.0  # slows down guessing


class DataEvents:
    """Handlers of the Data tab."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui

    def authorized(self, token: str | None) -> bool:
        """Whether `token` is the admin token (constant-time comparison)."""
        expected = self.ctx.settings.admin_token
        if expected is None or not token:
            return False
        return hmac.compare_digest(token.encode(), expected.get_secret_value().encode())

    def export(self, token: str | None) -> dict[Any, Any]:
        """Write every export into a fresh folder and offer the files for download."""
        ui = self.ui
        assert ui.data_status is not None and ui.data_files is not None
        if not self.authorized(token):
            time.sleep(WRONG_TOKEN_DELAY_S)
            log.warning("Data tab: wrong admin token")
            return {ui.data_status: "⚠️ Wrong admin token.", ui.data_files: None}
        files = write_exports(self.ctx.engine, tempfile.mkdtemp(prefix="refine-export-"))
        return {ui.data_status: f"{len(files)} files ready.", ui.data_files: [str(f) for f in files]}

    def wire(self) -> None:
        ui = self.ui
        if ui.data_button is None:
            return
        ui.data_button.click(self.export, [ui.data_token], [ui.data_status, ui.data_files], api_name="export",
                             concurrency_id="export", concurrency_limit=1)
