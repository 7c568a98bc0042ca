"""The chat: a prompt starts a turn whose base answer streams into the chat and whose rounds
stream into the refinement panel; Stop, Regenerate and New chat."""

from __future__ import annotations

import asyncio
import logging
import time
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
from ui.continuation import continue_area
from ui.feedback import feedback_area
from ui.layout import Layout
from ui.progress import progress_text
from ui.render import chat_messages, error_text, notice, panel_messages
from ui.safety import exact
from ui.session import ChatSession, VoteState, for_turn
from ui.turns import TurnRun
from ui.view import TurnView
from ui.voting import start, vote_area
from ui.waiting import Ticket, waiting_text

log = logging.getLogger(__name__)
Update = dict[Any, Any]
WAIT_TICK_S = 1.0  # a waiting visitor's place and clock refresh at least this often...
PROGRESS_TICK_S = 1.0  # ...and so does a running turn's progress line


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
        return {self.ui.vote_box: gr.Column(visible=False), self.ui.feedback_box: gr.Accordion(visible=False),
                self.ui.continue_from: gr.Dropdown(visible=False)}

    def busy(self, prompt: str, session: ChatSession) -> Update:
        """Take the prompt from the box (into `pending`), show it in the chat and show Stop, at
        once, before the turn starts. An empty prompt changes nothing on the page and starts no
        turn (the event chain stops at the error; Gradio shows no notice for an event outside
        its queue). A prompt too long is refused by the turn, which says why in the panel."""
        if not (prompt or "").strip():
            raise gr.Error("Type a message first.", duration=4, title="Not sent", print_exception=False)
        ui = self.ui
        return {**self._buttons(busy=True), **self._hide_last_turn(), ui.pending: prompt,
                ui.prompt: gr.Textbox(value="", interactive=False),
                ui.chatbot: exact(chat_messages(session, prompt) + [notice("⏳ Sending…")]), ui.progress: ""}

    def busy_again(self) -> Update:
        """Show Stop before a regenerated turn is queued."""
        return {**self._buttons(busy=True), **self._hide_last_turn(), self.ui.prompt: gr.Textbox(interactive=False)}

    def after_turn(self, votes: VoteState, pending: str | None, session: ChatSession) -> Update:
        """Offer the vote, the feedback and the choice of version to continue from on the turn;
        give back a prompt that was not sent."""
        ui = self.ui
        box = gr.Textbox(interactive=True) if pending is None else gr.Textbox(value=pending, interactive=True)
        return {**self._buttons(busy=False), **vote_area(ui, votes), **feedback_area(ui, votes),
                **continue_area(ui, session), ui.pending: None, ui.prompt: box}

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
        controls = Controls(rounds, stop_early, temperature, max_new_tokens, cnr_max_new_tokens, select).regenerated()
        async for update in self._turn(prompt, controls, earlier, request, regenerated=True,
                                       show_changes=bool(show_changes), shown=session):
            yield self._exact(update)

    async def token_limits(self) -> Update:
        """On page load: the token sliders up to each model's context window, once it is known
        (a TGI server's /info is asked when the app first serves a page; ui.model_limits)."""
        await self.ctx.contexts.refresh()
        s, ui = self.ctx.settings, self.ui
        most, cnr_most = self.ctx.max_new_tokens("base"), self.ctx.max_new_tokens("cnr")
        return {ui.max_new_tokens: gr.Slider(maximum=most, value=min(s.max_new_tokens, most)),
                ui.cnr_max_new_tokens: gr.Slider(maximum=cnr_most, value=min(s.cnr_max_new_tokens, cnr_most))}

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
        return {ui.chatbot: [], ui.panel: [], ui.progress: "", ui.prompt: "", ui.pending: None,
                ui.chat_state: ChatSession(), ui.vote_state: VoteState(), **self._hide_last_turn()}

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

    async def _wait_in_line(self, ticket: Ticket, sid: str, session: ChatSession,
                            prompt: str) -> AsyncIterator[Update | None]:
        """While the turn waits for the model: the visitor's message in the chat and their place
        in line, in plain words, refreshed on every change and each second. Yields None last
        when Stop was pressed meanwhile (the turn then does not start)."""
        line, turns, started = self.ctx.line, self.ctx.turns, time.perf_counter()
        async for place in line.wait(ticket, tick=WAIT_TICK_S):
            if turns.take_stop(sid):
                yield None
                return
            text = waiting_text(place, line.slots, line.typical(), time.perf_counter() - started)
            yield {self.ui.chatbot: chat_messages(session, prompt) + [notice(text)], self.ui.progress: text}

    async def _turn(self, prompt: str, controls: Controls, session: ChatSession, request: gr.Request,
                    regenerated: bool = False, show_changes: bool = True,
                    shown: ChatSession | None = None) -> AsyncIterator[Update]:
        """One turn: checks, a place in line, then the answer and the rounds, streamed.
        `shown` is the chat to put back when the turn does not start (default `session`)."""
        ui, turns, limits, line = self.ui, self.ctx.turns, self.ctx.limits, self.ctx.line
        sid, visitor = request.session_hash or "", limits.visitor(request)
        # `after_turn` puts a prompt that was not sent back in the box; the chat loses it again
        refused = {ui.pending: None if regenerated else prompt, ui.chatbot: chat_messages(shown or session),
                   ui.progress: ""}
        run: TurnRun | None = None
        slot = False
        ticket: Ticket | None = None
        holding = False  # the ticket got a generation slot
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
            ticket = line.join()
            if ticket is None:
                yield {ui.panel: [notice(f"⏳ The app is busy: {line.waiting} turns are waiting for the model "
                                         "already. Please try again in a few minutes.")], **refused}
                return
            turns.waiting(sid, True)
            async for update in self._wait_in_line(ticket, sid, session, prompt):
                if update is None:
                    yield {ui.panel: [notice("⏹ Stopped before it started.")], **refused}
                    return
                yield update
            holding = True
            turns.waiting(sid, False)
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
                   ui.progress: progress_text(run.view, controls), ui.vote_state: VoteState(), ui.pending: None}
            async for view in run.snapshots(turns.interval, tick=PROGRESS_TICK_S):
                if view.finished:
                    break
                yield {ui.chatbot: self._chat(session, prompt, view),
                       ui.panel: panel_messages(view, show_changes=run.show_changes),
                       ui.progress: progress_text(view, controls)}
            failed = run.view.error
            after = session.after(prompt, run.view, recorder.conversation_id,
                                  failure=error_text(failed.kind, failed.message) if failed else None)
            yield {ui.chatbot: chat_messages(after),
                   ui.panel: panel_messages(run.view, show_changes=run.show_changes),
                   ui.progress: progress_text(run.view, controls),
                   ui.chat_state: after, ui.vote_state: start(for_turn(run.view.turn_id, run.view))}
        finally:
            if ticket is not None:
                turns.waiting(sid, False)
            if run is not None:
                if not run.done:  # the handler was cancelled: stop the turn and record it
                    await run.stop()
                turns.end(sid, run)
            if ticket is not None:
                if holding:  # a stopped or failed turn says little about how long turns take
                    ok = run is not None and run.view.stop_reason not in (None, "cancelled", "error")
                    line.release(time.perf_counter() - run.view.started if ok and run else None)
                else:
                    line.leave(ticket)  # stopped, refused or gone while waiting
            if slot:
                limits.running.release(visitor)

    def wire(self) -> None:
        ui = self.ui
        # Every turn's handler starts at once: the generation limit is the app's own line
        # (ctx.line, ui.waiting), which tells a waiting visitor their place; the progress line
        # replaces Gradio's timer.
        generate = dict(concurrency_id="generate", concurrency_limit=None, show_progress="hidden")
        outputs = [ui.chatbot, ui.panel, ui.progress, ui.chat_state, ui.vote_state, ui.pending]
        buttons = [ui.send, ui.stop, ui.regenerate, ui.new_chat]
        busy_outputs = [*buttons, ui.vote_box, ui.feedback_box, ui.continue_from, ui.prompt]
        after_outputs = [*buttons, *ui.vote_area, *ui.feedback_area, ui.continue_from, ui.prompt, ui.pending]
        ui_only = dict(queue=False, api_visibility="private")
        # .success: a prompt `busy` refuses (empty, too long) starts no turn and changes nothing.
        gr.on([ui.send.click, ui.prompt.submit], self.busy, [ui.prompt, ui.chat_state],
              [*busy_outputs, ui.pending, ui.chatbot, ui.progress],
              show_progress="hidden", **ui_only).success(
            self.respond, [ui.prompt, *ui.controls, ui.show_changes, ui.chat_state, ui.pending], outputs,
            api_name="respond", **generate).then(
            self.after_turn, [ui.vote_state, ui.pending, ui.chat_state], after_outputs, **ui_only)
        ui.regenerate.click(self.busy_again, None, busy_outputs, **ui_only).then(
            self.regenerate, [*ui.controls, ui.show_changes, ui.chat_state], outputs, api_name="regenerate",
            **generate).then(
            self.after_turn, [ui.vote_state, ui.pending, ui.chat_state], after_outputs, **ui_only)
        ui.stop.click(self.stop, None, None, queue=False, api_name="stop")
        ui.show_changes.input(self.show_changes, [ui.show_changes, ui.chat_state], [ui.panel], **ui_only)
        ui.new_chat.click(self.new_chat, None, [ui.chatbot, ui.panel, ui.progress, ui.prompt, ui.pending,
                                                ui.chat_state, ui.vote_state, ui.vote_box, ui.feedback_box,
                                                ui.continue_from],
                          queue=False, api_name="new_chat")
