"""Alembic migrations: an old database upgrades with its rows intact, the models match the
migrations, and `python -m refine db …` works from any folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, text

from db.engine import make_engine
from db.migrate import current, downgrade, head, upgrade
from db.models import Base
from db.stats import vote_win_rates
from db.store import record_feedback, record_round, record_turn, record_vote
from refine.cli import main as cli
from refine.events import RoundDone

OLD_ROWS = """
INSERT INTO conversations (id, created_at) VALUES (1, '2026-01-01 10:00:00');
INSERT INTO turns (id, conversation_id, position, prompt, messages, backend, model, answer, given, error, ttft,
                   duration, tokens, created_at)
VALUES (1, 1, 0, 'Hi ''there'' 👋', '[{"role": "user", "content": "Hi ''there'' 👋"}]', 'local', 'smol', 'Hello',
        0, NULL, 0.5, 1.25, 3, '2026-01-01 10:00:01'),
       (2, 1, 1, 'Again', '[{"role": "user", "content": "Again"}]', 'tgi', 'big', 'Hey', 1, NULL, NULL, 0, 0,
        '2026-01-01 10:00:02');
INSERT INTO rounds (id, turn_id, round_index, model, adapter, critique, revision, status, stop_reason,
                    nothing_to_fix, error, ttft, duration, tokens, created_at)
VALUES (1, 1, 1, 'cnr', 'a1', 'too short', 'Hello there!', 'complete', NULL, 0, NULL, 0.1, 2.0, 9, '2026-01-01 10:00:03'),
       (2, 1, 2, 'cnr', 'a1', 'fine', 'Hello there!!', 'complete', 'max_rounds', 0, NULL, 0.1, 2.0, 9, '2026-01-01 10:00:04'),
       (3, 2, 1, 'cnr', NULL, 'x', 'partial', 'failed', 'failed', 0, 'unparseable', NULL, 1.0, 5, '2026-01-01 10:00:05');
INSERT INTO votes (id, turn_id, left_round, right_round, choice, key, voter_hash, created_at)
VALUES (1, 1, 1, 0, 'left', 'k1', 'h1', '2026-01-01 11:00:00'),
       (2, 1, 0, 1, 'right', 'k2', NULL, '2026-01-01 11:00:01'),
       (3, 1, 0, 2, 'left', 'k3', 'h2', '2026-01-01 11:00:02'),
       (4, 1, 2, 1, 'tie', 'k4', NULL, '2026-01-01 11:00:03'),
       (5, 2, 0, 1, 'both_bad', 'k5', NULL, '2026-01-01 11:00:04');
"""
TABLES = ("conversations", "turns", "rounds", "votes")
HEAD = "0008"
ADDED_LATER = {"finish_reason", "thinking", "rejection", "candidates",  # by 0005a, NULL on old rows
               "cnr_format", "edits",  # by 0006
               "right_turn_id"}  # by 0007
NOT_BLIND = {"blind"}  # by 0007: false on old rows (they were cast beside the Refinement panel)


def dump(engine: Engine) -> dict[str, list[dict]]:
    with engine.connect() as c:
        return {t: [dict(r._mapping) for r in c.execute(text(f"SELECT * FROM {t} ORDER BY id"))] for t in TABLES}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    yield engine
    engine.dispose()


def test_first_revision_upgrades_to_head_with_rows_intact(engine: Engine) -> None:
    upgrade(engine, "0001")
    assert current(engine) == "0001"
    with engine.begin() as c:
        for statement in OLD_ROWS.split(";"):
            if statement.strip():
                c.execute(text(statement))
    before = dump(engine)

    upgrade(engine)
    assert current(engine) == head() == HEAD
    after = dump(engine)
    for table in TABLES:
        assert [{k: v for k, v in row.items() if not k.startswith("high_") and k not in ADDED_LATER | NOT_BLIND}
                for row in after[table]] == before[table]
        assert all(row[k] is None for row in after[table] for k in ADDED_LATER & row.keys())
    assert [row["blind"] for row in after["votes"]] == [0] * 5
    # Backfilled by 0003 and 0004: the later version, and its points (2 won, 1 tie, 0 lost).
    assert [(row["high_round"], row["high_score"]) for row in after["votes"]] == [
        (1, 2), (1, 2), (2, 0), (2, 1), (1, None)]

    # The upgraded database works: feedback (added by 0002), votes and statistics.
    assert record_feedback(engine, turn_id=1, round_index=2, critique="ok", edited_answer="Hi!") == 1
    vote = record_vote(engine, turn_id=1, left_round=2, right_round=0, choice="right", key="k6")
    assert (vote.high_round, vote.high_score) == (2, 0)
    by_round = {r.round: r for r in vote_win_rates(engine, "original", blind=False, n_boot=200)}
    assert vote_win_rates(engine, "original", n_boot=200) == []  # no blind vote among them
    assert (by_round[1].wins, by_round[1].both_bad, by_round[2].wins, by_round[2].losses) == (2, 1, 0, 2)
    for high_round, high_score, choice in [(1, 0, "right"), (2, 2, "right"), (2, None, "tie"), (2, 0, "both_bad")]:
        with engine.connect() as c, pytest.raises(Exception, match="CHECK constraint failed: ck_votes_high"):
            c.execute(text("INSERT INTO votes (turn_id, left_round, right_round, high_round, high_score, choice, key,"
                           " created_at) VALUES (1, 2, 0, :r, :s, :c, 'bad', '2026-01-01')"),
                      dict(r=high_round, s=high_score, c=choice))


def test_0005a_allows_rejected_rounds_with_their_rule(engine: Engine) -> None:
    upgrade(engine, "0001")
    with engine.begin() as c:
        for statement in OLD_ROWS.split(";"):
            if statement.strip():
                c.execute(text(statement))
    upgrade(engine, "0004")
    rejected = ("INSERT INTO rounds (turn_id, round_index, model, critique, revision, status, nothing_to_fix, duration,"
                " tokens, created_at{extra}) VALUES (2, 2, 'cnr', 'c', 'loop loop', 'rejected', 0, 1.0, 5,"
                " '2026-01-01'{values})")
    with engine.connect() as c, pytest.raises(Exception, match="CHECK constraint failed: ck_rounds_status"):
        c.execute(text(rejected.format(extra="", values="")))
    upgrade(engine, "0005a")
    with engine.begin() as c:
        c.execute(text(rejected.format(extra=", rejection, finish_reason", values=", 'looping', 'stop'")))
        assert c.execute(text("SELECT rejection FROM rounds WHERE status = 'rejected'")).scalar_one() == "looping"
    downgrade(engine, "0004")  # a rejected round has no place in the old schema: it goes
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM rounds WHERE round_index = 2 AND turn_id = 2")).scalar_one() == 0


def test_0006_adds_round_format_and_edits_and_downgrades_without_them(engine: Engine) -> None:
    upgrade(engine, "0001")
    with engine.begin() as c:
        for statement in OLD_ROWS.split(";"):
            if statement.strip():
                c.execute(text(statement))
    upgrade(engine, "0005a")
    before = dump(engine)
    upgrade(engine, "0006")
    assert current(engine) == "0006"
    with engine.connect() as c:  # rounds stored before 0006 have neither
        assert c.execute(text("SELECT DISTINCT cnr_format, edits FROM rounds")).all() == [(None, None)]
    turn = record_turn(engine, prompt="Capital?", answer="Lyon", model="m", backend="local")
    edits = ({"kind": "replace", "span": "Lyon", "text": "Paris", "applied": True},
             {"kind": "append", "span": "", "text": "", "applied": False, "reason": "incomplete"})
    record_round(engine, turn, RoundDone(round=1, model="cnr", critique="Wrong.", revision="Paris",
                                         status="complete", cnr_format="edits-v1", edits=edits))
    with engine.connect() as c:
        stored = c.execute(text("SELECT cnr_format, edits FROM rounds WHERE turn_id = :t"), {"t": turn}).one()
    assert stored[0] == "edits-v1" and json.loads(stored[1]) == list(edits)

    downgrade(engine, "0005a")  # the columns go, every row stays
    assert current(engine) == "0005a"
    with engine.connect() as c:
        columns = {row[1] for row in c.execute(text("PRAGMA table_info(rounds)"))}
        assert not {"cnr_format", "edits"} & columns
        assert c.execute(text("SELECT revision FROM rounds WHERE turn_id = :t"), {"t": turn}).scalar_one() == "Paris"
    after = dump(engine)
    assert {t: rows[:len(before[t])] for t, rows in after.items()} == before
    upgrade(engine)
    assert current(engine) == HEAD
    with engine.connect() as c:
        assert c.execute(text("SELECT cnr_format, edits FROM rounds WHERE turn_id = :t"), {"t": turn}).one() == (
            None, None)


def test_0007_adds_blind_votes_and_votes_across_turns_and_downgrades_without_them(engine: Engine) -> None:
    upgrade(engine, "0001")
    with engine.begin() as c:
        for statement in OLD_ROWS.split(";"):
            if statement.strip():
                c.execute(text(statement))
    upgrade(engine, "0006")
    before = dump(engine)
    upgrade(engine, "0007")
    assert current(engine) == "0007"
    with engine.connect() as c:  # votes stored before 0007 were cast beside the panel: not blind
        assert c.execute(text("SELECT DISTINCT blind, right_turn_id FROM votes")).all() == [(0, None)]
        indexes = {row[1] for row in c.execute(text("PRAGMA index_list(votes)"))}
    assert "ix_votes_stats" in indexes and "ix_votes_turn_id_high_round_left_round_right_round_high_score" not in indexes
    # A second turn on turn 1's prompt and answer, revised by another CnR model; blind votes on
    # one turn and across the two.
    other = record_turn(engine, prompt="Hi 'there' 👋", answer="Hello", model="smol", backend="local")
    record_round(engine, other, RoundDone(round=1, model="cnr-2", critique="c", revision="Hi!", status="complete"))
    blind = record_vote(engine, turn_id=1, left_round=0, right_round=2, choice="right", key="b1", blind=True)
    across = record_vote(engine, turn_id=other, left_round=1, right_turn_id=1, right_round=1, choice="left",
                         key="b2", blind=True)
    assert (blind.blind, blind.right_turn_id, across.blind, across.right_turn_id) == (True, None, True, 1)
    assert [(r.round, r.wins) for r in vote_win_rates(engine, "original", n_boot=200)] == [(2, 1)]
    with engine.connect() as c, pytest.raises(Exception, match="CHECK constraint failed: ck_votes_right_turn_other"):
        c.execute(text("INSERT INTO votes (turn_id, left_round, right_round, right_turn_id, high_round, high_score,"
                       " choice, blind, key, created_at) VALUES (1, 1, 1, 1, 1, 2, 'right', 1, 'bad', '2026-01-01')"))
    with engine.connect() as c, pytest.raises(Exception, match="CHECK constraint failed: ck_votes_rounds_differ"):
        c.execute(text("INSERT INTO votes (turn_id, left_round, right_round, high_round, high_score,"
                       " choice, blind, key, created_at) VALUES (1, 1, 1, 1, 2, 'right', 1, 'bad', '2026-01-01')"))

    downgrade(engine, "0006")  # the columns go, and the vote across two turns with them
    assert current(engine) == "0006"
    with engine.connect() as c:
        columns = {row[1] for row in c.execute(text("PRAGMA table_info(votes)"))}
        assert not {"blind", "right_turn_id"} & columns
        assert c.execute(text("SELECT key FROM votes WHERE key LIKE 'b%'")).scalars().all() == ["b1"]
        with pytest.raises(Exception, match="CHECK constraint failed: ck_votes_rounds_differ"):
            c.execute(text("INSERT INTO votes (turn_id, left_round, right_round, high_round, high_score, choice, key,"
                           " created_at) VALUES (1, 1, 1, 1, 2, 'right', 'bad', '2026-01-01')"))
    after = dump(engine)
    assert {t: rows[:len(before[t])] for t, rows in after.items()} == before
    upgrade(engine, "0007")
    assert current(engine) == "0007"
    with engine.connect() as c:  # what was blind before the downgrade is no longer known
        assert c.execute(text("SELECT blind FROM votes WHERE key = 'b1'")).scalar_one() == 0


def test_0008_keys_feedback_so_the_same_feedback_is_stored_once(engine: Engine) -> None:
    from db.store import feedback_key, save_feedback

    upgrade(engine, "0001")
    with engine.begin() as c:
        for statement in OLD_ROWS.split(";"):
            if statement.strip():
                c.execute(text(statement))
    upgrade(engine, "0007")
    with engine.begin() as c:
        c.execute(text("INSERT INTO feedback (id, turn_id, round_index, critique, edited_answer, voter_hash, created_at)"
                       " VALUES (1, 1, 2, 'Too long.', NULL, 'h1', '2026-01-02'), (2, 1, 2, 'Too long.', NULL, 'h1',"
                       " '2026-01-02'), (3, 1, 0, NULL, 'Hi.', NULL, '2026-01-03')"))  # 1 and 2: saved twice
    upgrade(engine, "0008")
    with engine.connect() as c:
        rows = c.execute(text("SELECT id, key FROM feedback ORDER BY id")).all()
    # every row stays; the first of the two identical ones gets the key, the duplicate none
    assert rows == [(1, feedback_key(1, 2, "Too long.", None)), (2, None), (3, feedback_key(1, 0, None, "Hi."))]
    assert save_feedback(engine, turn_id=1, round_index=2, critique="Too long.") == (1, False)
    assert save_feedback(engine, turn_id=1, round_index=1, critique="Too long.")[1] is True
    with engine.connect() as c, pytest.raises(Exception, match="UNIQUE constraint failed: feedback.key"):
        c.execute(text("INSERT INTO feedback (turn_id, round_index, critique, key, created_at) "
                       "VALUES (1, 0, 'x', :key, '2026-01-04')"), dict(key=rows[0][1]))
    downgrade(engine, "0007")
    with engine.connect() as c:
        assert "key" not in {row[1] for row in c.execute(text("PRAGMA table_info(feedback)"))}
        assert c.execute(text("SELECT COUNT(*) FROM feedback")).scalar_one() == 4


def test_downgrade_and_upgrade_again_keep_votes(engine: Engine) -> None:
    upgrade(engine, "0001")
    with engine.begin() as c:
        for statement in OLD_ROWS.split(";"):
            if statement.strip():
                c.execute(text(statement))
    upgrade(engine)
    before = dump(engine)
    downgrade(engine, "0001")
    assert current(engine) == "0001"
    upgrade(engine)
    assert dump(engine) == before
    downgrade(engine, "base")
    assert current(engine) is None


def test_models_match_the_migrations(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_db_commands_upgrade_and_report_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no alembic.ini here: the config is built in code
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "current", "--db", url])
    assert result.exit_code == 0, result.output
    assert f"empty (head: {HEAD}, needs `python -m refine db upgrade`)" in result.output
    result = runner.invoke(cli, ["db", "upgrade", "--db", url, "--revision", "0002"])
    assert result.exit_code == 0 and "empty -> 0002" in result.output, result.output
    monkeypatch.setenv("REFINE_DATABASE_URL", url)  # the settings' URL is the default
    result = runner.invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0 and f"0002 -> {HEAD}" in result.output, result.output
    result = runner.invoke(cli, ["db", "current"])
    assert f"{HEAD} (head: {HEAD}, up to date)" in result.output


def test_processes_starting_together_upgrade_one_after_another(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = ("import sys, time; from db import open_database; time.sleep(max(0, float(sys.argv[2]) - time.time()));"
            " open_database(sys.argv[1]).dispose(); print('ok')")
    start = str(time.time() + 3)
    procs = [subprocess.Popen([sys.executable, "-c", code, url, start], cwd=root, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    assert current(url) == head()
