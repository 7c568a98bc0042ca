"""The failing inputs of ../shared/cases (copied into tests/data/cases), replayed through the real
loop and the real OpenAI-compatible and TGI clients against stand-in servers on a real socket:
truncated revisions, reasoning-only answers, think blocks, runaway output, Markdown labels; and
the selector and candidates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from refine.backends.base import GenerationParams
from refine.backends.openai_compat import OpenAICompatBackend
from refine.backends.tgi import TGIBackend
from refine.cnr_format import CNR_STOP_STRINGS
from refine.events import BaseDone, ErrorEvent, Judging, RevisionDelta, RoundDone, ThinkingDelta, TurnDone
from refine.loop import LoopConfig, refine_turn
from refine.selection import JudgeSelector
from tests.standin_servers import Recorded, Reply, StandinServer, openai_chunks, sse_reply, tgi_events, tgi_server

CASES = Path(__file__).parent / "data" / "cases"
CHAT = [{"role": "user", "content": "What is the capital of Australia?"}]
PATH = "/v1/chat/completions"
CONFIG = LoopConfig(rounds=2, cnr_params=GenerationParams(max_new_tokens=64))
TOKENIZER = str(Path(__file__).parent / "data" / "tokenizer_refuses_system")


def body(case: str, name: str) -> bytes:
    return (CASES / case / name).read_bytes()


class CaseServer(StandinServer):
    """Answers CnR requests with one recorded body and other requests with another."""

    def __init__(self, base: bytes = b"", cnr: bytes = b"") -> None:
        super().__init__()
        self.bodies = {"base": base, "cnr": cnr}

    def next_reply(self, request: Recorded) -> Reply:
        if request.path != PATH:
            return super().next_reply(request)
        self.requests.append(request)
        last = request.json["messages"][-1]["content"]
        kind = "cnr" if "Response to improve:" in last else "base"
        return Reply(200, {"Content-Type": "text/event-stream"}, steps=[self.bodies[kind]])


async def run(server: StandinServer, *, response: str | None = None, config: LoopConfig = CONFIG, **kw) -> list:
    backend = OpenAICompatBackend(server.url, timeout=5)
    try:
        return [e async for e in refine_turn(CHAT, cnr=backend, base=None if response else backend, config=config,
                                             response=response, **kw)]
    finally:
        await backend.aclose()


def rounds_of(events: list) -> list[RoundDone]:
    return [e for e in events if isinstance(e, RoundDone)]


async def test_a_revision_cut_at_the_token_limit_never_becomes_the_answer() -> None:
    with CaseServer(cnr=body("truncated-revision", "cnr.sse")) as server:
        events = await run(server, response="The capital of Australia is Sydney.")
    [done] = rounds_of(events)
    assert (done.status, done.rejection, done.finish_reason) == ("rejected", "cut_off", "length")
    assert done.revision.endswith("Canb")  # stored, shown collapsed, never the answer
    assert events[-1] == TurnDone(final="The capital of Australia is Sydney.", rounds_completed=0,
                                  stop_reason="rejected")


async def test_a_revision_cut_at_the_token_limit_on_tgi_too() -> None:
    cut = tgi_events(["Critique:", " Sydney is wrong.", "\nRevision:", " The capital is Canb"], eos=None)
    with tgi_server() as server:
        server.on("POST", "/generate_stream", sse_reply(cut))
        backend = TGIBackend(server.url, tokenizer=TOKENIZER, timeout=5)
        try:
            events = [e async for e in refine_turn(CHAT, cnr=backend, config=CONFIG, response="Sydney.")]
        finally:
            await backend.aclose()
        sent = server.requests_to("/generate_stream")[0].json["parameters"]
    [done] = rounds_of(events)
    assert (done.status, done.rejection, done.finish_reason) == ("rejected", "cut_off", "length")
    assert events[-1].final == "Sydney."
    assert set(sent["stop"]) <= set(CNR_STOP_STRINGS) and sent["stop"]


async def test_an_answer_of_reasoning_only_is_an_error_that_says_why() -> None:
    with CaseServer(base=body("reasoning-only-answer", "base.sse"), cnr=body("reasoning-only-answer", "cnr.sse")) as server:
        events = await run(server)
        cnr_requests = [r for r in server.requests_to(PATH) if "Response to improve:" in r.json["messages"][-1]["content"]]
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].stage == "base" and errors[0].kind == "no_answer"
    assert "token budget" in errors[0].message and "reasoning" in errors[0].message
    assert any(isinstance(e, ThinkingDelta) for e in events)
    assert not any(isinstance(e, BaseDone) for e in events)  # nothing to store or revise as an answer
    assert cnr_requests == [] and events[-1].stop_reason == "error"


async def test_a_think_block_is_kept_apart_from_the_answer() -> None:
    with CaseServer(base=body("think-block-in-answer", "base.sse"), cnr=body("think-block-in-answer", "cnr_nothing.sse")) as server:
        events = await run(server)
        cnr_request = [r for r in server.requests_to(PATH) if "Response to improve:" in r.json["messages"][-1]["content"]][0]
    base = next(e for e in events if isinstance(e, BaseDone))
    assert base.text == "The capital of Australia is Canberra."
    assert base.thinking == "The user wants the capital. Maybe Sydney?"
    prompt = cnr_request.json["messages"][-1]["content"]
    assert "Response to improve:\nThe capital of Australia is Canberra." in prompt and "<think>" not in prompt
    assert events[-1] == TurnDone(final="The capital of Australia is Canberra.", rounds_completed=1,
                                  stop_reason="nothing_to_fix")


async def test_runaway_output_ends_the_revision_and_stop_strings_are_sent() -> None:
    with CaseServer(cnr=body("runaway-cnr-output", "cnr.sse")) as server:
        events = await run(server, response="The capital of Australia is Sydney.")
        sent = server.requests_to(PATH)[0].json
    done = rounds_of(events)[0]
    assert (done.status, done.revision) == ("complete", "The capital of Australia is Canberra.")
    # the stand-in ignores `stop`, as some servers do: the client cut the stream at the stop string
    assert done.raw == "Critique: Sydney is wrong.\nRevision: The capital of Australia is Canberra."
    streamed = "".join(e.text for e in events if isinstance(e, RevisionDelta) and e.round == 1)
    assert "Critique" not in streamed and "<|im_start|>" not in streamed
    assert sent["stop"] == list(CNR_STOP_STRINGS)


async def test_markdown_labels_are_read_as_labels() -> None:
    with CaseServer(cnr=body("markdown-labels", "cnr_bold.sse")) as server:
        events = await run(server, response="The capital of Australia is Sydney.")
    done = rounds_of(events)[0]
    assert (done.status, done.critique, done.revision) == ("complete", "Sydney is wrong.",
                                                            "The capital of Australia is Canberra.")


async def test_a_looping_revision_is_stopped_early_and_rejected() -> None:
    loop = "Critique: It is wrong.\nRevision: " + "The output is not correct because it is wrong. " * 200
    pieces = [loop[i:i + 4] for i in range(0, len(loop), 4)]
    with StandinServer() as server:
        server.on("POST", PATH, sse_reply(openai_chunks(pieces)))
        events = await run(server, response="The capital of Australia is Sydney.")
    done = rounds_of(events)[0]
    assert (done.status, done.rejection) == ("rejected", "looping")
    assert done.timing.tokens < len(pieces) / 3  # the loop was seen long before the stream ended
    assert events[-1].final == "The capital of Australia is Sydney."


async def test_a_looping_base_answer_is_stopped_early() -> None:
    answer = "Paris is the capital of France and a big city. " * 100
    pieces = [answer[i:i + 4] for i in range(0, len(answer), 4)]
    with StandinServer() as server:
        server.on("POST", PATH, sse_reply(openai_chunks(pieces)),
                  sse_reply(openai_chunks(["Critique: Nothing to fix."])))
        events = await run(server)
    base = next(e for e in events if isinstance(e, BaseDone))
    assert base.finish_reason == "looping" and base.timing.tokens < len(pieces) / 3


class SelectingServer(StandinServer):
    """CnR requests get the scripted candidates in turn; judge requests prefer a fixed answer."""

    def __init__(self, candidates: list[str], preferred: str) -> None:
        super().__init__()
        self.candidates, self.preferred, self.served = candidates, preferred, 0

    def next_reply(self, request: Recorded) -> Reply:
        self.requests.append(request)
        last = request.json["messages"][-1]["content"]
        if "Response to improve:" in last:
            text = self.candidates[self.served % len(self.candidates)]
            self.served += 1
        else:  # the judge: find which side holds the preferred answer
            a = last.split("[Answer A]\n", 1)[1].split("\n\n[Answer B]", 1)[0]
            text = "Verdict: A" if a.strip() == self.preferred else "Verdict: B"
        return sse_reply(openai_chunks([text]))


async def test_the_judge_must_prefer_a_revision_in_both_orders() -> None:
    candidates = ["Critique: Wrong city.\nRevision: The capital of Australia is Melbourne.",
                  "Critique: Wrong city.\nRevision: The capital of Australia is Canberra."]
    config = replace(CONFIG, candidates=2, rounds=1)
    with SelectingServer(candidates, preferred="The capital of Australia is Canberra.") as server:
        judge = OpenAICompatBackend(server.url, timeout=5)
        events = await run(server, response="The capital of Australia is Sydney.", config=config,
                           selector=JudgeSelector(judge))
        await judge.aclose()
    done = rounds_of(events)[0]
    assert [e.candidate for e in events if isinstance(e, Judging)] == [0, 1]
    assert (done.status, done.revision, done.chosen) == ("complete", "The capital of Australia is Canberra.", 1)
    first, second = done.candidates
    assert (first.status, first.rejection) == ("rejected", "not_better") and len(first.verdicts) == 2
    assert second.status == "complete" and [v["outcome"] for v in second.verdicts] == ["win", "win"]
    assert events[-1].final == "The capital of Australia is Canberra."


async def test_a_revision_the_judge_does_not_prefer_is_rejected() -> None:
    config = replace(CONFIG, rounds=1)
    with SelectingServer(["Critique: Wrong.\nRevision: The capital is Perth."], preferred="Sydney.") as server:
        judge = OpenAICompatBackend(server.url, timeout=5)
        events = await run(server, response="Sydney.", config=config, selector=JudgeSelector(judge))
        await judge.aclose()
    done = rounds_of(events)[0]
    assert (done.status, done.rejection) == ("rejected", "not_better")
    assert events[-1] == TurnDone(final="Sydney.", rounds_completed=0, stop_reason="rejected")


@pytest.mark.parametrize("candidates", [0, 9])
def test_candidates_are_bounded(candidates: int) -> None:
    with pytest.raises(ValueError, match="candidates"):
        LoopConfig(candidates=candidates)


async def test_a_judge_that_fails_fails_the_round_and_keeps_the_answer() -> None:
    config = replace(CONFIG, rounds=1)
    with StandinServer() as cnr_server, StandinServer() as judge_server:
        cnr_server.on("POST", PATH, sse_reply(openai_chunks(["Critique: Wrong.\nRevision: The capital is Canberra."])))
        judge_server.on("POST", PATH, Reply(500, {"Content-Type": "application/json"}, b'{"error": "boom"}'))
        judge = OpenAICompatBackend(judge_server.url, timeout=5)
        events = await run(cnr_server, response="Sydney.", config=config, selector=JudgeSelector(judge))
        await judge.aclose()
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1 and errors[0].stage == "round" and errors[0].message.startswith("the judge failed")
    done = rounds_of(events)[0]
    assert done.status == "failed" and events[-1] == TurnDone(final="Sydney.", rounds_completed=0, stop_reason="failed")
