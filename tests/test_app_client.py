"""The app over its API, as gradio_client sees it: the app launched on localhost against a
scripted OpenAI-compatible stand-in (a real server on a real socket), its SQLite file checked
with a separate connection."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from tests.test_app_harness import (
    OUT_CHAT,
    OUT_PANEL,
    RunningApp,
    Script,
    ScriptedServer,
    message_text,
    panel_text,
    running_app,
    standin_settings,
    wait_for,
)
from ui.context import REGENERATE_TEMPERATURE

ADMIN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(Script(delay=0.01)) as standin:
        yield standin


@pytest.fixture(scope="module")
def app(server: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    db_file = tmp_path_factory.mktemp("app") / "refine.db"
    with running_app(standin_settings(server.url, db_file, admin_token=ADMIN)) as running:
        yield running


def client(app: RunningApp) -> Client:
    return Client(app.url, verbose=False, download_files=False)


def run_turn(c: Client, prompt: str, api: str = "/respond") -> list[tuple]:
    """Every update of one turn, in order."""
    job = c.submit(prompt, api_name=api) if api == "/respond" else c.submit(api_name=api)
    list(job)  # wait for the end
    assert job.outputs(), "no output"
    return job.outputs()


def stage_order(snapshots: list[list[dict[str, Any]]]) -> list[str]:
    """The stages of the panel in the order they first appeared across snapshots."""
    seen: list[str] = []
    for panel in snapshots:
        for m in panel:
            title = (m.get("metadata") or {}).get("title", "")
            text = message_text(m)
            if title.startswith("Critique · round") and text not in ("", "…"):
                stage = f"critique {title.split()[-1]}"
            elif text.startswith("**Revision"):
                stage = f"revision {text.split()[1].rstrip('*:')}"
            else:
                continue
            if stage not in seen:
                seen.append(stage)
    return seen


def test_turn_with_two_rounds_streams_in_order_then_vote_is_stored(app: RunningApp) -> None:
    c = client(app)
    updates = run_turn(c, "What is the capital of France?")
    panels = [u[OUT_PANEL] for u in updates if isinstance(u[OUT_PANEL], list)]
    assert stage_order(panels) == ["critique 1", "revision 1", "critique 2", "revision 2"]
    # critique 1 was on screen, still streaming, before any revision text arrived
    first_revision = next(i for i, p in enumerate(panels) if "**Revision 1" in panel_text(p))
    assert any("round 1" in panel_text(p) and "critique" in panel_text(p) for p in panels[:first_revision])
    final = updates[-1]
    assert "Done: 2 round(s)" in panel_text(final[OUT_PANEL])
    assert message_text(final[OUT_CHAT][-1]) == "You said: What is the capital of France? (revised) (revised)"

    (turn_id,) = app.rows("SELECT id FROM turns WHERE prompt = ?", "What is the capital of France?")[0]
    assert app.rows("SELECT round_index, status FROM rounds WHERE turn_id = ? ORDER BY round_index", turn_id) == [
        (1, "complete"), (2, "complete")]

    reveal = c.predict(api_name="/vote_left")[-1]
    assert "Left was" in reveal  # the original vs the final revision, by default
    assert "the original answer" in reveal and "revision 2 (final)" in reveal
    votes = app.rows("SELECT left_round, right_round, choice, voter_hash, blind FROM votes WHERE turn_id = ?", turn_id)
    assert len(votes) == 1 and {votes[0][0], votes[0][1]} == {0, 2} and votes[0][2] == "left" and votes[0][3]
    assert votes[0][4] == 0  # not blind: the Refinement panel above the vote names the versions

    c.predict(api_name="/vote_right")  # one vote per comparison per session
    assert app.rows("SELECT choice FROM votes WHERE turn_id = ?", turn_id) == [("left",)]


def test_eight_clients_at_once_all_complete_and_all_votes_are_stored(app: RunningApp) -> None:
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            c = client(app)
            final = run_turn(c, f"Parallel question {i}?")[-1]
            assert message_text(final[OUT_CHAT][-1]).endswith(f"question {i}? (revised) (revised)")
            c.predict(api_name="/vote_tie")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    rows = app.rows("SELECT t.prompt, v.choice FROM votes v JOIN turns t ON t.id = v.turn_id "
                    "WHERE t.prompt LIKE 'Parallel question %'")
    assert sorted(p for p, _ in rows) == sorted(f"Parallel question {i}?" for i in range(8))
    assert {c for _, c in rows} == {"tie"}


def test_multi_turn_conversation_sees_earlier_turns_and_regenerate_adds_a_turn(
        app: RunningApp, server: ScriptedServer) -> None:
    c = client(app)
    run_turn(c, "First message")
    final = run_turn(c, "Second message")[-1]
    assert [message_text(m) for m in final[OUT_CHAT]][::2] == ["First message", "Second message"]
    base_request = [r.json for r in server.requests_to("/v1/chat/completions")
                    if r.json["messages"][-1]["content"] == "Second message"][-1]
    assert [m["role"] for m in base_request["messages"]] == ["user", "assistant", "user"]
    assert base_request["messages"][1]["content"].endswith("(revised) (revised)")  # it sees the refined answer

    regenerated = run_turn(c, "", api="/regenerate")[-1]
    assert len(regenerated[OUT_CHAT]) == 4
    # at the default temperature 0 the same answer would come again: Regenerate samples it (the
    # critique and revision keep the user's temperature)
    second = [r.json for r in server.requests_to("/v1/chat/completions")
              if r.json["messages"][-1]["content"] == "Second message"]
    assert [r["temperature"] for r in second] == [0.0, REGENERATE_TEMPERATURE]
    cnr = [r.json for r in server.requests_to("/v1/chat/completions")
           if "Second message" in r.json["messages"][-1]["content"] and r.json["messages"][-1]["content"] != "Second message"]
    assert cnr and {r["temperature"] for r in cnr} == {0.0}
    hot = c.submit(api_name="/regenerate", temperature=0.3)
    hot.result(timeout=60)
    assert [r.json["temperature"] for r in server.requests_to("/v1/chat/completions")
            if r.json["messages"][-1]["content"] == "Second message"][-1] == 0.3  # the user's, when above 0
    rows = app.rows("SELECT conversation_id, position FROM turns WHERE prompt IN ('First message', 'Second message') "
                    "ORDER BY id")
    assert len({conv for conv, _ in rows}) == 1 and [pos for _, pos in rows] == [0, 1, 2, 3]


def test_the_conversation_continues_from_the_version_the_visitor_chose(app: RunningApp, server: ScriptedServer) -> None:
    c = client(app)
    run_turn(c, "Keep my original")
    chat = c.predict("0", api_name="/continue_from")  # the original answer, not revision 2
    assert message_text(chat[-1]) == "You said: Keep my original"
    run_turn(c, "And then?")
    history = [r.json for r in server.requests_to("/v1/chat/completions")
               if r.json["messages"][-1]["content"] == "And then?"][-1]["messages"]
    assert history[1] == {"role": "assistant", "content": "You said: Keep my original"}
    stored = json.loads(app.rows("SELECT messages FROM turns WHERE prompt = 'And then?'")[0][0])
    assert stored[1]["content"] == "You said: Keep my original"  # the stored turn says what it continued from
    # a revision that is not the latest: revision 1 of the second turn
    assert message_text(c.predict("1", api_name="/continue_from")[-1]) == "You said: And then? (revised)"
    run_turn(c, "Third")
    history = [r.json for r in server.requests_to("/v1/chat/completions")
               if r.json["messages"][-1]["content"] == "Third"][-1]["messages"]
    assert [m["content"] for m in history[1::2]] == ["You said: Keep my original", "You said: And then? (revised)"]


def test_bad_input_gets_a_clear_message_and_nothing_is_stored(app: RunningApp) -> None:
    c = client(app)
    before = app.rows("SELECT COUNT(*) FROM turns")[0][0]
    assert "Type a message first" in panel_text(run_turn(c, "   ")[-1][OUT_PANEL])
    too_long = panel_text(run_turn(c, "x" * 100_001)[-1][OUT_PANEL])
    assert "too long" in too_long and "100,001" in too_long
    assert app.rows("SELECT COUNT(*) FROM turns")[0][0] == before


def test_stream_cut_mid_answer_is_reported_app_stays_up_and_votes_stay(app: RunningApp) -> None:
    c = client(app)
    run_turn(c, "A question to vote on")
    c.predict(api_name="/vote_both_bad")
    votes_before = app.rows("SELECT COUNT(*) FROM votes")[0][0]

    final = run_turn(c, "Please [cut] this answer")[-1]
    panel = panel_text(final[OUT_PANEL])
    assert "answer broke off" in panel
    turn = app.rows("SELECT answer, error FROM turns WHERE prompt = 'Please [cut] this answer'")
    assert turn and turn[0][0].startswith("You said:") and "stream_broken" in turn[0][1]

    final = run_turn(c, "Round [cut-round] please")[-1]
    assert "Round 1 failed" in panel_text(final[OUT_PANEL])
    assert app.rows("SELECT r.status FROM rounds r JOIN turns t ON t.id = r.turn_id "
                    "WHERE t.prompt = 'Round [cut-round] please'") == [("failed",)]

    assert app.rows("SELECT COUNT(*) FROM votes")[0][0] == votes_before
    assert "Done: 2 round(s)" in panel_text(run_turn(client(app), "Still there?")[-1][OUT_PANEL])


def test_stop_cancels_the_round_and_stores_it_as_cancelled(app: RunningApp) -> None:
    c = client(app)
    job = c.submit("Take your time [slow]", api_name="/respond")
    wait_for(lambda: any("Critique · round 1" in panel_text(u[OUT_PANEL]) and "Round 1" in panel_text(u[OUT_PANEL])
                         for u in job.outputs() if isinstance(u[OUT_PANEL], list)), timeout=30)
    c.predict(api_name="/stop")
    final = job.result(timeout=30)
    assert "Stopped by you" in panel_text(final[OUT_PANEL])
    rows = app.rows("SELECT r.round_index, r.status, r.critique FROM rounds r JOIN turns t ON t.id = r.turn_id "
                    "WHERE t.prompt = 'Take your time [slow]'")
    assert len(rows) == 1 and rows[0][:2] == (1, "cancelled") and rows[0][2].startswith("Round 1")


def test_early_stop_reason_is_shown(app: RunningApp) -> None:
    final = run_turn(client(app), "Nothing wrong here [fix]")[-1]
    assert "nothing left to fix" in panel_text(final[OUT_PANEL])


def test_feedback_statistics_and_admin_exports(app: RunningApp, tmp_path: Path) -> None:
    c = client(app)
    run_turn(c, "Feedback please")
    c.predict(api_name="/vote_right")
    status = c.predict("2", "It should mention Paris.", "Paris is the capital of France.", api_name="/feedback")[0]
    assert status.startswith("Saved your critique and improved answer")
    stored = app.rows("SELECT round_index, critique, edited_answer FROM feedback")
    assert (2, "It should mention Paris.", "Paris is the capital of France.") in stored
    # saving the same feedback again stores nothing more, and says so
    again = c.predict("2", "It should mention Paris.", "Paris is the capital of France.", api_name="/feedback")[0]
    assert "already saved" in again
    assert app.rows("SELECT COUNT(*) FROM feedback WHERE critique = 'It should mention Paris.'") == [(1,)]

    summary, plot, table, details = c.predict(api_name="/statistics")
    votes = app.rows("SELECT COUNT(*) FROM votes WHERE 0 IN (left_round, right_round)")[0][0]
    assert app.rows("SELECT COUNT(*) FROM votes WHERE blind") == [(0,)]  # every vote here was beside the panel
    assert "No blind votes" in summary and f"**{votes}** vote(s) cast beside the Refinement panel" in summary
    assert not table["data"] or table["data"] == [[""] * len(table["headers"])]  # the blind table is empty
    assert "Not blind" in details and "| 2 |" in details  # round 2 vs the original, counted apart

    denied = c.predict("wrong", api_name="/export")
    assert "Wrong admin token" in denied[0] and not denied[1]
    message, links = c.predict(ADMIN, api_name="/export")
    urls = dict(re.findall(r"\[([^\]]+)\]\(([^)]+)\)", links))  # the one-time download links
    assert {"preferences.jsonl", "feedback.jsonl", "votes.csv", "turns.csv"} <= set(urls)
    download = httpx.get(app.url + urls["feedback.jsonl"])
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    records = [json.loads(line) for line in download.text.splitlines()]
    assert any(r["revision"] == "Paris is the capital of France." for r in records)
    assert httpx.get(app.url + urls["feedback.jsonl"]).status_code == 404  # once only


def test_secrets_never_reach_the_page(app: RunningApp) -> None:
    import httpx

    page = httpx.get(app.url).text + httpx.get(app.url.rstrip("/") + "/config").text
    assert ADMIN not in page


@pytest.fixture(scope="module")
def edits_app(server: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app with REFINE_CNR_FORMAT=edits: the stand-in answers with a critique and edits."""
    db_file = tmp_path_factory.mktemp("edits-app") / "refine.db"
    with running_app(standin_settings(server.url, db_file, cnr_format="edits")) as running:
        yield running


def test_an_edits_turn_lists_its_edits_and_shows_each_revision_as_changes(edits_app: RunningApp) -> None:
    c = client(edits_app)
    updates = run_turn(c, "Where is Paris?")
    final = updates[-1]
    answer = "You asked: Where is Paris?\n\n(revised)\n\n(revised)"
    assert message_text(final[OUT_CHAT][-1]) == answer
    texts = [message_text(m) for m in final[OUT_PANEL]]
    edits = [t for t in texts if t.startswith("**Edits · round")]
    quote = '«<span class="refine-quote">{}</span>»'.format
    assert edits[0].startswith("**Edits · round 1** (2 applied)")
    assert f"<li>replace {quote('You said:')} → {quote('You asked:')}</li>" in edits[0]
    assert f"<li>append {quote('(revised)')}</li>" in edits[0]
    assert edits[1].startswith("**Edits · round 2** (1 applied, 1 dropped)")  # "You said:" is gone by then
    assert (f'<li class="refine-edit-dropped"><s>replace {quote("You said:")} → {quote("You asked:")}</s> — '
            "<em>dropped: not found</em></li>") in edits[1]
    first, second = (next(t for t in texts if t.startswith(f"**Revision {k}**")) for k in (1, 2))
    assert first == ("**Revision 1** · changes to the original answer\n\n<div class=\"refine-diff\">"
                     "You <del>said</del><ins>asked</ins>: Where is Paris?<ins><br><br>(revised)</ins></div>")
    assert second.startswith("**Revision 2** · changes to revision 1\n\n") and "<del>" not in second
    # the edits list was on screen while round 1 ran, before round 2 began
    assert any("**Edits · round 1**" in panel_text(u[OUT_PANEL]) and "Revision 2" not in panel_text(u[OUT_PANEL])
               for u in updates if isinstance(u[OUT_PANEL], list))
    (turn_id,) = edits_app.rows("SELECT id FROM turns WHERE prompt = 'Where is Paris?'")[0]
    rows = edits_app.rows("SELECT cnr_format, edits FROM rounds WHERE turn_id = ? ORDER BY round_index", turn_id)
    assert [fmt for fmt, _ in rows] == ["edits-v1", "edits-v1"]
    assert [[e.get("reason") for e in json.loads(stored)] for _, stored in rows] == [[None, None], ["not found", None]]

    clean = c.predict("Where is Rome?", api_name="/respond", show_changes=False)  # Show changes off
    texts = [message_text(m) for m in clean[OUT_PANEL]]
    assert "**Revision 1**\n\nYou asked: Where is Rome?\n\n(revised)" in texts
    assert not any("<ins>" in t or "<del>" in t for t in texts)
    assert any(t.startswith("**Edits · round 1**") for t in texts)  # the edits stay listed
