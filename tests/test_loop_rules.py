"""Stop rules of the refinement loop, driven by scripted CnR outputs from a stand-in
OpenAI-compatible server (real HTTP over a real socket)."""

from __future__ import annotations

import pytest

from refine.backends.base import GenerationParams
from refine.backends.openai_compat import OpenAICompatBackend
from refine.events import CritiqueDelta, ErrorEvent, RevisionDelta, RoundDone, TurnDone
from refine.loop import LoopConfig, refine_turn
from tests.standin_servers import Cut, StandinServer, openai_chunks, sse_event, sse_reply

CHAT = [{"role": "user", "content": "What is 3 times 4?"}]
PATH = "/v1/chat/completions"


def tokens(text: str) -> list[str]:
    """Split like a tokenizer would: a few characters per chunk."""
    return [text[i:i + 3] for i in range(0, len(text), 3)]


def cnr_reply(text: str):
    return sse_reply(openai_chunks(tokens(text)))


async def run(server: StandinServer, rounds: int = 3, stop_early: bool = True) -> list:
    backend = OpenAICompatBackend(server.url, model="cnr", timeout=5)
    config = LoopConfig(rounds=rounds, stop_early=stop_early, cnr_params=GenerationParams(max_new_tokens=64))
    try:
        return [e async for e in refine_turn(CHAT, cnr=backend, config=config, response="3 times 4 is 7.")]
    finally:
        await backend.aclose()


def rounds_of(events: list) -> list[RoundDone]:
    return [e for e in events if isinstance(e, RoundDone)]


async def test_each_round_revises_the_previous_revision_until_max_rounds() -> None:
    with StandinServer() as server:
        server.on("POST", PATH,
                  cnr_reply("Critique: 3 × 4 is 12, not 7.\nRevision: 3 times 4 is 12."),
                  cnr_reply("Critique: Show the working.\nRevision: 3 × 4 = 12."),
                  cnr_reply("Critique: Add a sentence.\nRevision: 3 × 4 = 12, since 4 + 4 + 4 = 12."))
        events = await run(server, rounds=3)
        bodies = [r.json for r in server.requests_to(PATH)]
    done = rounds_of(events)
    assert [r.status for r in done] == ["complete"] * 3
    assert [r.stop_reason for r in done] == [None, None, "max_rounds"]
    assert done[0].critique == "3 × 4 is 12, not 7." and done[0].revision == "3 times 4 is 12."
    # round k is asked to improve round k-1's revision
    assert "Response to improve:\n3 times 4 is 7." in bodies[0]["messages"][-1]["content"]
    assert "Response to improve:\n3 times 4 is 12." in bodies[1]["messages"][-1]["content"]
    assert "Response to improve:\n3 × 4 = 12." in bodies[2]["messages"][-1]["content"]
    # critique deltas of a round all arrive before its revision deltas
    for r in done:
        kinds = [type(e) for e in events if isinstance(e, (CritiqueDelta, RevisionDelta)) and e.round == r.round]
        assert kinds == sorted(kinds, key=[CritiqueDelta, RevisionDelta].index)
        assert "".join(e.text for e in events if isinstance(e, RevisionDelta) and e.round == r.round).strip() == r.revision
    assert events[-1] == TurnDone(final="3 × 4 = 12, since 4 + 4 + 4 = 12.", rounds_completed=3, stop_reason="max_rounds")


async def test_stops_when_nothing_to_fix() -> None:
    with StandinServer() as server:
        server.on("POST", PATH, cnr_reply("Critique: Wrong product.\nRevision: 3 times 4 is 12."),
                  cnr_reply("Critique: Nothing to fix."))
        events = await run(server)
        assert len(server.requests_to(PATH)) == 2
    done = rounds_of(events)
    assert done[1].nothing_to_fix and done[1].revision == "3 times 4 is 12." and done[1].stop_reason == "nothing_to_fix"
    assert events[-1] == TurnDone(final="3 times 4 is 12.", rounds_completed=2, stop_reason="nothing_to_fix")


async def test_stops_when_the_revision_is_unchanged_after_normalisation() -> None:
    with StandinServer() as server:
        server.on("POST", PATH, cnr_reply("Critique: Wrong.\nRevision: 3 times 4 is 12."),
                  cnr_reply("Critique: Fine wording.\nRevision:  3 Times 4 is   12.\n"))
        events = await run(server)
    last = rounds_of(events)[-1]
    assert last.stop_reason == "unchanged"
    # a copy is not a revision: the round is rejected as unchanged and round 1's answer stands
    assert (last.status, last.rejection) == ("rejected", "unchanged")
    assert events[-1] == TurnDone(final="3 times 4 is 12.", rounds_completed=1, stop_reason="unchanged")


async def test_without_stop_early_every_round_runs() -> None:
    with StandinServer() as server:
        server.on("POST", PATH, cnr_reply("Critique: Nothing to fix."))
        events = await run(server, rounds=3, stop_early=False)
        assert len(server.requests_to(PATH)) == 3
    assert [r.stop_reason for r in rounds_of(events)] == [None, None, "max_rounds"]
    assert events[-1] == TurnDone(final="3 times 4 is 7.", rounds_completed=3, stop_reason="max_rounds")


async def test_unparseable_round_keeps_the_previous_answer() -> None:
    with StandinServer() as server:
        server.on("POST", PATH, cnr_reply("Critique: Wrong.\nRevision: 12."), cnr_reply("I think it is fine"))
        events = await run(server)
    done = rounds_of(events)
    assert done[1].status == "failed" and "no 'Revision:' part" in done[1].error
    assert events[-1] == TurnDone(final="12.", rounds_completed=1, stop_reason="failed")


async def test_backend_breaking_mid_round_fails_the_round_with_its_partial_text() -> None:
    chunks = openai_chunks(tokens("Critique: Wrong.\nRevision: 3 times 4"))[:-3]
    with StandinServer() as server:
        server.on("POST", PATH, sse_reply([*chunks, Cut()]))
        events = await run(server)
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.stage == "round" and error.round == 1 and error.kind == "stream_broken"
    done = rounds_of(events)
    assert len(done) == 1 and done[0].status == "failed" and done[0].critique == "Wrong."
    assert done[0].revision == "3 time" and done[0].error  # the last token never arrived
    assert events[-1] == TurnDone(final="3 times 4 is 7.", rounds_completed=0, stop_reason="failed")


@pytest.mark.parametrize("status", [503])
async def test_base_failure_ends_the_turn_with_an_error(status: int) -> None:
    with StandinServer() as server:
        server.on("POST", PATH, sse_reply([sse_event({"error": {"message": "down", "http_status_code": status}})], status=status))
        backend = OpenAICompatBackend(server.url, timeout=5)
        events = [e async for e in refine_turn(CHAT, base=backend, cnr=backend, config=LoopConfig(rounds=1))]
        await backend.aclose()
    assert [e.type for e in events] == ["error", "turn_done"]
    assert events[0].stage == "base" and events[-1].stop_reason == "error"
