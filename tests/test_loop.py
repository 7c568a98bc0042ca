"""The refinement loop on real local models: event order, failed rounds, cancellation, and one
end-to-end run on the embedded SmolLM2 model."""

from __future__ import annotations

import asyncio

import pytest

from refine.backends.base import GenerationParams
from refine.backends.local import LocalBackend, LocalModel
from refine.events import BaseDelta, BaseDone, CritiqueDelta, RoundDone, RoundStart, TurnDone
from refine.loop import LoopConfig, refine_turn

CHAT = [{"role": "user", "content": "What is 3 times 4?"}]
SHORT = LoopConfig(rounds=2, base_params=GenerationParams(max_new_tokens=10), cnr_params=GenerationParams(max_new_tokens=12))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> LocalBackend:
    model = LocalModel(str(tiny_model_dir), dtype="float32")
    yield LocalBackend(model)
    model.close()


async def run(**kwargs) -> list:
    return [event async for event in refine_turn(CHAT, **kwargs)]


def kinds(events: list) -> list[str]:
    """Event types with runs of deltas collapsed."""
    out: list[str] = []
    for e in events:
        if not (out and out[-1] == e.type and e.type.endswith("delta")):
            out.append(e.type)
    return out


async def test_a_round_cut_off_at_its_limit_is_rejected_and_the_base_answer_stands(tiny: LocalBackend) -> None:
    events = await run(base=tiny, cnr=tiny, config=SHORT)
    order = kinds(events)
    assert order[:2] == ["base_delta", "base_done"]
    assert order[2] == "round_start" and order[-2:] == ["round_done", "turn_done"]
    base = next(e for e in events if isinstance(e, BaseDone))
    assert base.text == "".join(e.text for e in events if isinstance(e, BaseDelta))
    assert base.timing.tokens == sum(isinstance(e, BaseDelta) for e in events) and base.timing.ttft is not None
    done = [e for e in events if isinstance(e, RoundDone)]
    # random weights never end a generation by themselves: round 1 runs to its token limit, is
    # rejected as cut off (whatever it wrote), and refinement stops there
    assert len(done) == 1 and (done[0].status, done[0].rejection, done[0].finish_reason) == (
        "rejected", "cut_off", "length")
    assert "token limit" in done[0].error
    assert done[0].raw and done[0].timing.tokens > 0
    end = events[-1]
    assert isinstance(end, TurnDone) and end.stop_reason == "rejected"
    assert end.final == base.text and end.rounds_completed == 0


async def test_given_response_skips_the_base_model(tiny: LocalBackend) -> None:
    events = await run(cnr=tiny, config=SHORT, response="12")
    assert not any(isinstance(e, BaseDelta) for e in events)
    base = events[0]
    assert isinstance(base, BaseDone) and base.given and base.text == "12"
    assert isinstance(events[1], RoundStart) and events[1].round == 1


async def test_cancel_during_a_round_reports_it_cancelled(tiny: LocalBackend) -> None:
    cancel = asyncio.Event()
    events = []
    config = LoopConfig(rounds=3, base_params=GenerationParams(max_new_tokens=5),
                        cnr_params=GenerationParams(max_new_tokens=200))
    async for event in refine_turn(CHAT, base=tiny, cnr=tiny, config=config, cancel=cancel):
        events.append(event)
        if isinstance(event, RoundStart):
            cancel.set()  # takes effect at the round's first token
    done = [e for e in events if isinstance(e, RoundDone)]
    assert len(done) == 1 and done[0].status == "cancelled" and done[0].timing.tokens < 200
    base = next(e for e in events if isinstance(e, BaseDone))
    assert events[-1] == TurnDone(final=base.text, rounds_completed=0, stop_reason="cancelled")


async def test_cancel_during_the_base_answer(tiny: LocalBackend) -> None:
    cancel = asyncio.Event()
    events = []
    async for event in refine_turn(CHAT, base=tiny, cnr=tiny, config=SHORT, cancel=cancel):
        events.append(event)
        cancel.set()
    assert [e.type for e in events] == ["base_delta", "turn_done"]
    assert events[-1].stop_reason == "cancelled" and events[-1].final == events[0].text


def test_round_limits() -> None:
    with pytest.raises(ValueError, match="between 1 and 10"):
        LoopConfig(rounds=11)
    with pytest.raises(ValueError, match="between 1 and 10"):
        LoopConfig(rounds=0)


@pytest.mark.slow
async def test_end_to_end_on_the_embedded_model() -> None:
    """The real SmolLM2-135M-Instruct answers and the CnR model (the shipped adapter when present)
    critiques; whatever the model writes, the events are coherent."""
    from refine.backends import BackendPool, cnr_few_shot, cnr_format, generation_params
    from refine.settings import Settings

    settings = Settings(rounds=2, max_new_tokens=48, cnr_max_new_tokens=96)
    pool = BackendPool(settings)
    try:
        config = LoopConfig(rounds=2, few_shot=cnr_few_shot(settings), base_params=generation_params(settings, "base"),
                            cnr_params=generation_params(settings, "cnr"), cnr_format=cnr_format(settings))
        events = await run(base=pool.get("base"), cnr=pool.get("cnr"), config=config)
    finally:
        await pool.aclose()
    base = next(e for e in events if isinstance(e, BaseDone))
    assert "12" in base.text  # the real model answers the question
    rounds = [e for e in events if isinstance(e, RoundDone)]
    assert rounds and all(r.timing.tokens > 0 for r in rounds)
    for r in rounds:
        critique = "".join(e.text for e in events if isinstance(e, CritiqueDelta) and e.round == r.round)
        assert critique.strip() == r.critique
    end = events[-1]
    assert isinstance(end, TurnDone)
    good = [r for r in rounds if r.status == "complete"]
    assert end.final == (good[-1].revision if good else base.text)
