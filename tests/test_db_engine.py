"""Engine setup: SQLite pragmas, the default file location, and write transactions."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from db import open_database
from db.engine import FairLock, data_dir, default_url, make_engine, write_connection


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")  # missing folders are created
    with engine.connect() as c:
        pragmas = {name: c.exec_driver_sql(f"PRAGMA {name}").scalar()
                   for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
    assert pragmas == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000, "synchronous": 1}
    engine.dispose()


def test_default_file_is_in_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINE_DATA_DIR", str(tmp_path / "space-data"))
    assert data_dir() == tmp_path / "space-data"
    assert default_url() == f"sqlite:///{tmp_path / 'space-data' / 'refine.db'}"
    engine = open_database(None)
    assert (tmp_path / "space-data" / "refine.db").exists()
    engine.dispose()
    monkeypatch.delenv("REFINE_DATA_DIR")
    monkeypatch.setattr("os.path.isdir", lambda path: False)  # no /data (not a Space)
    assert data_dir() == Path("data")


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'fk.db'}")
    with pytest.raises(Exception, match="FOREIGN KEY constraint failed"), engine.begin() as c:
        c.execute(text("INSERT INTO votes (turn_id, left_round, right_round, high_round, high_score, choice, key,"
                       " created_at) VALUES (42, 0, 1, 1, 0, 'left', 'k', '2026-01-01')"))
    engine.dispose()


def test_write_transactions_take_the_lock_up_front_and_roll_back_on_error(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'tx.db'}")
    statements: list[str] = []
    with engine.connect() as c:
        c.connection.driver_connection.set_trace_callback(statements.append)
        c.execute(text("SELECT 1"))
    assert "BEGIN" in statements  # reads take no write lock
    with pytest.raises(RuntimeError), write_connection(engine) as c:
        c.connection.driver_connection.set_trace_callback(statements.append)
        c.execute(text("INSERT INTO conversations (created_at) VALUES ('2026-01-01')"))
        raise RuntimeError("boom")
    assert "BEGIN IMMEDIATE" in statements
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM conversations")).scalar() == 0
    engine.dispose()


def test_fair_lock_hands_over_in_arrival_order() -> None:
    lock, order = FairLock(), []
    lock.__enter__()
    threads = []
    for i in range(5):
        thread = threading.Thread(target=lambda i=i: (lock.__enter__(), order.append(i), lock.__exit__()))
        thread.start()
        threads.append(thread)
        while len(lock._waiters) < i + 1:  # wait until thread i queues
            threading.Event().wait(0.001)
    lock.__exit__()
    for thread in threads:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]
