"""The refinement panel's revisions as changes, and the `edits` CnR format in the app: the view
folds edits (each replacing the revision), the panel marks insertions and deletions against
the version a round revised (escaped: model text is never markup), lists a round's edits,
gives clean text when Show changes is off, and a turn in the edits format is stored with its
format and edits."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
from sqlalchemy import Engine

from db import open_database
from db.recorder import EventRecorder
from refine.backends.base import GenerationParams, Message
from refine.events import BaseDone, CritiqueDelta, EditApplied, RevisionDelta, RoundDone, RoundStart, TurnDone
from refine.loop import LoopConfig, refine_turn
from tests.test_app_units import ScriptedBackend, _rows
from ui.chat_events import ChatEvents
from ui.diff import diff_html, diff_segments, edits_html
from ui.render import panel_messages
from ui.safety import exact
from ui.session import ChatSession
from ui.turns import ActiveTurns, TurnRun
from ui.view import TurnView

BASE = "Paris is in Germany. It is big."
SCRIPT = "<script>alert(1)</script>"
FIX = {"kind": "replace", "span": "Germany", "text": f"France {SCRIPT}", "applied": True}
LOST = {"kind": "insert_after", "span": "Berlin <b>", "text": "x", "applied": False, "reason": "not found"}
FIXED = f"Paris is in France {SCRIPT}. It is big."


def _view(*events: Any) -> TurnView:
    view = TurnView()
    for event in events:
        view.apply(event)
    return view


def _tags(html: str) -> set[str]:
    return {m.lower() for m in re.findall(r"</?([A-Za-z][\w-]*)", html)}


def _revision_message(panel: list[dict[str, Any]], k: int) -> str:
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in panel]
    return next(text for text in texts if text.startswith(f"**Revision {k}**"))


def test_the_view_folds_edits_into_the_revision_and_resets_them_per_candidate() -> None:
    view = _view(BaseDone(BASE, "base"), RoundStart(1, "m"), CritiqueDelta(1, "Wrong country."),
                 EditApplied(1, FIX, FIXED))
    r = view.rounds[-1]
    assert (r.phase, r.revision, r.edits, r.cnr_format) == ("revision", FIXED, [FIX], "edits-v1")
    view.apply(EditApplied(1, LOST, FIXED))
    assert r.revision == FIXED and r.edits == [FIX, LOST]  # replaced by the event's revision, not appended to
    view.apply(CritiqueDelta(1, "Say more.", candidate=1))  # the next candidate starts afresh
    assert (r.candidate, r.critique, r.revision, r.edits) == (1, "Say more.", "", [])
    more = {"kind": "append", "span": "", "text": "It is the capital.", "applied": True}
    view.apply(EditApplied(1, more, BASE + "\n\nIt is the capital.", candidate=1))
    assert r.edits == [more] and r.revision.endswith("capital.")
    view.apply(RoundDone(round=1, model="m", critique="Wrong country.", revision=FIXED, status="complete",
                         cnr_format="edits-v1", edits=(FIX, LOST)))  # the chosen candidate's
    assert (r.phase, r.edits, r.cnr_format, r.revision) == ("complete", [FIX, LOST], "edits-v1", FIXED)


def test_a_stopped_edits_round_is_reported_with_its_edits_and_format() -> None:
    view = TurnView(cnr_format="edits-v1")
    for event in (BaseDone(BASE, "base"), RoundStart(1, "m"), CritiqueDelta(1, "Wrong."), EditApplied(1, FIX, FIXED)):
        view.apply(event)
    done = view.interruption("cancelled", "stopped")[0]
    assert isinstance(done, RoundDone) and done.status == "cancelled"
    assert (done.revision, done.edits, done.cnr_format) == (FIXED, (FIX,), "edits-v1")
    early = TurnView(cnr_format="edits-v1")  # cut off in the critique: the turn's format
    for event in (BaseDone(BASE, "base"), RoundStart(1, "m"), CritiqueDelta(1, "Wro")):
        early.apply(event)
    assert early.interruption("cancelled", "stopped")[0].cnr_format == "edits-v1"
    rewrite = _view(BaseDone(BASE, "base"), RoundStart(1, "m"), CritiqueDelta(1, "W"), RevisionDelta(1, "Par"))
    assert rewrite.interruption("error", "boom")[1].cnr_format == "cnr-v1"


def test_the_diff_marks_insertions_and_deletions_and_escapes_model_text() -> None:
    assert diff_segments("a cat sat on the mat.", "a dog ran on the mat!") == [
        (False, "a ", "a "), (True, "cat sat", "dog ran"), (False, " on the mat", " on the mat"), (True, ".", "!")]
    html = diff_html(BASE, FIXED + "\n\nNew <img src=x onerror=alert(2)> line & more")
    assert html.startswith('<div class="refine-diff">') and "\n" not in html  # one Markdown HTML block
    assert "<del>Germany</del>" in html
    assert f"<ins>France {SCRIPT.replace('<', '&lt;').replace('>', '&gt;')}</ins>" in html
    assert "<ins><br><br>New &lt;img src=x onerror=alert(2)&gt; line &amp; more</ins>" in html
    assert _tags(html) <= {"div", "ins", "del", "br"}  # the only markup is the diff's own
    assert diff_html("same text", "same text") == '<div class="refine-diff">same text</div>'
    # a rewrite still streaming: the old text after its end is not shown as deleted
    streaming = diff_html(BASE, "Paris is in Fra", open_end=True)
    assert streaming == '<div class="refine-diff">Paris is in <ins>Fra</ins></div>'


def test_the_panel_lists_edits_and_shows_revisions_as_changes_or_clean() -> None:
    view = _view(BaseDone(BASE, "base"), RoundStart(1, "m"), CritiqueDelta(1, "Wrong country."),
                 RoundDone(round=1, model="m", critique="Wrong country.", revision=FIXED, status="complete",
                           cnr_format="edits-v1", edits=(FIX, LOST)),
                 TurnDone(FIXED, 1, "max_rounds"))
    panel = panel_messages(view)
    titles = [(m.get("metadata") or {}).get("title", m["content"][:20]) for m in panel]
    assert titles[1] == "Critique · round 1"
    assert panel[2]["content"].startswith("**Edits · round 1** (1 applied, 1 dropped)\n\n<ul")
    edits = panel[2]["content"]
    assert "replace «" in edits and "Germany" in edits and "→ «" in edits and "France &lt;script&gt;" in edits
    assert '<li class="refine-edit-dropped"><s>insert after «' in edits and "Berlin &lt;b&gt;" in edits
    assert "dropped: not found" in edits
    revision = _revision_message(panel, 1)
    assert revision.startswith("**Revision 1** · changes to the original answer\n\n<div")
    assert "<del>Germany</del><ins>France &lt;script&gt;" in revision
    assert "<script" not in "".join(m["content"] for m in panel[2:])  # only ever as text
    clean = panel_messages(view, show_changes=False)
    assert _revision_message(clean, 1) == f"**Revision 1**\n\n{FIXED}"  # the toggle: the clean text
    assert clean[2] == panel[2]  # the edits stay listed either way


def test_each_revision_is_compared_with_the_version_it_revised() -> None:
    done = dict(model="m", critique="c", status="complete")
    view = _view(BaseDone("A b c.", "base"), RoundStart(1, "m"), RoundDone(round=1, revision="A B c.", **done),
                 RoundStart(2, "m"),
                 RoundDone(round=2, revision="A B c", **{**done, "status": "rejected"}, rejection="collapsed"),
                 RoundStart(3, "m"), CritiqueDelta(3, "Period."), RevisionDelta(3, "A B c!"))
    panel = panel_messages(view)
    assert "<del>b</del><ins>B</ins>" in _revision_message(panel, 1)
    third = _revision_message(panel, 3)  # against revision 1: the rejected round 2 changed nothing
    assert "changes to revision 1" in third and third.endswith("A B c<ins>!</ins></div>")
    rejected = next(m for m in panel if (m.get("metadata") or {}).get("title") == "Rejected revision 2")
    assert rejected["content"] == "A B c"  # rejected rounds stay as they were: collapsed, clean


class _Run:
    """A running turn as the Show changes handler sees it."""

    def __init__(self, done: bool = False) -> None:
        self.done, self.shown = done, None
        self.view = _view(BaseDone(BASE, "base"))

    def show(self, changes: bool) -> None:
        self.shown = changes


def test_show_changes_renders_the_last_turn_again_or_tells_the_running_one() -> None:
    turns = ActiveTurns()
    events = ChatEvents(SimpleNamespace(turns=turns), SimpleNamespace(chatbot="chat", panel="panel"))  # type: ignore[arg-type]
    request = SimpleNamespace(session_hash="s1")
    view = _view(BaseDone(BASE, "base"), RoundStart(1, "m"),
                 RoundDone(round=1, model="m", critique="c", revision=FIXED, status="complete"))
    session = ChatSession().after("Q", view, 1)
    assert events.show_changes(False, session, request) == {"panel": exact(panel_messages(view, show_changes=False))}
    assert "<del>Germany</del>" in _revision_message(events.show_changes(True, session, request)["panel"], 1)
    assert isinstance(events.show_changes(True, ChatSession(), request), type(gr.skip()))  # no turn yet
    assert ChatSession().after("Q2", view, 1).after("Q3", view, 1).exchanges[0].view is None  # the last one only
    run = _Run()
    turns.begin("s1", run)  # type: ignore[arg-type]
    assert isinstance(events.show_changes(False, session, request), type(gr.skip()))  # its stream re-renders
    assert run.shown is False


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return open_database(f"sqlite:///{tmp_path / 'refine.db'}")


async def test_an_edits_turn_streams_its_edits_and_is_stored_with_them(engine: Engine) -> None:
    chat = [{"role": "user", "content": "Where is Paris?"}]
    class Paced(ScriptedBackend):  # a piece at a time, so each edit can show before the next
        async def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[str]:
            async for piece in super().stream(messages, params):
                await asyncio.sleep(0.02)
                yield piece

    base = ScriptedBackend(["Paris is in ", "Germany. It is big."])
    cnr = Paced(["Critique: Wrong country.\n", "Replace: Germany\nWith: France\n",
                 "After: Berlin\nInsert: too\n", "Append: It is the capital."])
    recorder = EventRecorder(engine, backend="local", messages=chat, model="scripted")
    config = LoopConfig(rounds=1, cnr_format="edits")
    run = TurnRun(refine_turn(chat, base=base, cnr=cnr, config=config), recorder, cnr_format="edits-v1")
    seen = []
    async for view in run.snapshots():
        if view.rounds:
            seen.append((view.rounds[-1].revision, len(view.rounds[-1].edits)))
    final = "Paris is in France. It is big.\n\nIt is the capital."
    assert ("Paris is in France. It is big.", 1) in seen  # the first edit showed before the last
    assert run.view.rounds[-1].phase == "complete" and run.view.last_good() == final
    [(fmt, edits)] = _rows(engine, "SELECT cnr_format, edits FROM rounds")
    assert fmt == "edits-v1" and '"reason": "not found"' in edits and '"text": "France"' in edits
    panel = panel_messages(run.view)
    assert "<del>Germany</del><ins>France</ins>" in _revision_message(panel, 1)
    assert "(2 applied, 1 dropped)" in panel[2]["content"]
    assert edits_html([]) == '<ul class="refine-edits"></ul>'
