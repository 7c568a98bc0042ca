"""Side-by-side voting on the last turn: which comparison is on screen, the vote buttons, and
storing a vote (one per comparison per session, idempotent). Stored as not blind: the
Refinement panel above names the versions (the Arena tab, ui/arena.py, asks for blind votes)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gradio as gr
from sqlalchemy.exc import SQLAlchemyError

from db.errors import InvalidInput
from db.store import record_vote
from ui.context import AppContext
from ui.layout import Layout
from ui.render import pair_label, pair_value, parse_pair, reveal
from ui.safety import exact
from ui.session import VoteState, comparable_pairs, show, vote_key, with_vote

log = logging.getLogger(__name__)


def start(state: VoteState) -> VoteState:
    """Show the default comparison of a finished turn: the original against the latest revision."""
    pairs = comparable_pairs(state.versions)
    return show(state, pairs[0]) if pairs else state


def side(text: str) -> list[dict[str, Any]]:
    """What one side of the comparison shows: the version's text as it is."""
    return exact([{"role": "assistant", "content": text}])


def vote_area(ui: Layout, state: VoteState) -> dict[Any, Any]:
    """Updates of the voting components for `state` (hidden when there is nothing to compare).
    Few component updates on purpose: each costs Gradio a component rebuild per session."""
    pairs = comparable_pairs(state.versions)
    if state.turn_id is None or state.pair is None or not pairs:
        return {ui.vote_box: gr.Column(visible=False)}
    assert state.left is not None and state.right is not None
    open_ = state.voted is None
    return {
        ui.vote_box: gr.Column(visible=True),
        ui.pair: gr.Dropdown(choices=[(pair_label(p, state.versions), pair_value(p)) for p in pairs],
                             value=pair_value(state.pair)),
        ui.left: side(state.versions[state.left]),
        ui.right: side(state.versions[state.right]),
        ui.vote_row: gr.Row(visible=open_),
        ui.reveal: "" if open_ else reveal(state),
    }


class VoteEvents:
    """Handlers of the voting components."""

    def __init__(self, ctx: AppContext, ui: Layout) -> None:
        self.ctx, self.ui = ctx, ui

    def select_pair(self, value: str | None, state: VoteState) -> dict[Any, Any]:
        """Show another comparison (sides drawn again)."""
        try:
            pair = parse_pair(value or "")
        except ValueError:
            return gr.skip()
        if pair not in comparable_pairs(state.versions):
            return gr.skip()
        state = show(state, pair)
        return {**vote_area(self.ui, state), self.ui.vote_state: state}

    def handler(self, choice: str) -> Callable[..., dict[Any, Any]]:
        """The click handler of one vote button."""

        def vote(state: VoteState, request: gr.Request) -> dict[Any, Any]:
            refused = self.ctx.limits.request_refused(request)
            if refused:
                return {self.ui.reveal: refused}
            return self.vote(choice, state, request.session_hash or "")

        vote.__name__ = f"vote_{choice}"
        return vote

    def vote(self, choice: str, state: VoteState, session: str) -> dict[Any, Any]:
        """Store a vote on the comparison on screen, then reveal which version was where."""
        ui = self.ui
        if state.turn_id is None or state.pair is None or state.left is None or state.right is None:
            return {ui.reveal: "There is nothing to vote on yet."}
        if state.voted is not None:
            return vote_area(ui, state)
        voter = self.ctx.voter(session)
        try:
            # Not blind: the Refinement panel above names the versions (the Arena's votes are blind).
            record_vote(self.ctx.engine, turn_id=state.turn_id, left_round=state.left, right_round=state.right,
                        choice=choice, key=vote_key(voter, state.turn_id, state.pair), voter_hash=voter, blind=False)
        except InvalidInput as exc:
            return {ui.reveal: f"⚠️ Your vote was not saved: {exc}"}
        except SQLAlchemyError:
            log.exception("storing a vote failed")
            return {ui.reveal: "⚠️ Your vote could not be saved (database error); please try again."}
        self.ctx.votes_stored += 1
        state = with_vote(state, choice)
        return {**vote_area(ui, state), ui.vote_state: state}

    def wire(self, store_limit: int) -> None:
        ui = self.ui
        ui.pair.input(self.select_pair, [ui.pair, ui.vote_state], [*ui.vote_area, ui.vote_state], queue=False,
                      api_visibility="private")
        for choice, button in ui.vote_buttons.items():
            button.click(self.handler(choice), [ui.vote_state], [*ui.vote_area, ui.vote_state],
                         api_name=f"vote_{choice}", concurrency_id="store", concurrency_limit=store_limit)
