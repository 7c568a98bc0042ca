"""The Arena tab: a prompt and two versions of its answer from the stored turns (db/arena.py),
with no names and in random order; the visitor votes, then learns which was which, as in
Chatbot Arena. Its votes are stored blind (the Chat tab's vote is not: the Refinement panel
above it names the versions).

Model text is shown only in Chatbots, as the chat shows it (ui/safety.py); the app's own
Markdown carries model names only inside code spans."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError

from db.arena import ArenaPair, Side, record_arena_vote, sample_pair
from db.errors import InvalidInput
from db.stats import model_name
from ui.context import AppContext
from ui.render import code_span
from ui.safety import exact, public_message, shown_as_text

log = logging.getLogger(__name__)

INTRO = ("### Which answer is better?\n"
         "Two answers to the same prompt, in random order and without names: the original answer and a revision, "
         "two revisions, or two critique-and-revise models' revisions. Vote, then see which was which. "
         "These votes are *blind*, so they make the headline win rates in the Statistics tab.")
NOTHING_YET = ("There is nothing to compare yet. The Arena takes its pairs from stored answers: chat in the Chat "
               "tab, or fill it from a set of prompts with `python -m refine revise --input prompts.jsonl "
               "--output revised.jsonl --db <this app's database URL>`.")
ALL_JUDGED = "You have judged every pair there is. Thank you! New answers bring new pairs."
CHOICE_TEXT = {"left": "A is better", "right": "B is better", "tie": "a tie", "both_bad": "both bad"}


@dataclass(frozen=True)
class ArenaState:
    """The pair on screen (`a_left`: its version a is shown as A, on the left), the choice cast
    on it, and the pairs this session was shown and judged (by key)."""

    pair: ArenaPair | None = None
    a_left: bool = True
    voted: str | None = None
    seen: frozenset[str] = frozenset()
    judged: frozenset[str] = frozenset()

    @property
    def sides(self) -> tuple[Side, Side]:
        """(A, B): the versions on the left and on the right."""
        assert self.pair is not None
        return (self.pair.a, self.pair.b) if self.a_left else (self.pair.b, self.pair.a)


@dataclass
class ArenaLayout:
    """The Arena tab's components."""

    tab: gr.Tab
    prompt: gr.Chatbot
    left: gr.Chatbot
    right: gr.Chatbot
    vote_row: gr.Row
    buttons: dict[str, gr.Button]  # choice -> button
    reveal: gr.Markdown
    next: gr.Button
    state: gr.State

    @property
    def outputs(self) -> list[Any]:
        return [self.prompt, self.left, self.right, self.vote_row, self.reveal, self.next, self.state]


def _answer(ctx: AppContext, elem_id: str) -> gr.Chatbot:
    return gr.Chatbot(show_label=False, elem_id=elem_id, layout="panel", height=None, min_height=96, max_height=560,
                      buttons=[], feedback_options=None, autoscroll=False, line_breaks=True,
                      allow_tags=shown_as_text(ctx.settings))


def build_arena(ctx: AppContext) -> ArenaLayout:
    """Create the Arena tab inside the current gr.Tabs context."""
    with gr.Tab("Arena", id="arena", elem_id="arena-tab") as tab:
        gr.Markdown(INTRO)
        prompt = gr.Chatbot(label="Prompt", elem_id="arena-prompt", layout="panel", height=None, min_height=64,
                            max_height=320, buttons=[], feedback_options=None, autoscroll=False,
                            allow_tags=shown_as_text(ctx.settings))
        with gr.Row(equal_height=True):
            with gr.Column():
                gr.Markdown("**A**", elem_classes="refine-side-label")
                left = _answer(ctx, "arena-left")
            with gr.Column():
                gr.Markdown("**B**", elem_classes="refine-side-label")
                right = _answer(ctx, "arena-right")
        with gr.Row(visible=False) as vote_row:
            buttons = {
                "left": gr.Button("⬅ A is better", elem_id="arena-left-btn"),
                "right": gr.Button("B is better ➡", elem_id="arena-right-btn"),
                "tie": gr.Button("Tie", elem_id="arena-tie-btn"),
                "both_bad": gr.Button("Both bad", elem_id="arena-both-bad-btn"),
            }
        reveal = gr.Markdown(elem_id="arena-reveal")
        next_ = gr.Button("Show a pair", elem_id="arena-next")
        # Inside the tab: a State between two tabs shifts the tabs' order on the page, and the next
        # tab's button then shows twice once it is opened (Gradio 6.31).
        state = gr.State(ArenaState())
    return ArenaLayout(tab=tab, prompt=prompt, left=left, right=right, vote_row=vote_row, buttons=buttons,
                       reveal=reveal, next=next_, state=state)


def version_text(side: Side) -> str:
    """'the original answer (base model `m`)', 'revision 2 by the CnR model `c + adapter`'."""
    if side.round == 0:
        return f"the original answer (base model {code_span(side.model)})"
    return f"revision {side.round} by the critique-and-revise model {code_span(model_name(side.model, side.adapter))}"


def reveal_text(state: ArenaState) -> str:
    """After the vote: what was chosen, and which version was which."""
    a, b = state.sides
    return (f"Thanks, your vote (**{CHOICE_TEXT[state.voted or '']}**) is saved.\n\n"
            f"**A** was {version_text(a)}.\n\n**B** was {version_text(b)}.")


def arena_view(ui: ArenaLayout, state: ArenaState) -> dict[Any, Any]:
    """Every Arena output for `state`: the pair (or why there is none), the vote buttons until
    the vote, the reveal after it."""
    if state.pair is None:
        empty = ALL_JUDGED if state.judged else NOTHING_YET
        return {ui.prompt: [], ui.left: [], ui.right: [], ui.vote_row: gr.Row(visible=False),
                ui.reveal: empty, ui.next: gr.Button("Look again"), ui.state: state}
    a, b = state.sides
    open_ = state.voted is None
    return {
        ui.prompt: exact([dict(m) for m in state.pair.messages]),
        ui.left: exact([{"role": "assistant", "content": a.text}]),
        ui.right: exact([{"role": "assistant", "content": b.text}]),
        ui.vote_row: gr.Row(visible=open_),
        ui.reveal: "" if open_ else reveal_text(state),
        ui.next: gr.Button("Skip this pair" if open_ else "Next pair"),
        ui.state: state,
    }


class ArenaEvents:
    """Handlers of the Arena tab."""

    def __init__(self, ctx: AppContext, ui: ArenaLayout, rng: random.Random | None = None) -> None:
        self.ctx, self.ui = ctx, ui
        self.rng = rng or random.Random()

    def next_pair(self, state: ArenaState, request: gr.Request) -> dict[Any, Any]:
        """Draw the next pair: the fewest blind votes first, none this session judged, one it
        has not seen yet if there is any; shown in random order."""
        refused = self.ctx.limits.request_refused(request)
        if refused:
            return {self.ui.reveal: refused}
        seen = state.seen | ({state.pair.key} if state.pair is not None else set())
        try:
            pair = sample_pair(self.ctx.engine, exclude=state.judged, seen=seen, rng=self.rng)
        except SQLAlchemyError:
            log.exception("drawing an Arena pair failed")
            return {self.ui.reveal: "⚠️ The database is unavailable; please try again."}
        if pair is None:
            return arena_view(self.ui, ArenaState(seen=seen, judged=state.judged))
        state = ArenaState(pair=pair, a_left=self.rng.random() < 0.5, seen=seen | {pair.key}, judged=state.judged)
        return arena_view(self.ui, state)

    def open(self, state: ArenaState, request: gr.Request) -> dict[Any, Any]:
        """On opening the tab: a pair, unless one is waiting for a vote."""
        if state.pair is not None and state.voted is None:
            return gr.skip()
        return self.next_pair(state, request)

    def loading(self) -> dict[Any, Any]:
        """At once, before the next pair is drawn: no vote on the pair that is going."""
        return {self.ui.vote_row: gr.Row(visible=False), self.ui.reveal: "Drawing a pair…"}

    def handler(self, choice: str) -> Callable[..., dict[Any, Any]]:
        """The click handler of one vote button."""

        def vote(state: ArenaState, request: gr.Request) -> dict[Any, Any]:
            refused = self.ctx.limits.request_refused(request)
            if refused:
                return {self.ui.reveal: refused}
            return self.vote(choice, state, request.session_hash or "")

        vote.__name__ = f"arena_vote_{choice}"
        return vote

    def vote(self, choice: str, state: ArenaState, session: str) -> dict[Any, Any]:
        """Store a blind vote on the pair on screen, in the order shown, then reveal it."""
        ui = self.ui
        if state.pair is None:
            return {ui.reveal: "There is nothing to vote on: show a pair first."}
        if state.voted is not None:
            return arena_view(ui, state)
        try:
            record_arena_vote(self.ctx.engine, state.pair, a_left=state.a_left, choice=choice,
                              voter_hash=self.ctx.voter(session))
        except InvalidInput as exc:
            return {ui.reveal: f"⚠️ Your vote was not saved: {public_message(str(exc))}"}
        except SQLAlchemyError:
            log.exception("storing an Arena vote failed")
            return {ui.reveal: "⚠️ Your vote could not be saved (database error); please try again."}
        self.ctx.votes_stored += 1
        return arena_view(ui, replace(state, voted=choice, judged=state.judged | {state.pair.key}))

    def wire(self, store_limit: int) -> None:
        ui = self.ui
        draw = dict(concurrency_id="arena", concurrency_limit=4, show_progress="minimal")
        ui.tab.select(self.open, [ui.state], ui.outputs, api_visibility="private", **draw)
        ui.next.click(self.loading, None, [ui.vote_row, ui.reveal], queue=False, api_visibility="private").then(
            self.next_pair, [ui.state], ui.outputs, api_name="arena_next", **draw)
        for choice, button in ui.buttons.items():
            button.click(self.handler(choice), [ui.state], ui.outputs, api_name=f"arena_vote_{choice}",
                         concurrency_id="store", concurrency_limit=store_limit)
