"""The app's parts without a server: the turn view, the background turn run (stopping, failures,
recording), session state, voting state and rendering."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from db import open_database
from db.recorder import EventRecorder
from refine.backends.base import GenerationParams, Message
from refine.events import BaseDelta, BaseDone, CritiqueDelta, RevisionDelta, RoundDone, RoundStart, TurnDone
from refine.loop import LoopConfig, refine_turn
from ui.chat_events import prompt_problem
from ui.context import Controls
from ui.render import chat_messages, error_text, panel_messages, reveal, stats_rows
from ui.session import ChatSession, VoteState, comparable_pairs, for_turn, show, vote_key, with_vote
from ui.turns import ActiveTurns, TurnRun
from ui.view import TurnView

WAIT = "<wait>"  # a backend piece that never arrives (until the stream is cancelled)


class ScriptedBackend:
    """A backend answering from a list of replies; WAIT blocks forever, an exception is raised."""

    model_id = "scripted"

    def __init__(self, *replies: list[str | BaseException]) -> None:
        self.replies = list(replies)

    async def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[str]:
        for piece in self.replies.pop(0):
            if isinstance(piece, BaseException):
                raise piece
            if piece == WAIT:
                await asyncio.Event().wait()
            yield piece

    async def aclose(self) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return open_database(f"sqlite:///{tmp_path / 'refine.db'}")


def _run(engine: Engine, base: ScriptedBackend, cnr: ScriptedBackend, rounds: int = 2) -> TurnRun:
    chat = [{"role": "user", "content": "Capital of France?"}]
    recorder = EventRecorder(engine, backend="local", messages=chat, model="scripted")
    return TurnRun(refine_turn(chat, base=base, cnr=cnr, config=LoopConfig(rounds=rounds)), recorder)


async def _until(check, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def _rows(engine: Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(r) for r in connection.exec_driver_sql(sql)]


async def test_a_turn_is_recorded_and_snapshots_end_when_it_is_written(engine: Engine) -> None:
    base = ScriptedBackend(["Lyon", " is it."])
    cnr = ScriptedBackend(["Critique: Wrong city.", "\nRevision: Paris."], ["Critique: Nothing to fix."])
    run = _run(engine, base, cnr)
    views = [v.stop_reason async for v in run.snapshots()]
    assert views[-1] == "nothing_to_fix" and run.view.finished and run.view.turn_id is not None
    assert run.view.versions() == {0: "Lyon is it.", 1: "Paris.", 2: "Paris."}
    assert _rows(engine, "SELECT round_index, status FROM rounds") == [(1, "complete"), (2, "complete")]


async def test_stopping_mid_round_stores_the_round_as_cancelled_with_its_partial_text(engine: Engine) -> None:
    run = _run(engine, ScriptedBackend(["An answer."]), ScriptedBackend(["Critique: Too", " short", WAIT]))
    await _until(lambda: run.view.running_round is not None and "short" in run.view.running_round.critique)
    await run.stop()
    assert run.view.finished and run.view.stop_reason == "cancelled"
    rounds = _rows(engine, "SELECT status, critique, stop_reason FROM rounds")
    assert rounds == [("cancelled", "Too short", "cancelled")]
    assert _rows(engine, "SELECT answer, error FROM turns") == [("An answer.", None)]


async def test_stopping_the_base_answer_stores_the_partial_answer_marked_cancelled(engine: Engine) -> None:
    run = _run(engine, ScriptedBackend(["Half an", WAIT]), ScriptedBackend())
    await _until(lambda: run.view.base_text == "Half an")
    await run.stop()
    assert _rows(engine, "SELECT answer, error FROM turns") == [("Half an", "cancelled: stopped by the user")]
    assert "Stopped by you" in panel_messages(run.view)[0]["content"]


async def test_an_unexpected_failure_ends_the_turn_with_a_failed_round(engine: Engine) -> None:
    run = _run(engine, ScriptedBackend(["An answer."]), ScriptedBackend(["Critique: x", RuntimeError("boom")]))
    async for _ in run.snapshots():
        pass
    assert run.view.stop_reason == "failed"
    assert _rows(engine, "SELECT status, error FROM rounds") == [("failed", "internal error (RuntimeError)")]


async def test_a_database_failure_is_shown_and_the_turn_still_ends(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'refine.db'}")
    run = _run(engine, ScriptedBackend(["An answer."]), ScriptedBackend(["Critique: Nothing to fix."]))
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE rounds")
    async for _ in run.snapshots():
        pass
    assert run.view.finished and run.view.save_error
    assert "could not be saved" in panel_messages(run.view)[-1]["content"]


async def test_active_turns_stop_before_start_and_only_the_own_run_is_forgotten(engine: Engine) -> None:
    turns = ActiveTurns()
    assert await turns.stop("s1") is None and turns.take_stop("s1") and not turns.take_stop("s1")
    run = _run(engine, ScriptedBackend(["x", WAIT]), ScriptedBackend())
    turns.begin("s1", run)
    other = _run(engine, ScriptedBackend(["y"]), ScriptedBackend(["Critique: Nothing to fix."]))
    turns.end("s1", other)
    assert turns.running("s1")
    assert await turns.stop("s1") is run and run.done
    turns.end("s1", run)
    assert not turns.running("s1")
    async for _ in other.snapshots():
        pass


def _view(*events) -> TurnView:
    view = TurnView()
    for event in events:
        view.apply(event)
    return view


def _done(k: int, revision: str, **kw) -> RoundDone:
    return RoundDone(round=k, model="m", critique=f"c{k}", revision=revision, status=kw.pop("status", "complete"), **kw)


def test_view_streams_critique_then_revision_and_renders_pending_then_done() -> None:
    view = _view(BaseDelta("Hi"), BaseDone("Hi", "base"), RoundStart(1, "m"), CritiqueDelta(1, "Too short"))
    critique = panel_messages(view)[1]
    assert critique["metadata"] == {"title": "Critique · round 1", "status": "pending"}
    assert critique["content"] == "Too short" and len(panel_messages(view)) == 2
    view.apply(RevisionDelta(1, "Hello there"))
    assert panel_messages(view)[1]["metadata"]["status"] == "done"
    assert panel_messages(view, show_changes=False)[2]["content"] == "**Revision 1**\n\nHello there"
    assert panel_messages(view)[2]["content"].startswith("**Revision 1** · changes to the original answer\n\n<div")


def test_failed_rounds_and_early_stops_say_why() -> None:
    failed = _view(BaseDone("Hi", "base"), RoundStart(1, "m"),
                   _done(1, "", status="failed", stop_reason="failed", error="unparseable output: no critique"),
                   TurnDone("Hi", 0, "failed"))
    texts = [m["content"] for m in panel_messages(failed)]
    assert "Round 1 failed:** the reviewer's output could not be read, so the answer was kept." in texts[2]
    details = panel_messages(failed)[3]
    assert details["content"] == "unparseable output: no critique" and details["metadata"]["status"] == "done"
    assert panel_messages(failed)[1]["metadata"]["title"] == "Critique · round 1 · failed"
    unchanged = _view(BaseDone("Hi", "base"), RoundStart(1, "m"),
                      _done(1, "Hi!", status="rejected", rejection="unchanged", stop_reason="unchanged"),
                      TurnDone("Hi", 0, "unchanged"))
    assert "the revision changed nothing" in panel_messages(unchanged)[-1]["content"]


def test_a_rejected_round_shows_why_and_its_text_collapsed_and_never_reaches_the_chat() -> None:
    view = _view(BaseDelta("Hi"), BaseDone("Hi", "base"), RoundStart(1, "m"), CritiqueDelta(1, "Wrong"),
                 RevisionDelta(1, "loop loop loop"))
    session = ChatSession()
    # while round 1 streams, the chat shows the base answer, not the revision being written
    assert chat_messages(session, "Q", view)[-1]["content"] == "Hi"
    view.apply(_done(1, "loop loop loop", status="rejected", rejection="looping", stop_reason="rejected",
                     error="“loop …” repeated 9 times in a row"))
    view.apply(TurnDone("Hi", 0, "rejected"))
    panel = panel_messages(view)
    texts = [m["content"] for m in panel]
    assert panel[1]["metadata"]["title"] == "Critique · round 1 · rejected"
    assert "Revision 1 was not used:** it repeated itself" in texts[2] and "repeated 9 times" in texts[2]
    assert panel[3]["metadata"]["title"] == "Rejected revision 1" and texts[3] == "loop loop loop"
    assert "its revision was not sound" in texts[-1]
    assert view.versions() == {0: "Hi"}  # nothing to vote on but the original
    assert chat_messages(session.after("Q", view, 1))[-1]["content"] == "Hi"


def test_the_chat_shows_an_accepted_revision_as_soon_as_it_is_accepted() -> None:
    view = _view(BaseDone("Draft", "base"), RoundStart(1, "m"), _done(1, "Better"), RoundStart(2, "m"),
                 CritiqueDelta(2, "More"), RevisionDelta(2, "Best so far"))
    assert chat_messages(ChatSession(), "Q", view)[-1]["content"] == "Better"


@pytest.mark.parametrize("kind, words", [("unavailable", "could not be reached"), ("timeout", "too long to answer"),
                                         ("overloaded", "overloaded"), ("context_too_long", "context window")])
def test_backend_errors_read_clearly(kind: str, words: str) -> None:
    assert words in error_text(kind, "details")


def test_chat_session_keeps_refined_answers_for_later_turns_and_skips_failed_ones() -> None:
    ok = _view(BaseDone("Draft", "base"), RoundStart(1, "m"), _done(1, "Better"), TurnDone("Better", 1, "max_rounds"))
    session = ChatSession().after("Q1", ok, conversation_id=7)
    failed = TurnView()
    failed.apply(BaseDelta("par"))
    for event in failed.interruption("cancelled", "stopped"):
        failed.apply(event)
    session = session.after("Q2", failed, 7)
    assert session.conversation("Q3") == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "Better"},
                                          {"role": "user", "content": "Q3"}]
    earlier, prompt = session.without_last()
    assert prompt == "Q2" and len(earlier.exchanges) == 1 and earlier.conversation_id == 7


def test_the_visitor_picks_the_version_later_turns_continue_from() -> None:
    from ui.continuation import choices, current

    view = TurnView()
    for event in [BaseDone(text="Original.", model="m"), RoundStart(1, "c"),
                  RoundDone(round=1, model="c", critique="c", revision="Better.", status="complete"),
                  RoundStart(2, "c"),
                  RoundDone(round=2, model="c", critique="fine", revision="Better.", status="complete",
                            nothing_to_fix=True),
                  TurnDone(final="Better.", rounds_completed=2, stop_reason="max_rounds")]:
        view.apply(event)
    session = ChatSession().after("Hi", view, conversation_id=1)
    # round 2 found nothing to fix: the same text is not offered twice; the latest is the default
    assert choices(session) == [("Original answer", "0"), ("Revision 1 (latest)", "1")]
    assert current(session) == "1" and session.exchanges[-1].answer == "Better."
    original = session.continue_from(0)
    assert original.exchanges[-1].shown == original.exchanges[-1].answer == "Original."
    assert original.conversation("Next")[1] == {"role": "assistant", "content": "Original."}
    assert current(original) == "0"
    assert original.continue_from(7) is original  # no such version: nothing changes


def test_votes_compare_distinct_versions_in_random_order_once_per_pair() -> None:
    view = _view(BaseDone("A", "base"), RoundStart(1, "m"), _done(1, "B"), RoundStart(2, "m"), _done(2, "b "))
    assert comparable_pairs(view.versions()) == [(0, 2), (0, 1)]  # 1 and 2 read the same
    state = for_turn(5, view)
    sides = {show(state, (0, 2), random.Random(seed)).left for seed in range(20)}
    assert sides == {0, 2}
    shown = show(state, (0, 2), random.Random(1))
    voted = with_vote(shown, "left")
    assert voted.voted == "left" and show(voted, (0, 1)).voted is None
    assert "revision 2 (final)" in reveal(voted)
    assert vote_key("h" * 64, 5, (0, 2)) == vote_key("h" * 64, 5, (0, 2)) != vote_key("h" * 64, 5, (0, 1))
    assert VoteState().pair is None


def test_prompt_and_control_checks() -> None:
    assert prompt_problem("") and prompt_problem(" \n") and prompt_problem("x" * 100_001)
    assert prompt_problem("x" * 100_000) is None
    assert Controls(0, True, 0.0, 10, 10).check() and Controls(3, True, 2.5, 10, 10).check()
    assert Controls(3, True, 0.0, 0, 10).check() and Controls(3, True, 0.7, 512, 768).check() is None


def test_stats_rows_count_both_bad_votes_too() -> None:
    from refine.winrate import win_rate

    rate = win_rate(1, [2], [1], [1], [1])
    assert stats_rows([rate])[0][0] == 1 and stats_rows([rate])[0][-2] == 5


def test_a_round_with_too_few_votes_says_so_instead_of_a_confidence_interval() -> None:
    from refine.winrate import MIN_VOTES, vote_ci, win_rate

    few = vote_ci(win_rate(1, [0, 0], [0, 0], [1, 1]))  # 2 votes once gave "0.0% – 0.0%"
    assert stats_rows([few])[0][1:3] == ["0.0%", f"too few votes (2 of {MIN_VOTES})"]
    enough = vote_ci(win_rate(1, [1, 0] * 5, [0] * 10, [0, 1] * 5))
    assert "–" in stats_rows([enough])[0][2] and "too few" not in stats_rows([enough])[0][2]


async def test_snapshots_batch_more_tokens_but_show_each_new_part_at_once(engine: Engine) -> None:
    class Paced(ScriptedBackend):
        async def stream(self, messages: list[Message], params: GenerationParams) -> AsyncIterator[str]:
            async for piece in super().stream(messages, params):
                await asyncio.sleep(0.005)
                yield piece

    base = Paced([f" w{i}" for i in range(60)])
    cnr = Paced(["Critique:", " Too", " short", "\nRevision:", " Longer", " answer"])
    run = _run(engine, base, cnr, rounds=1)
    seen = []
    async for view in run.snapshots(lambda: 0.05):
        current = view.rounds[-1] if view.rounds else None
        seen.append((len(view.base_text.split()), current.critique if current else "", current and current.revision))
    assert len(seen) < 25  # 60 tokens in ~0.3 s: a few batches, not one update per token
    assert ("Too" in [c for _, c, _ in seen]) and ("Longer" in [r for _, _, r in seen])  # first tokens at once


def test_the_update_rate_is_shared_by_running_turns() -> None:
    turns = ActiveTurns()
    assert turns.interval() == ActiveTurns.MIN_INTERVAL_S
    turns._runs = {str(i): None for i in range(40)}  # type: ignore[misc]
    assert turns.interval() == 40 / ActiveTurns.UPDATES_PER_S
