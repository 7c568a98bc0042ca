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
from refine.loop import refine_turn
from ui.context import AppContext, Controls
from ui.feedback import feedback_area
from ui.layout import Layout
from ui.render import chat_messages, panel_messages
from ui.session import ChatSession, VoteState, for_turn
from ui.turns import TurnRun
from ui.view import TurnView
from ui.voting import start, vote_area

log = logging.getLogger(__name__)
Update = dict[Any, Any]
STREAM_INTERVAL_S = 0.04  # at most ~25 updates a second per turn while tokens stream


def prompt_problem(prompt: str | None) -> str | None:
    """Why a prompt cannot be sent, or None."""
    if not prompt or not prompt.strip():
        return "Type a message first."
    if len(prompt) > MAX_TEXT_CHARS:
        return f"Your message is too long: {len(prompt):,} characters (the limit is {MAX_TEXT_CHARS:,})."
    return None


class ChatEvents:
    """Handlers of the chat column; one instance per app."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui

    def _buttons(self, busy: bool) -> Update:
        """Send or Stop; New chat and typing only between turns (Regenerate refuses during one)."""
        ui = self.ui
        return {ui.send: gr.Button(visible=not busy), ui.stop: gr.Button(visible=busy),
                ui.new_chat: gr.Button(interactive=not busy), ui.prompt: gr.Textbox(interactive=not busy)}

    def busy(self) -> Update:
        """Show Stop at once, before the turn leaves the queue."""
        return self._buttons(busy=True)

    async def respond(self, prompt: str, rounds: int, stop_early: bool, temperature: float, max_new_tokens: int,
                      cnr_max_new_tokens: int, session: ChatSession, request: gr.Request) -> AsyncIterator[Update]:
        """Answer a prompt, then critique and revise the answer round after round (streamed)."""
        controls = Controls(rounds, stop_early, temperature, max_new_tokens, cnr_max_new_tokens)
        async for update in self._turn(prompt, controls, session, request.session_hash or ""):
            yield update

    async def regenerate(self, rounds: int, stop_early: bool, temperature: float, max_new_tokens: int,
                         cnr_max_new_tokens: int, session: ChatSession, request: gr.Request) -> AsyncIterator[Update]:
        """Answer the last prompt again, as a new turn of the same conversation."""
        earlier, prompt = session.without_last()
        if prompt is None:
            yield {self.ui.status: "Nothing to regenerate yet.", **self._buttons(busy=False)}
            return
        controls = Controls(rounds, stop_early, temperature, max_new_tokens, cnr_max_new_tokens)
        async for update in self._turn(prompt, controls, earlier, request.session_hash or "", keep_prompt=True):
            yield update

    async def stop(self, request: gr.Request) -> Any:
        """Stop this session's turn; the turn's own handler then shows how far it got."""
        await self.ctx.turns.stop(request.session_hash or "")
        return gr.skip()

    def new_chat(self) -> Update:
        """Forget the conversation on screen (what was stored stays stored)."""
        ui, votes = self.ui, VoteState()
        return {ui.chatbot: [], ui.panel: [], ui.status: "", ui.prompt: "", ui.chat_state: ChatSession(),
                ui.vote_state: votes, **vote_area(ui, votes), **feedback_area(ui, votes)}

    def _prepare(self, session: ChatSession, conversation: list[Message]) -> EventRecorder:
        """Validate the prompt for storage, then make sure the conversation exists (in a thread)."""
        recorder = self.ctx.recorder(conversation, session.conversation_id)
        if recorder.conversation_id is None:
            recorder.conversation_id = create_conversation(self.ctx.engine)
        return recorder

    async def _turn(self, prompt: str, controls: Controls, session: ChatSession, sid: str,
                    keep_prompt: bool = False) -> AsyncIterator[Update]:
        ui, turns = self.ui, self.ctx.turns
        idle = self._buttons(busy=False)
        run: TurnRun | None = None
        try:
            if turns.take_stop(sid):
                yield {ui.status: "Stopped before it started.", **idle}
                return
            if turns.running(sid):
                yield {ui.status: "⚠️ A turn is already running in this session."}
                return
            problem = prompt_problem(prompt) or controls.check()
            if problem:
                yield {ui.status: f"⚠️ {problem}", **idle}
                return
            conversation = session.conversation(prompt)
            try:
                recorder = await asyncio.to_thread(self._prepare, session, conversation)
            except InvalidInput as exc:
                yield {ui.status: f"⚠️ {exc}", **idle}
                return
            except SQLAlchemyError:
                log.exception("preparing a turn failed")
                yield {ui.status: "⚠️ The database is unavailable; nothing was sent.", **idle}
                return
            events = refine_turn(conversation, cnr=self.ctx.cnr, base=self.ctx.base,
                                 config=self.ctx.loop_config(controls))
            run = TurnRun(events, recorder)
            turns.begin(sid, run)
            empty = VoteState()
            # Buttons were switched by `busy` (API callers have none); few updates: each costs.
            yield {**({} if keep_prompt else {ui.prompt: ""}), ui.status: "", ui.vote_state: empty,
                   ui.chatbot: chat_messages(session, prompt, run.view), ui.panel: panel_messages(run.view),
                   **vote_area(ui, empty), **feedback_area(ui, empty)}
            async for view in run.snapshots(STREAM_INTERVAL_S):
                if view.finished:
                    break
                yield {ui.chatbot: chat_messages(session, prompt, view), ui.panel: panel_messages(view)}
            yield {**self._finished(session, prompt, recorder.conversation_id, run.view), **idle}
        finally:
            if run is not None:
                if not run.done:  # the handler was cancelled: stop the turn and record it
                    await run.stop()
                turns.end(sid, run)

    def _finished(self, session: ChatSession, prompt: str, conversation_id: int | None, view: TurnView) -> Update:
        ui = self.ui
        after = session.after(prompt, view, conversation_id)
        votes = start(for_turn(view.turn_id, view))
        return {ui.chatbot: chat_messages(after), ui.panel: panel_messages(view), ui.status: "",
                ui.chat_state: after, ui.vote_state: votes, **vote_area(ui, votes), **feedback_area(ui, votes)}

    def wire(self) -> None:
        ui = self.ui
        limit = self.ctx.generation_limit
        busy_outputs = [ui.send, ui.stop, ui.new_chat, ui.prompt]
        outputs = [ui.prompt, ui.chatbot, ui.panel, ui.status, ui.send, ui.stop, ui.new_chat,
                   *ui.vote_area, *ui.feedback_area, ui.chat_state, ui.vote_state]
        generate = dict(concurrency_id="generate", concurrency_limit=limit, show_progress="minimal")
        gr.on([ui.send.click, ui.prompt.submit], self.busy, None, busy_outputs, queue=False,
              api_visibility="private").then(
            self.respond, [ui.prompt, *ui.controls, ui.chat_state], outputs, api_name="respond", **generate)
        ui.regenerate.click(self.busy, None, busy_outputs, queue=False, api_visibility="private").then(
            self.regenerate, [*ui.controls, ui.chat_state], outputs, api_name="regenerate", **generate)
        ui.stop.click(self.stop, None, [ui.status], queue=False, api_name="stop")
        ui.new_chat.click(self.new_chat, None, outputs, queue=False, api_name="new_chat")
