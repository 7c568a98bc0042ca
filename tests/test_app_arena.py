"""The Arena over the app's API, as gradio_client sees it: a database filled by `python -m refine
revise --db` against a scripted OpenAI-compatible stand-in, the app started on it, a visitor
drawing a pair, voting blind and getting the reveal; the Chat tab's vote stays not blind, and
the statistics keep the two apart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from gradio_client import Client

from db.arena import ArenaPair
from refine.cli import main as cli
from tests.test_app_harness import (
    RunningApp,
    Script,
    ScriptedServer,
    message_text,
    running_app,
    standin_settings,
)

PROMPTS = ["What is the capital of France?", "Name a prime number."]
# What /arena_next and /arena_vote_* return (ArenaLayout.outputs without the row, button and state)
OUT_PROMPT, OUT_LEFT, OUT_RIGHT, OUT_REVEAL = 0, 1, 2, 3


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(Script(delay=0)) as standin:
        yield standin


def revise_into_database(url: str, folder: Path) -> Path:
    """Run `python -m refine revise --db` on PROMPTS (2 rounds) against the stand-in at `url`, as a
    team fills the Arena from a prompt set; returns the SQLite file."""
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    db_file = folder / "refine.db"
    args = ["revise", "--input", str(prompts), "--output", str(folder / "revised.jsonl"), "--rounds", "2",
            "--db", str(db_file), "--base-backend", "openai", "--base-url", url, "--base-model", "standin",
            "--cnr-backend", "openai", "--retries", "0", "--cnr-adapter", "none"]
    with ThreadPoolExecutor(1) as thread:  # its own thread: revise runs an event loop (Playwright's may run here)
        result = thread.submit(CliRunner().invoke, cli, args).result()
    assert result.exit_code == 0, result.output
    return db_file


@pytest.fixture(scope="module")
def app(server: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    db_file = revise_into_database(server.url, tmp_path_factory.mktemp("arena"))
    with running_app(standin_settings(server.url, db_file)) as running:
        yield running


def texts(update: tuple) -> tuple[str, str]:
    return message_text(update[OUT_LEFT][0]), message_text(update[OUT_RIGHT][0])


def test_a_pair_from_a_revise_run_is_voted_blind_then_revealed(app: RunningApp) -> None:
    turns = app.rows("SELECT id, prompt, answer FROM turns ORDER BY id")
    # revise answers prompts concurrently: turns are stored in the order they finish
    assert sorted(p for _, p, _ in turns) == sorted(PROMPTS) and app.rows("SELECT COUNT(*) FROM votes") == [(0,)]
    versions = {(t, 0): answer for t, _, answer in turns}
    versions |= {(t, k): text for t, k, text in app.rows(
        "SELECT turn_id, round_index, revision FROM rounds WHERE status = 'complete'")}
    assert len(versions) == 6  # each prompt: the answer and two revisions, so three pairs each

    c = Client(app.url, verbose=False, download_files=False)
    shown = c.predict(api_name="/arena_next")
    left, right = texts(shown)
    prompt = message_text(shown[OUT_PROMPT][0])
    assert prompt in PROMPTS and left != right and shown[OUT_REVEAL] == ""  # no names before the vote
    turn_id = next(t for t, p, _ in turns if p == prompt)
    index = {text: k for (t, k), text in versions.items() if t == turn_id}  # version k by its text

    revealed = c.predict(api_name="/arena_vote_left")
    assert texts(revealed) == (left, right)  # the same pair, now with its reveal
    reveal = revealed[OUT_REVEAL]
    [vote] = app.rows("SELECT turn_id, left_round, right_round, right_turn_id, choice, blind, key, voter_hash "
                      "FROM votes")
    assert vote[:6] == (turn_id, index[left], index[right], None, "left", 1)  # blind, in the order shown
    assert vote[6].startswith("a1:") and vote[7]
    names = {0: "the original answer (base model `standin`)", 1: "revision 1 by the critique-and-revise model "
             "`standin`", 2: "revision 2 by the critique-and-revise model `standin`"}
    assert reveal.startswith("Thanks, your vote (**A is better**) is saved.")
    assert f"**A** was {names[index[left]]}." in reveal and f"**B** was {names[index[right]]}." in reveal

    again = c.predict(api_name="/arena_vote_right")  # one vote per pair: the first one stands
    assert "A is better" in again[OUT_REVEAL] and app.rows("SELECT COUNT(*) FROM votes") == [(1,)]

    # The next pairs: never the one judged, and the others have fewer votes, so they come first.
    for _ in range(5):
        shown = c.predict(api_name="/arena_next")
        assert shown[OUT_REVEAL] == "" and set(texts(shown)) != {left, right}
        c.predict(api_name="/arena_vote_tie")
    assert app.rows("SELECT COUNT(*), SUM(blind), COUNT(DISTINCT key) FROM votes") == [(6, 6, 6)]
    assert "judged every pair" in c.predict(api_name="/arena_next")[OUT_REVEAL]

    # A second visitor gets the pairs too (each now has one vote).
    other = Client(app.url, verbose=False, download_files=False).predict(api_name="/arena_next")
    assert other[OUT_REVEAL] == "" and texts(other)[0] != texts(other)[1]

    # The vote beside the Refinement panel is stored as not blind; statistics keep them apart.
    chat = Client(app.url, verbose=False, download_files=False)
    chat.predict("What is 2 + 2?", api_name="/respond")
    chat.predict(api_name="/vote_right")
    assert app.rows("SELECT blind FROM votes v JOIN turns t ON t.id = v.turn_id WHERE t.prompt = 'What is 2 + 2?'") == [
        (0,)]
    summary, _, table, details = c.predict(api_name="/statistics")
    blind = app.rows("SELECT COUNT(*) FROM votes WHERE blind AND 0 IN (left_round, right_round)")[0][0]
    assert f"**{blind}** blind vote(s) from the Arena" in summary and "**1** vote(s) cast beside" in summary
    assert table["headers"][:2] == ["CnR model", "round"] and {row[0] for row in table["data"]} == {"standin"}
    assert "Not blind" in details and "What became of the rounds" in details


def test_the_reveal_and_the_statistics_name_models_only_inside_code_spans() -> None:
    from db.arena import Side
    from refine.winrate import WinRate
    from ui.arena import ArenaState, reveal_text
    from ui.render import stats_details, stats_summary

    hostile = "cnr`<img src=x onerror=alert(1)>`\n# at http://10.0.0.5:8080/v1"
    pair = ArenaPair("models", Side(1, 2, "a", hostile, "/srv/adapters/v2"), Side(2, 2, "b", "base-cnr"), [])
    text = reveal_text(ArenaState(pair=pair, a_left=False, voted="both_bad"))
    assert text.startswith("Thanks, your vote (**both bad**) is saved.")
    assert "**A** was revision 2 by the critique-and-revise model `base-cnr`." in text
    b = text.split("**B** was ", 1)[1]
    assert b.count("`") == 2 and "10.0.0.5" not in b and "\n" not in b.strip() and "+ v2`" in b  # one code span

    rate = WinRate(1, 3, 1, 1, 1, 5, 4, 0.7, 0.4, 0.9)
    assert stats_summary({}, []).startswith("No votes yet")
    summary = stats_summary({}, [rate])
    assert summary.startswith("No blind votes") and "**6** vote(s) cast beside the Refinement panel" in summary
    assert stats_summary({"cnr": [rate]}, []).startswith("**6** blind vote(s) from the Arena")
    details = stats_details([rate], [], "")
    # 5 votes: too few for a CI (refine.winrate.MIN_VOTES)
    assert details.startswith("#### Not blind") and "| 1 | 70.0% | too few votes (5 of 10) | 3 | 1 | 1 | 1 | 6 | 4 |" in details
    more = WinRate(1, 8, 2, 2, 1, 12, 9, 0.75, 0.5, 0.9)
    assert "| 1 | 75.0% | 50.0% – 90.0% | 8 | 2 | 2 | 1 | 13 | 9 |" in stats_details([more], [], "")
