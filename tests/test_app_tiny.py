"""The app on a real (tiny, random) local model, over gradio_client: the answer streams, the
random CnR output does not parse so round 1 fails and says why, and a prompt longer than the
model's context is refused with a clear message. Everything lands in the SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from tests.test_app_harness import OUT_CHAT, OUT_PANEL, RunningApp, panel_text, running_app


@pytest.fixture(scope="module")
def app(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    db_file = tmp_path_factory.mktemp("tiny-app") / "refine.db"
    settings = dict(base_model=str(tiny_model_dir), cnr_adapter="none", cnr_mode="trained", max_new_tokens=12,
                    cnr_max_new_tokens=12, rounds=2, database_url=f"sqlite:///{db_file}")
    with running_app(settings) as running:
        yield running


def test_a_turn_on_a_local_model_streams_and_a_rejected_round_says_why(app: RunningApp) -> None:
    assert app.ctx.generation_limit == 1  # one local generation at a time
    c = Client(app.url, verbose=False)
    job = c.submit("Hello there", api_name="/respond")
    updates = list(job) and job.outputs()
    final = updates[-1]
    assert final[OUT_CHAT][0]["content"][0]["text"] == "Hello there"
    panel = panel_text(final[OUT_PANEL])
    # the random model never ends its critique: it is cut off at the token limit and rejected
    assert "Critique · round 1 · rejected" in panel
    assert "Revision 1 was not used:** it was cut off at the token limit" in panel
    assert "nothing to vote on" in c.predict(api_name="/vote_left")[-1]  # no accepted revision to compare
    turn = app.rows("SELECT id, model, error FROM turns WHERE prompt = 'Hello there'")
    assert len(turn) == 1 and turn[0][1] == "tiny-model0" and turn[0][2] is None
    assert app.rows("SELECT round_index, status, stop_reason, rejection, finish_reason FROM rounds WHERE turn_id = ?",
                    turn[0][0]) == [(1, "rejected", "rejected", "cut_off", "length")]


def test_a_prompt_longer_than_the_context_is_refused_clearly(app: RunningApp) -> None:
    prompt = ("lorem ipsum " * 8334)[:100_000]
    final = Client(app.url, verbose=False).predict(prompt, api_name="/respond")
    assert "too long for the model's context window" in panel_text(final[OUT_PANEL])
    stored = app.rows("SELECT error FROM turns WHERE length(prompt) = 100000")
    assert stored and stored[0][0].startswith("context_too_long")
