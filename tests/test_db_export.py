"""Exports: DPO preference pairs, feedback records the training reader accepts, raw tables;
streamed in constant memory."""

from __future__ import annotations

import csv
import json
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from db import open_database
from db.engine import write_session
from db.export import feedback_rows, preference_rows, table_rows
from db.models import Vote
from db.store import record_feedback, record_round, record_turn, record_vote
from refine.cli import main as cli
from refine.events import RoundDone
from refine.records import read_records

CHAT = [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "Capitale ?"},
        {"role": "assistant", "content": "De quel pays ?"}, {"role": "user", "content": "La France 🇫🇷"}]


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = open_database(f"sqlite:///{tmp_path / 'refine.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def data(engine: Engine) -> dict[str, int]:
    chat = record_turn(engine, messages=CHAT, answer="Lyon", model="m", backend="local")
    single = record_turn(engine, prompt="2+2? '; DROP TABLE votes;--", answer="5", model="m", backend="local")
    for turn, texts in ((chat, ["Paris", "Paris."]), (single, ["4"])):
        for k, revision in enumerate(texts, start=1):
            record_round(engine, turn, RoundDone(round=k, model="c", critique="c", revision=revision, status="complete"))
    return {"chat": chat, "single": single}


def test_preference_pairs_follow_the_votes(engine: Engine, data: dict[str, int]) -> None:
    chat, single = data["chat"], data["single"]
    record_vote(engine, turn_id=chat, left_round=0, right_round=2, choice="right", key="a")  # Paris. > Lyon
    record_vote(engine, turn_id=chat, left_round=2, right_round=1, choice="right", key="b")  # Paris > Paris.
    record_vote(engine, turn_id=single, left_round=1, right_round=0, choice="left", key="c")  # 4 > 5
    record_vote(engine, turn_id=single, left_round=0, right_round=1, choice="left", key="d")  # 5 > 4 (noise)
    record_vote(engine, turn_id=single, left_round=1, right_round=0, choice="tie", key="e")  # no winner
    record_vote(engine, turn_id=single, left_round=1, right_round=0, choice="both_bad", key="f")  # no winner
    rows = list(preference_rows(engine))
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("Paris.", "Lyon"), ("Paris", "Paris."), ("4", "5"), ("5", "4")]
    for row in rows:  # TRL's conversational preference format
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
    assert rows[0]["prompt"] == CHAT
    assert rows[2]["prompt"] == [{"role": "user", "content": "2+2? '; DROP TABLE votes;--"}]


def test_exported_feedback_reads_back_as_feedback_records(engine: Engine, data: dict[str, int],
                                                          tmp_path: Path) -> None:
    chat, single = data["chat"], data["single"]
    record_feedback(engine, turn_id=chat, round_index=0, critique="Lyon n'est pas la capitale.",
                    edited_answer="Paris est la capitale de la France.")
    record_feedback(engine, turn_id=single, round_index=1, critique="Show the work.", edited_answer="2+2 = 4")
    record_feedback(engine, turn_id=single, round_index=0, critique="Wrong.")
    record_feedback(engine, turn_id=single, round_index=0, edited_answer="4")
    out = tmp_path / "feedback.jsonl"
    result = CliRunner().invoke(cli, ["export", "feedback", str(out), "--db", str(engine.url)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 feedback record(s)" in result.output
    assert "skipped 1: critique only" in result.output and "skipped 1: edited answer only" in result.output

    records = read_records(out)  # the training command's validating reader
    assert [(r.response, r.critique, r.revision) for r in records] == [
        ("Lyon", "Lyon n'est pas la capitale.", "Paris est la capitale de la France."),
        ("4", "Show the work.", "2+2 = 4")]
    assert records[0].messages is not None and records[0].chat() == CHAT and records[0].prompt is None
    assert records[1].prompt == "2+2? '; DROP TABLE votes;--" and records[1].messages is None
    assert records[1].meta == {"turn_id": single, "round": 1, "created_at": records[1].meta["created_at"]}
    assert records[0].source == "refine-app" and records[0].id == "feedback-1"
    skipped: Counter[str] = Counter()
    assert len(list(feedback_rows(engine, skipped))) == 2 and skipped["critique only"] == 1


def test_tables_export_as_jsonl_and_csv(engine: Engine, data: dict[str, int], tmp_path: Path) -> None:
    record_vote(engine, turn_id=data["chat"], left_round=0, right_round=1, choice="right", key="ключ")
    runner = CliRunner()
    for table in ("conversations", "turns", "rounds", "votes", "feedback"):
        for suffix in ("jsonl", "csv"):
            out = tmp_path / f"{table}.{suffix}"
            result = runner.invoke(cli, ["export", "table", table, str(out), "--db", str(engine.url)])
            assert result.exit_code == 0, result.output
    turns_jsonl = [json.loads(line) for line in (tmp_path / "turns.jsonl").read_text("utf-8").splitlines()]
    with (tmp_path / "turns.csv").open(newline="", encoding="utf-8") as fh:
        turns_csv = list(csv.DictReader(fh))
    assert [t["messages"] for t in turns_jsonl] == [CHAT, [{"role": "user", "content": "2+2? '; DROP TABLE votes;--"}]]
    assert json.loads(turns_csv[0]["messages"]) == CHAT and turns_csv[1]["answer"] == "5"
    assert turns_jsonl[0]["created_at"].endswith("+00:00")
    assert [json.loads(x)["key"] for x in (tmp_path / "votes.jsonl").read_text("utf-8").splitlines()] == ["ключ"]
    assert (tmp_path / "feedback.csv").read_text().splitlines() == [
        "id,turn_id,round_index,critique,edited_answer,voter_hash,key,created_at"]
    assert len((tmp_path / "rounds.csv").read_text().splitlines()) == 4

    existing = tmp_path / "votes.jsonl"
    result = runner.invoke(cli, ["export", "table", "passwords", str(existing), "--db", str(engine.url)])
    assert result.exit_code == 2 and "no table 'passwords'" in result.output
    assert existing.read_text("utf-8") != ""  # a refused export leaves the file alone


def test_preference_export_streams_in_constant_memory(engine: Engine, tmp_path: Path) -> None:
    turns = [record_turn(engine, prompt=f"q{i}", answer="a" * 4000, model="m", backend="local") for i in range(10)]
    for t in turns:
        record_round(engine, t, RoundDone(round=1, model="c", critique="c", revision="b" * 4000, status="complete"))
    with write_session(engine) as s:
        s.add_all(Vote(turn_id=turns[i % 10], left_round=i % 2, right_round=1 - i % 2, choice="left", key=f"k{i}")
                  for i in range(20_000))
    # All rows at once would hold 20k x 8 kB = 160 MB of strings; streamed, a batch at a time.
    tracemalloc.start()
    count = sum(1 for _ in preference_rows(engine))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 20_000
    assert peak < 30_000_000, f"peak {peak / 1e6:.0f} MB"
    assert sum(1 for _ in table_rows(engine, "votes")) == 20_000
