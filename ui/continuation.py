"""Which version the conversation continues from: after a turn, the visitor picks the original
answer or any accepted revision (by default the latest accepted); the chat shows the chosen one
and the next turn's history carries it (stored with that turn, in `turns.messages`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from refine.cnr_format import normalize
from ui.layout import Layout
from ui.render import chat_messages
from ui.safety import exact
from ui.session import ChatSession

Update = dict[Any, Any]


def choices(session: ChatSession) -> list[tuple[str, str]]:
    """(label, value) of each distinct version of the last turn's answer, oldest first: the
    original answer and the accepted revisions that changed it (a revision with the same text
    as an earlier version is that version)."""
    last = session.exchanges[-1] if session.exchanges else None
    if last is None or last.answer is None or last.view is None:
        return []
    found: list[tuple[int, str]] = []
    for index, text in sorted(last.view.versions().items()):
        if all(normalize(text) != normalize(earlier) for _, earlier in found):
            found.append((index, text))
    latest = found[-1][0] if found else None
    return [("Original answer" if index == 0 else f"Revision {index}" + (" (latest)" if index == latest else ""),
             str(index)) for index, _ in found]


def current(session: ChatSession) -> str | None:
    """The value of the version the conversation continues from now."""
    last = session.exchanges[-1] if session.exchanges else None
    options = choices(session)
    if last is None or not options:
        return None
    if last.chosen is not None:
        return str(last.chosen)
    versions = last.view.versions() if last.view is not None else {}
    same = [value for _, value in options if normalize(versions[int(value)]) == normalize(last.answer or "")]
    return same[-1] if same else options[-1][1]


def continue_area(ui: Layout, session: ChatSession) -> Update:
    """The choice of version after a turn: shown when the last turn has two versions or more."""
    options = choices(session)
    if len(options) < 2:
        return {ui.continue_from: gr.Dropdown(visible=False, choices=[], value=None)}
    return {ui.continue_from: gr.Dropdown(visible=True, choices=options, value=current(session))}


class ContinueEvents:
    """The handler of the version choice."""

    def __init__(self, ui: Layout) -> None:
        self.ui = ui

    def choose(self, value: str | None, session: ChatSession) -> Update:
        """Continue from the chosen version: the chat shows it, later turns see it."""
        try:
            index = int(value or "")
        except ValueError:
            return gr.skip()
        chosen = session.continue_from(index)
        if chosen is session:
            return gr.skip()
        return {self.ui.chatbot: exact(chat_messages(chosen)), self.ui.chat_state: chosen}

    def wire(self) -> None:
        ui = self.ui
        ui.continue_from.input(self.choose, [ui.continue_from, ui.chat_state], [ui.chatbot, ui.chat_state],
                               queue=False, api_name="continue_from")
