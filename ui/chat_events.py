"""The chat: a prompt starts a turn whose base answer streams into the chat and whose rounds
stream into the refinement panel; Stop, Regenerate and New chat."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError

from db.errors import InvalidInput
from db.recorder import EventRecorder
from db.store import MAX_TEXT_CHARS, create_conversation
from refine.backends.base import Message
from refine.cnr_format import FORMAT_VERSIONS
from refine.loop import refine_turn
from ui.context import AppContext, Controls
from ui.feedback import feedback_area
from ui.layout import Layout
from ui.render import chat_messages, error_text, notice, panel_messages
from ui.safety import exact
from ui.session import ChatSession, VoteState, for_turn
from ui.turns import TurnRun
from ui.view import TurnView
from ui.voting import start, vote_area

log = logging.getLogger(__name__)
Update = dict[Any, Any]


def prompt_problem(prompt: str | None) -> str | None:
    """Why a prompt cannot be sent, or None."""
    if not prompt or not prompt.strip():
        return "Type a message first."
    if len(prompt) > MAX_TEXT_CHARS:
        return f"Your message is too long: {len(prompt):,} characters (the limit is {MAX_TEXT_CHARS:,})."
    return None


class ChatEvents:
    """Handlers of the chat column; one instance per app.

    A turn is three chained events: `busy` (no queue) hands the prompt over and shows Stop;
    `respond` (queued, limited) streams into the chat and the panel only; `after_turn` (no
    queue) shows the vote and feedback areas and restores the buttons. The streaming event has
    as few outputs as possible: Gradio 6 rebuilds every skipped output component on each step.
    """

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui

    def _buttons(self, busy: bool) -> Update:
        """Send or Stop; Regenerate, New chat and typing only between turns."""
        ui = self.ui
        return {ui.send: gr.Button(visible=not busy), ui.stop: gr.Button(visible=busy),
                ui.regenerate: gr.Button(interactive=not busy), ui.new_chat: gr.Button(interactive=not busy)}

    def _hide_last_turn(self) -> Update:
        return {self.ui.vote_box: gr.Column(visible=False), self.ui.feedback_box: gr.Accordion(visible=False)}

    def busy(self, prompt: str) -> Update:
        """Take the prompt from the box (into `pending`) and show Stop, before the turn is queued."""
        ui = self.ui
        return {**self._buttons(busy=True), **self._hide_last_turn(), ui.pending: prompt,
                ui.prompt: gr.Textbox(value="", interactive=False)}

    def busy_again(self) -> Update:
        """Show Stop before a regenerated turn is queued."""
        return {**self._buttons(busy=True), **self._hide_last_turn(), self.ui.prompt: gr.Textbox(interactive=False)}

    def after_turn(self, votes: VoteState, pending: str | None) -> Update:
        """Offer the vote and the feedback on the turn; give back a prompt that was not sent."""
        ui = self.ui
        box = gr.Textbox(interactive=True) if pending is None else gr.Textbox(value=pending, interactive=True)
        return {**self._buttons(busy=False), **vote_area(ui, votes), **feedback_area(ui, votes), ui.pending: None,
                ui.prompt: box}

    async def respond(self, prompt: str, rounds: int, stop_early: bool, temperature: float, max_new_tokens: int,
                      cnr_max_new_tokens: int, select: str, show_changes: bool, session: ChatSession,
                      pending: str | None, request: gr.Request) -> AsyncIterator[Update]:
        """Answer a prompt, then critique and revise the answer round after round (streamed)."""
        controls = Controls(rounds, stop_early, temperature, max_new_tokens, cnr_max_new_tokens, select)
        text = prompt or pending or ""  # the box itself (API callers) or what `busy` took from it
        async for update in self._turn(text, controls, session, request, show_changes=bool(show_changes)):
            yield self._exact(update)

    async def regenerate(self, rounds: int, stop_early: bool, temperature: float, max_new_tokens: int,
                         cnr_max_new_tokens: int, select: str, show_changes: bool, session: ChatSession,
                         request: gr.Request) -> AsyncIterator[Update]:
        """Answer the last prompt again, as a new turn of the same conversation."""
        earlier, prompt = session.without_last()
        if prompt is None:
            yield self._exact({self.ui.panel: [notice("Nothing to regenerate yet.")]})
            return
        controls = Controls(rounds, stop_early, temperature, max_new_tokens, cnr_max_new_tokens, select)
        async for update in self._turn(prompt, controls, earlier, request, regenerated=True,
                                       show_changes=bool(show_changes)):
            yield self._exact(update)

    def show_changes(self, show_changes: bool, session: ChatSession, request: gr.Request) -> Update:
        """Show the panel's revisions as their changes, or clean: a running turn's from its next
        update on, else the last turn's at once."""
        run = self.ctx.turns.run(request.session_hash or "")
        if run is not None:
            run.show(bool(show_changes))
            if not run.done:
                return gr.skip()  # its stream renders the panel: one writer
        view = run.view if run is not None else session.last_view
        if view is None:
            return gr.skip()  # nothing in the panel comes from a turn (empty, or a notice)
        return self._exact({self.ui.panel: panel_messages(view, show_changes=bool(show_changes))})

    def _exact(self, update: Update) -> Update:
        """The update with the chat's and the panel's messages shown exactly as stored."""
        if not isinstance(update, dict):
            return update  # gr.skip()
        return {k: exact(v) if k in (self.ui.chatbot, self.ui.panel) and isinstance(v, list) else v
                for k, v in update.items()}

    async def stop(self, request: gr.Request) -> None:
        """Stop this session's turn; the turn's own handler then shows how far it got."""
        await self.ctx.turns.stop(request.session_hash or "")

    def new_chat(self, request: gr.Request) -> Update:
        """Forget the conversation on screen (what was stored stays stored)."""
        ui = self.ui
        refused = self.ctx.limits.request_refused(request)
        if refused:  # said in the panel (a gr.Error would also print a traceback per refusal)
            return {ui.panel: exact([notice(refused)])}
        return {ui.chatbot: [], ui.panel: [], ui.prompt: "", ui.pending: None, ui.chat_state: ChatSession(),
                ui.vote_state: VoteState(), **self._hide_last_turn()}

    @staticmethod
    def _chat(session: ChatSession, prompt: str, view: TurnView) -> list[dict[str, Any]]:
        """The chat during a turn; an answer that failed before any text says so at once
        (rather than "…", as if still running)."""
        messages = chat_messages(session, prompt, view)
        if view.error is not None and not view.last_good():
            messages[-1] = {**messages[-1], "content": error_text(view.error.kind, view.error.message)}
        return messages

    def _prepare(self, session: ChatSession, conversation: list[Message]) -> EventRecorder:
        """Validate the prompt for storage, then make sure the conversation exists (in a thread)."""
        recorder = self.ctx.recorder(conversation, session.conversation_id)
        if recorder.conversation_id is None:
            recorder.conversation_id = create_conversation(self.ctx.engine)
        return recorder

    async def _turn(self, prompt: str, controls: Controls, session: ChatSession, request: gr.Request,
                    regenerated: bool = False, show_changes: bool = True) -> AsyncIterator[Update]:
        ui, turns, limits = self.ui, self.ctx.turns, self.ctx.limits
        sid, visitor = request.session_hash or "", limits.visitor(request)
        refused = {ui.pending: None if regenerated else prompt}  # `after_turn` puts it back in the box
        run: TurnRun | None = None
        slot = False
        try:
            if turns.running(sid):
                yield gr.skip()  # a second call while this session's turn runs: leave that turn alone
                return
            if turns.take_stop(sid):
                yield {ui.panel: [notice("⏹ Stopped before it started.")], **refused}
                return
            ctx = self.ctx
            problem = prompt_problem(prompt) or controls.check(
                ctx.max_rounds, ctx.max_new_tokens("base"), ctx.max_new_tokens("cnr"))
            if problem:
                yield {ui.panel: [notice(f"⚠️ {problem}")], **refused}
                return
            slot = limits.running.acquire(visitor)
            over = None if slot else limits.concurrent_text()
            if over or (over := limits.turn_refused(visitor)):
                yield {ui.panel: [notice(over)], **refused}
                return
            conversation = session.conversation(prompt)
            try:
                recorder = await asyncio.to_thread(self._prepare, session, conversation)
            except InvalidInput as exc:
                yield {ui.panel: [notice(f"⚠️ {exc}")], **refused}
                return
            except SQLAlchemyError:
                log.exception("preparing a turn failed")
                yield {ui.panel: [notice("⚠️ The database is unavailable; nothing was sent.")], **refused}
                return
            config = self.ctx.loop_config(controls)
            events = refine_turn(conversation, cnr=self.ctx.cnr, base=self.ctx.base, config=config,
                                 selector=self.ctx.selector_for(controls))
            run = TurnRun(events, recorder, cnr_format=FORMAT_VERSIONS[config.cnr_format])
            run.show_changes = show_changes
            turns.begin(sid, run)
            yield {ui.chatbot: chat_messages(session, prompt, run.view),
                   ui.panel: panel_messages(run.view, show_changes=run.show_changes),
                   ui.vote_state: VoteState(), ui.pending: None}
            async for view in run.snapshots(turns.interval):
                if view.finished:
                    break
                yield {ui.chatbot: self._chat(session, prompt, view),
                       ui.panel: panel_messages(view, show_changes=run.show_changes)}
            failed = run.view.error
            after = session.after(prompt, run.view, recorder.conversation_id,
                                  failure=error_text(failed.kind, failed.message) if failed else None)
            yield {ui.chatbot: chat_messages(after),
                   ui.panel: panel_messages(run.view, show_changes=run.show_changes),
                   ui.chat_state: after, ui.vote_state: start(for_turn(run.view.turn_id, run.view))}
        finally:
            if run is not None:
                if not run.done:  # the handler was cancelled: stop the turn and record it
                    await run.stop()
                turns.end(sid, run)
            if slot:
                limits.running.release(visitor)

    def wire(self) -> None:
        ui = self.ui
        generate = dict(concurrency_id="generate", concurrency_limit=self.ctx.generation_limit,
                        show_progress="minimal")
        outputs = [ui.chatbot, ui.panel, ui.chat_state, ui.vote_state, ui.pending]
        buttons = [ui.send, ui.stop, ui.regenerate, ui.new_chat]
        busy_outputs = [*buttons, ui.vote_box, ui.feedback_box, ui.prompt]
        after_outputs = [*buttons, *ui.vote_area, *ui.feedback_area, ui.prompt, ui.pending]
        ui_only = dict(queue=False, api_visibility="private")
        gr.on([ui.send.click, ui.prompt.submit], self.busy, [ui.prompt], [*busy_outputs, ui.pending], **ui_only).then(
            self.respond, [ui.prompt, *ui.controls, ui.show_changes, ui.chat_state, ui.pending], outputs,
            api_name="respond", **generate).then(
            self.after_turn, [ui.vote_state, ui.pending], after_outputs, **ui_only)
        ui.regenerate.click(self.busy_again, None, busy_outputs, **ui_only).then(
            self.regenerate, [*ui.controls, ui.show_changes, ui.chat_state], outputs, api_name="regenerate",
            **generate).then(
            self.after_turn, [ui.vote_state, ui.pending], after_outputs, **ui_only)
        ui.stop.click(self.stop, None, None, queue=False, api_name="stop")
        ui.show_changes.input(self.show_changes, [ui.show_changes, ui.chat_state], [ui.panel], **ui_only)
        ui.new_chat.click(self.new_chat, None, [ui.chatbot, ui.panel, ui.prompt, ui.pending, ui.chat_state,
                                                ui.vote_state, ui.vote_box, ui.feedback_box],
                          queue=False, api_name="new_chat")
