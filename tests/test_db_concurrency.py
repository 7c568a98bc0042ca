"""Concurrent writers and a writer killed mid-transaction, on real SQLite files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from db import open_database
from db.engine import make_engine
from db.models import Turn, Vote
from db.store import record_round, record_turn, record_vote
from refine.events import RoundDone

ROOT = Path(__file__).resolve().parent.parent
TURNS = 10


def run_python(code: str, *args: str) -> subprocess.Popen:
    """Start `python -c code args…` from the repository root, output captured."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def prepare(path: Path) -> str:
    url = f"sqlite:///{path}"
    engine = open_database(url)
    for t in range(TURNS):
        turn = record_turn(engine, prompt=f"q{t}", answer="a0", model="m", backend="local")
        record_round(engine, turn, RoundDone(round=1, model="c", critique="c", revision="a1", status="complete"))
    engine.dispose()
    return url


# Votes i = 0..n-1 as "<prefix>-<i>", plus every shared key "dup-<j>", which all writers
# submit at the same time; errors are printed (and fail the test).
PROCESS_WRITER = """
import sys, time
from db.engine import make_engine
from db.store import record_vote
url, prefix, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
engine = make_engine(url)
time.sleep(max(0.0, start - time.time()))
for i in range(n):
    record_vote(engine, turn_id=1 + i % 10, left_round=i % 2, right_round=1 - i % 2, choice="left",
                key=f"{prefix}-{i}")
    if i % 10 == 0:
        record_vote(engine, turn_id=1, left_round=0, right_round=1, choice="tie", key=f"dup-{i // 10}")
print("done", n)
"""


def test_32_threads_and_4_processes_write_votes_at_once(tmp_path: Path) -> None:
    url = prepare(tmp_path / "refine.db")
    per_thread, per_process = 40, 200
    start = time.time() + 4.0  # time for the processes to import and connect
    processes = [run_python(PROCESS_WRITER, url, f"p{p}", str(per_process), str(start)) for p in range(4)]
    engine = make_engine(url)
    errors: list[BaseException] = []

    def thread_writer(t: int) -> None:
        time.sleep(max(0.0, start - time.time()))
        try:
            for i in range(per_thread):
                record_vote(engine, turn_id=1 + i % TURNS, left_round=1, right_round=0,
                            choice=("left", "right", "tie", "both_bad")[i % 4], key=f"t{t}-{i}")
                if i % 10 == 0:
                    record_vote(engine, turn_id=1, left_round=0, right_round=1, choice="tie", key=f"dup-{i // 10}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(t,)) for t in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    outputs = [p.communicate(timeout=120) for p in processes]

    assert errors == []
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in outputs]
    assert all("locked" not in out + err for out, err in outputs)
    with engine.connect() as c:
        keys = set(c.scalars(select(Vote.key)))
    expected = {f"t{t}-{i}" for t in range(32) for i in range(per_thread)}
    expected |= {f"p{p}-{i}" for p in range(4) for i in range(per_process)}
    expected |= {f"dup-{j}" for j in range(per_process // 10)}
    assert keys == expected  # every vote present, each shared key exactly once (keys are unique)
    engine.dispose()


KILLED_WRITER = """
import sys, time
from sqlalchemy import insert
from db.engine import make_engine, write_connection
from db.models import Turn
from db.store import record_vote
url, committed = sys.argv[1], int(sys.argv[2])
engine = make_engine(url)
for i in range(committed):
    record_vote(engine, turn_id=1 + i % 10, left_round=1, right_round=0, choice="right", key=f"c-{i}")
    print("committed", i, flush=True)
if committed == 0:  # write until killed, printing each key once its commit returned
    i = 0
    while True:
        record_vote(engine, turn_id=1 + i % 10, left_round=1, right_round=0, choice="left", key=f"c-{i}")
        print("committed", i, flush=True)
        i += 1
with write_connection(engine) as connection:
    # ~10 MB: more than SQLite's page cache, so uncommitted pages spill into the WAL file.
    for j in range(200):
        connection.execute(insert(Turn), dict(conversation_id=1, position=1000 + j, prompt="p",
            messages=[], backend="local", model="m", answer=str(j) * 50_000))
    print("in transaction", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("committed", [300, 0], ids=["inside-big-transaction", "while-committing"])
def test_writer_killed_mid_transaction_loses_nothing_committed(tmp_path: Path, committed: int) -> None:
    url = prepare(tmp_path / "refine.db")
    writer = run_python(KILLED_WRITER, url, str(committed))
    printed = []
    for line in writer.stdout:
        if line.startswith("committed"):
            printed.append(int(line.split()[1]))
        if line.startswith("in transaction") or (committed == 0 and len(printed) >= 300):
            break
    if committed:  # the uncommitted pages are on disk, in the WAL, when the writer dies
        assert (tmp_path / "refine.db-wal").stat().st_size > 4_000_000
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read()
    # What the writer printed before it died but we had not read yet.
    printed += [int(line.split()[1]) for line in writer.stdout.read().splitlines() if line.startswith("committed")]
    assert len(printed) >= 300

    engine = make_engine(url)
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert c.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        stored = set(c.scalars(select(Vote.key)))
        turns = c.scalar(select(func.count()).select_from(Turn))
    assert {f"c-{i}" for i in printed} <= stored  # every commit that returned is there
    assert len(stored) <= len(printed) + 1  # at most the one in flight when killed
    assert turns == TURNS  # nothing of the uncommitted transaction
    # The database still takes writes.
    assert record_vote(engine, turn_id=1, left_round=0, right_round=1, choice="tie", key="after").id
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM votes WHERE key = 'after'")).scalar() == 1
    engine.dispose()
