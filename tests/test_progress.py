"""Progress in plain words: a turn's phase, elapsed time, speed and time left (ui.progress), and
a waiting visitor's place in line (ui.waiting)."""

from __future__ import annotations

import asyncio

import pytest

from refine.events import BaseDelta, BaseDone, CritiqueDelta, RevisionDelta, RoundDone, RoundStart, Timing, TurnDone
from ui.context import Controls
from ui.progress import about, clock, progress_text
from ui.view import TurnView
from ui.waiting import Place, WaitingLine, ordinal, waiting_text

CONTROLS = Controls(rounds=3, stop_early=True, temperature=0.0, max_new_tokens=200, cnr_max_new_tokens=300)


def view_at(events: list, started: float = 100.0) -> TurnView:
    view = TurnView(started=started)
    for event in events:
        view.apply(event)
    return view


def test_the_progress_line_names_the_phase_the_time_and_the_time_left() -> None:
    answering = view_at([BaseDelta("w ")] * 50)
    assert progress_text(answering, CONTROLS, now=101.0) == "✍️ Writing the answer · 0:01 so far"  # no speed yet
    # 50 tokens in 10 s: 5 tokens/s; the answer may take its 150 tokens left: 30 s, then the rounds
    assert progress_text(answering, CONTROLS, now=110.0) == (
        "✍️ Writing the answer · 0:10 so far · 5.0 tokens/s · the answer needs about 30 s more at most, "
        "then up to 3 round(s)")
    base = [*[BaseDelta("w ")] * 50, BaseDone(text="w " * 50, model="m")]
    critique = view_at([*base, RoundStart(1, "c"), *[CritiqueDelta(1, "c ")] * 10])
    # round 1 is expected to take a critique (40) + a revision as long as the answer (50) = 90
    # tokens: 80 left now, then 2 more rounds of 90 = 260 tokens at 60/20 = 3 tokens/s
    assert progress_text(critique, CONTROLS, now=120.0) == (
        "🔍 Critique 1 of 3 · 0:20 so far · 3.0 tokens/s · about 90 s left (less if it stops early)")
    revision = view_at([*base, RoundStart(1, "c"), *[CritiqueDelta(1, "c ")] * 10, RevisionDelta(1, "r")])
    assert progress_text(revision, CONTROLS, now=120.0).startswith("✏️ Revision 1 of 3 · 0:20 so far")
    # from round 2 on, a round is expected to take what round 1 took (30 tokens)
    done = RoundDone(round=1, model="c", critique="c", revision="r", status="complete", timing=Timing(tokens=30))
    second = view_at([*base, RoundStart(1, "c"), *[CritiqueDelta(1, "c ")] * 29, RevisionDelta(1, "r"), done,
                      RoundStart(2, "c")])
    assert progress_text(second, CONTROLS, now=126.0) == (
        "🔍 Critique 2 of 3 · 0:26 so far · 3.1 tokens/s · about 20 s left (less if it stops early)")  # 80 tokens, 60 left
    last = view_at([*base, RoundStart(1, "c"), *[CritiqueDelta(1, "c ")] * 30, done, RoundStart(2, "c"),
                    RoundDone(round=2, model="c", critique="c", revision="r", status="complete"), RoundStart(3, "c")])
    assert progress_text(last, CONTROLS, now=126.0).endswith("left")  # the last round: nothing can stop it early


def test_a_finished_turn_says_how_long_it_took() -> None:
    view = view_at([*[BaseDelta("w ")] * 40, BaseDone(text="w", model="m"),
                    TurnDone(final="w", rounds_completed=0, stop_reason="max_rounds")])
    view.ended = 120.0
    assert progress_text(view, CONTROLS) == "Done in 0:20 · 40 tokens at 2.0 tokens/s"
    view.stop_reason = "cancelled"
    assert progress_text(view, CONTROLS).startswith("Stopped after 0:20")


@pytest.mark.parametrize(("seconds", "said"), [(3, "under 10 s"), (44, "about 40 s"), (89, "about 90 s"),
                                               (130, "about 2 min"), (601, "about 10 min")])
def test_durations_read_as_people_say_them(seconds: float, said: str) -> None:
    assert about(seconds) == said


def test_clock_and_ordinals() -> None:
    assert (clock(5), clock(65), clock(3725)) == ("0:05", "1:05", "1:02:05")
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"]


def test_the_waiting_text_says_the_place_in_plain_words() -> None:
    assert waiting_text(Place(ahead=0, running=1), 1, None, 12) == (
        "⏳ Your message is 1st in line: 1 turn is being answered. Waiting 0:12.")
    assert waiting_text(Place(ahead=2, running=1), 1, 100.0, 75) == (
        "⏳ Your message is 3rd in line: 1 turn is being answered and 2 more wait before yours. Waiting 1:15; "
        "a turn takes about 2 min here lately, so yours starts within about 5 min.")


async def test_the_line_serves_turns_in_order_and_tells_each_its_place() -> None:
    line = WaitingLine(slots=1, max_waiting=2)
    first, second, third = line.join(), line.join(), line.join()
    assert third is None  # the line is full
    assert [p async for p in line.wait(first)] == []  # a free slot: no wait
    places: list[Place] = []

    async def wait_second() -> None:
        async for place in line.wait(second, tick=10):
            places.append(place)

    waiter = asyncio.create_task(wait_second())
    await asyncio.sleep(0.05)
    assert places == [Place(ahead=0, running=1)] and not waiter.done()
    line.release(30.0)  # the first turn ends: the second gets its slot at once (no waiting for the tick)
    await asyncio.wait_for(waiter, 1)
    assert line.running == 1 and line.typical() == 30.0
    left = line.join()
    line.leave(left)  # stopped while waiting: out of the line
    assert line.waiting == 0
