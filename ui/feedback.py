"""Written feedback on the last turn: the user's own critique and/or an edited answer, stored as
a feedback record (training data for the next critique-and-revise model)."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError

from db.errors import InvalidInput
from db.store import save_feedback
from refine.cnr_format import normalize
from ui.context import AppContext
from ui.layout import Layout
from ui.render import version_name
from ui.safety import public_message
from ui.session import VoteState

log = logging.getLogger(__name__)


def feedback_area(ui: Layout, state: VoteState) -> dict[Any, Any]:
    """Updates of the feedback components for the last turn (hidden without a stored turn)."""
    if state.turn_id is None or not state.versions:
        return {ui.feedback_box: gr.Accordion(visible=False)}
    latest = max(state.versions)
    choices = [(version_name(k, state.versions).capitalize(), str(k)) for k in sorted(state.versions)]
    return {ui.feedback_box: gr.Accordion(visible=True), ui.fb_version: gr.Dropdown(choices=choices, value=str(latest)),
            ui.fb_critique: "", ui.fb_edit: state.versions[latest], ui.fb_status: ""}


class FeedbackEvents:
    """Handlers of the feedback components."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui

    def select_version(self, value: str | None, state: VoteState) -> dict[Any, Any]:
        """Put the chosen version in the edit box."""
        try:
            return {self.ui.fb_edit: state.versions[int(value or "")], self.ui.fb_status: ""}
        except (ValueError, KeyError):
            return gr.skip()

    def submit(self, value: str | None, critique: str, edited: str, state: VoteState,
               request: gr.Request) -> dict[Any, Any]:
        """Store the feedback; an edit box left as it was counts as no edit, and the same
        feedback saved again is not stored again."""
        ui = self.ui
        refused = self.ctx.limits.request_refused(request)
        if refused:
            return {ui.fb_status: refused}
        try:
            index = int(value or "")
            original = state.versions[index]
        except (ValueError, KeyError):
            return {ui.fb_status: "Choose the answer your feedback is about."}
        if state.turn_id is None:
            return {ui.fb_status: "There is no stored answer to give feedback on."}
        edit = edited if edited and normalize(edited) != normalize(original) else None
        if not (critique or "").strip() and edit is None:
            return {ui.fb_status: "Write a critique or change the answer first."}
        try:
            _, new = save_feedback(self.ctx.engine, turn_id=state.turn_id, round_index=index,
                                   critique=critique or None, edited_answer=edit,
                                   voter_hash=self.ctx.voter(request.session_hash or ""))
        except InvalidInput as exc:
            return {ui.fb_status: f"⚠️ Not saved: {public_message(str(exc))}"}
        except SQLAlchemyError:
            log.exception("storing feedback failed")
            return {ui.fb_status: "⚠️ Your feedback could not be saved (database error); please try again."}
        kinds = " and ".join(k for k, v in (("critique", (critique or "").strip()), ("improved answer", edit)) if v)
        if not new:  # the same feedback on the same version is stored once (db.store.save_feedback)
            return {ui.fb_status: f"This {kinds} of {version_name(index, state.versions)} was already saved; "
                                  "it is stored once.", ui.fb_critique: ""}
        return {ui.fb_status: f"Saved your {kinds} of {version_name(index, state.versions)}. Thank you!",
                ui.fb_critique: ""}

    def wire(self, store_limit: int) -> None:
        ui = self.ui
        ui.fb_version.input(self.select_version, [ui.fb_version, ui.vote_state], [ui.fb_edit, ui.fb_status],
                            queue=False, api_visibility="private")
        ui.fb_submit.click(self.submit, [ui.fb_version, ui.fb_critique, ui.fb_edit, ui.vote_state],
                           [ui.fb_status, ui.fb_critique], api_name="feedback", concurrency_id="store",
                           concurrency_limit=store_limit)
