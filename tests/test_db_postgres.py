"""The same storage code against a real PostgreSQL server (several app replicas share one).

Skipped unless REFINE_TEST_POSTGRES_URL names a server whose user may create databases, e.g.
    REFINE_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres
(needs the psycopg driver). Each test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from db import open_database
from db.engine import make_engine, write_session
from db.errors import InvalidInput
from db.export import feedback_rows, preference_rows, table_rows
from db.migrate import current, downgrade, head, upgrade
from db.models import Base, Conversation, Round, Turn, Vote
from db.arena import candidate_pairs
from db.stats import model_head_to_head, vote_win_rates, vote_win_rates_by_model
from db.store import record_feedback, record_round, record_turn, record_vote
from refine.events import RoundDone

SERVER = os.environ.get("REFINE_TEST_POSTGRES_URL")


def _admin() -> Engine:
    if not SERVER:
        pytest.skip("set REFINE_TEST_POSTGRES_URL to run the PostgreSQL tests")
    try:
        engine = create_engine(SERVER, isolation_level="AUTOCOMMIT")
        with engine.connect():
            pass
    except Exception as exc:  # no driver, or no server
        pytest.skip(f"PostgreSQL not reachable at {SERVER}: {exc}")
    return engine


@pytest.fixture
def pg_url() -> str:
    admin = _admin()
    name = f"refine_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def fill(engine: Engine, seed: int = 0) -> None:
    """Turns with rounds, votes of known odds, feedback: identical for any database."""
    rng = np.random.default_rng(seed)
    turns = [record_turn(engine, prompt=f"q{i} 'quoted' 😀", answer=f"a{i}", model="m", backend="local")
             for i in range(40)]
    for t in turns:
        for k in (1, 2):
            record_round(engine, t, RoundDone(round=k, model="c", critique="c", revision=f"r{k}-{t}",
                                              status="complete"))
    for i in range(600):
        k = int(rng.integers(1, 3))
        other = int(rng.integers(0, k))
        left, right = (k, other) if rng.random() < 0.5 else (other, k)
        choice = str(rng.choice(["left", "right", "tie", "both_bad"], p=[0.5, 0.3, 0.15, 0.05]))
        record_vote(engine, turn_id=turns[int(rng.integers(0, 40))], left_round=left, right_round=right,
                    choice=choice, key=f"v{i}", blind=bool(i % 2))
    for t in turns[:10]:
        record_feedback(engine, turn_id=t, round_index=t % 3, critique=f"c{t}", edited_answer=f"e{t}")
    # The same prompt and answer revised by two CnR models: Arena pairs across turns, and a vote on one.
    twins = [record_turn(engine, prompt="twin", answer="same", model="m", backend="local") for _ in range(2)]
    for t, model in zip(twins, ("c", "other")):
        record_round(engine, t, RoundDone(round=1, model=model, critique="c", revision=f"by {model}", status="complete"))
    record_vote(engine, turn_id=twins[1], left_round=1, right_turn_id=twins[0], right_round=1, choice="right",
                key="across", blind=True)


def test_migrations_upgrade_with_rows_and_match_the_models(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine, "0002")
    with engine.begin() as c:
        c.execute(insert(Conversation.__table__), [{"id": 1, "created_at": "2026-01-01T00:00:00Z"}])
        c.execute(insert(Turn.__table__).values(id=1, conversation_id=1, position=0, prompt="p", messages=[],
                                                backend="local", model="m", answer="a", given=False, duration=0,
                                                tokens=0, created_at="2026-01-01T00:00:00Z"))
        c.execute(text("INSERT INTO votes (turn_id, left_round, right_round, choice, key, created_at)"
                       " VALUES (1, 3, 2, 'left', 'a', now()), (1, 0, 1, 'tie', 'b', now())"))
    upgrade(engine)
    assert current(engine) == head()
    with engine.connect() as c:
        assert c.execute(text("SELECT key, high_round, high_score FROM votes ORDER BY key")).all() == [
            ("a", 3, 2), ("b", 1, 1)]
        assert compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata) == []
    downgrade(engine, "base")
    assert current(engine) is None
    upgrade(engine)
    engine.dispose()


def test_writes_refusals_and_verbatim_texts(pg_url: str) -> None:
    engine = open_database(pg_url)
    strange = "Robert'); DROP TABLE votes;-- %s $1 :x ? 漢字 👩‍💻 \\ " + "😀" * 1000
    turn = record_turn(engine, prompt=strange, answer=strange, model="m", backend="local")
    record_round(engine, turn, RoundDone(round=1, model="c", critique=strange, revision=strange, status="complete"))
    first = record_vote(engine, turn_id=turn, left_round=1, right_round=0, choice="left", key=strange[:128])
    assert record_vote(engine, turn_id=turn, left_round=0, right_round=1, choice="tie", key=strange[:128]) == first
    for kwargs, message in [(dict(turn_id=turn + 1), "does not exist"), (dict(left_round=2), "no complete round 2"),
                            (dict(choice="meh"), "choice must be")]:
        with pytest.raises(InvalidInput, match=message):
            record_vote(engine, **(dict(turn_id=turn, left_round=1, right_round=0, choice="right", key="k") | kwargs))
    with pytest.raises(InvalidInput, match="NUL"):  # PostgreSQL text cannot hold NUL: refused up front
        record_feedback(engine, turn_id=turn, round_index=1, critique="a\x00b")
    with engine.connect() as c:
        assert c.scalar(select(Turn.prompt)) == strange and c.scalar(select(Round.revision)) == strange
        assert c.scalar(select(func.count()).select_from(Vote)) == 1
    engine.dispose()


def test_concurrent_writers_and_duplicate_keys(pg_url: str) -> None:
    engine = open_database(pg_url)
    [turn] = [record_turn(engine, prompt="q", answer="a", model="m", backend="local")]
    record_round(engine, turn, RoundDone(round=1, model="c", critique="c", revision="r", status="complete"))
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def writer(w: int) -> None:
        barrier.wait()
        try:
            for i in range(30):
                record_vote(engine, turn_id=turn, left_round=1, right_round=0, choice="left", key=f"w{w}-{i}")
                record_vote(engine, turn_id=turn, left_round=0, right_round=1, choice="tie", key=f"shared-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with engine.connect() as c:
        keys = list(c.scalars(select(Vote.key)))
    assert sorted(keys) == sorted([f"w{w}-{i}" for w in range(16) for i in range(30)] + [f"shared-{i}" for i in range(30)])
    engine.dispose()


def test_statistics_and_exports_equal_sqlites(pg_url: str, tmp_path: Path) -> None:
    engines = [open_database(pg_url), open_database(f"sqlite:///{tmp_path / 'same.db'}")]
    for engine in engines:
        fill(engine)

    def results(engine: Engine) -> tuple:
        with engine.connect() as c:
            pairs = sorted(candidate_pairs(c))
        return (vote_win_rates(engine, "original"), vote_win_rates(engine, "previous"),
                vote_win_rates(engine, "original", blind=False), vote_win_rates_by_model(engine),
                model_head_to_head(engine), pairs,
                list(preference_rows(engine)),
                [{k: v for k, v in r.items() if k != "meta"} for r in feedback_rows(engine)],
                [{k: v for k, v in r.items() if k != "created_at"} for r in table_rows(engine, "rounds")])

    pg, lite = (results(e) for e in engines)
    assert pg == lite
    assert len(pg[0]) == len(pg[2]) == 2 and len(pg[6]) > 400 and len(pg[7]) == 10
    [across] = pg[4]  # "c" beat "other" in the blind vote across the two turns
    assert (across.first, across.second, across.rate.wins) == ("c", "other", 1)
    assert sum(kind == "models" for kind, *_ in pg[5]) == 1
    with write_session(engines[0]) as s:  # ORM sessions work the same way too
        assert s.scalar(select(func.count()).select_from(Vote)) == 601
    for engine in engines:
        engine.dispose()
