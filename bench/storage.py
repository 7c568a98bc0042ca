"""Storage benchmark: vote writes through db.store.record_vote with 1 and 16 concurrent
writers on SQLite (WAL), against a bare sqlite3 insert loop in the same run, and the time to
compute win-rate statistics over 1,000,000 votes.

    python bench/storage.py [--votes 8000] [--stats-votes 1000000] [--dir /tmp/x]

Targets: >= 2,000 votes/s and p99 <= 20 ms with 16 writers; statistics over 1M votes <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db import open_database  # noqa: E402
from db.models import high_score  # noqa: E402
from db.stats import vote_win_rates  # noqa: E402
from db.store import record_round, record_turn, record_vote  # noqa: E402
from refine.events import RoundDone  # noqa: E402

ROUNDS = 3
TURNS = 200


def fresh_db(folder: Path, name: str) -> Path:
    """A new database at the newest schema with TURNS turns of ROUNDS complete rounds each."""
    path = folder / f"{name}.db"
    engine = open_database(f"sqlite:///{path}")
    for t in range(TURNS):
        turn = record_turn(engine, prompt=f"prompt {t}", answer="answer", model="base", backend="local")
        for k in range(1, ROUNDS + 1):
            record_round(engine, turn, RoundDone(round=k, model="cnr", critique="c", revision=f"r{k}",
                                                 status="complete"))
    engine.dispose()
    return path


def vote_args(i: int) -> dict:
    """The i-th vote: a pseudo-random turn, pair and choice."""
    k = 1 + i % ROUNDS
    return dict(turn_id=1 + (i * 7919) % TURNS, left_round=k, right_round=(k - 1) * (i % 2),
                choice=("left", "right", "tie", "both_bad")[i % 4], key=f"vote-{i}", voter_hash="v" * 64)


def run(writers: int, total: int, write: Callable[[int], None]) -> tuple[float, np.ndarray, float]:
    """Run `total` writes split over `writers` threads; (votes/s, latencies in seconds, CPU
    seconds of this process per vote)."""
    latencies = np.zeros(total)
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers + 1)

    def worker(w: int) -> None:
        barrier.wait()
        try:
            for i in range(w, total, writers):
                start = time.perf_counter()
                write(i)
                latencies[i] = time.perf_counter() - start
        except BaseException as exc:  # report, don't hang the benchmark
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if errors:
        raise errors[0]
    return total / elapsed, latencies, cpu / total


def bench_store(path: Path, writers: int, total: int) -> tuple[float, np.ndarray, float]:
    from db.engine import make_engine

    engine = make_engine(f"sqlite:///{path}", pool_size=writers, max_overflow=0)
    try:
        return run(writers, total, lambda i: record_vote(engine, **vote_args(i)))
    finally:
        engine.dispose()


def bench_sqlite3(path: Path, writers: int, total: int) -> tuple[float, np.ndarray, float]:
    """The baseline: one plain sqlite3 connection per thread, one INSERT per transaction."""
    local = threading.local()
    connections: list[sqlite3.Connection] = []
    sql = ("INSERT INTO votes (turn_id, left_round, right_round, high_round, high_score, choice, key, voter_hash,"
           " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, datetime('now'))")

    def write(i: int) -> None:
        if not hasattr(local, "con"):
            local.con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            local.con.execute("PRAGMA synchronous = NORMAL")
            connections.append(local.con)
        v = vote_args(i)
        local.con.execute("BEGIN IMMEDIATE")
        local.con.execute(sql, (v["turn_id"], v["left_round"], v["right_round"],
                                max(v["left_round"], v["right_round"]),
                                high_score(v["left_round"], v["right_round"], v["choice"]), v["choice"], v["key"],
                                v["voter_hash"]))
        local.con.execute("COMMIT")

    try:
        return run(writers, total, write)
    finally:
        for con in connections:
            con.close()


def fill_votes(path: Path, n_votes: int, n_turns: int, seed: int = 0) -> dict[int, float]:
    """Insert `n_votes` votes on `n_turns` turns (bulk, bare sqlite3) in which round k beats
    the original with a known probability; returns the expected win rate per round."""
    rng = np.random.default_rng(seed)
    con = sqlite3.connect(path)
    con.execute("INSERT INTO conversations (created_at) VALUES (datetime('now'))")
    conversation = con.execute("SELECT max(id) FROM conversations").fetchone()[0]
    first = con.execute("SELECT coalesce(max(id), 0) FROM turns").fetchone()[0] + 1
    con.executemany(
        "INSERT INTO turns (id, conversation_id, position, prompt, messages, backend, model, answer, given,"
        " duration, tokens, created_at) VALUES (?, ?, ?, 'p', '[]', 'local', 'm', 'a', 0, 0, 0, datetime('now'))",
        ((first + t, conversation, t) for t in range(n_turns)))
    k = rng.integers(1, ROUNDS + 1, n_votes)
    p_win = {1: 0.55, 2: 0.65, 3: 0.70}
    win = rng.random(n_votes) < np.vectorize(p_win.get)(k)
    k_left = rng.random(n_votes) < 0.5
    choice = np.where(win == k_left, "left", "right")
    left = np.where(k_left, k, 0)
    right = np.where(k_left, 0, k)
    turns = first + rng.integers(0, n_turns, n_votes)
    con.executemany(
        "INSERT INTO votes (turn_id, left_round, right_round, high_round, high_score, choice, blind, key, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 1, 'bulk-' || ?, '2026-01-01 00:00:00')",  # blind: the statistics' headline
        zip(turns.tolist(), left.tolist(), right.tolist(), k.tolist(), np.where(win, 2, 0).tolist(), choice.tolist(),
            range(n_votes)))
    con.commit()
    con.close()
    return p_win


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votes", type=int, default=8000, help="votes per write run")
    parser.add_argument("--stats-votes", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database files")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="refine-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL; files in {folder}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")

    print(f"\nvote writes ({args.votes} per run, one transaction per vote)")
    print(f"{'writers':>7}  {'method':<22} {'votes/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/vote':>12}")
    results = {}
    for writers in (1, 16):
        for name, bench in (("bare sqlite3", bench_sqlite3), ("db.store.record_vote", bench_store)):
            rate, lat, cpu = bench(fresh_db(folder, f"{name.split()[0]}-{writers}"), writers, args.votes)
            p50, p99 = np.percentile(lat, [50, 99]) * 1000
            results[writers, name] = rate, p99
            print(f"{writers:>7}  {name:<22} {rate:>9,.0f} {p50:>8.2f} {p99:>8.2f} {cpu * 1e6:>12.0f}")
        base, ours = results[writers, "bare sqlite3"], results[writers, "db.store.record_vote"]
        print(f"{'':>7}  ratio store/bare: throughput {ours[0] / base[0]:.2f}x, p99 {ours[1] / base[1]:.1f}x")

    print(f"\nstatistics over {args.stats_votes:,} votes on {max(1, args.stats_votes // 10):,} turns, 3 rounds")
    path = fresh_db(folder, "stats")
    start = time.perf_counter()
    expected = fill_votes(path, args.stats_votes, n_turns=max(1, args.stats_votes // 10))
    print(f"  (generated in {time.perf_counter() - start:.1f} s)")
    engine = open_database(f"sqlite:///{path}")
    for versus in ("original", "previous"):
        times, cpus = [], []
        for _ in range(3):
            start, cpu = time.perf_counter(), time.process_time()
            vote_win_rates(engine, versus)
            times.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
        print(f"  vote_win_rates(versus={versus!r}): first {times[0]:.3f} s, best of 3 {min(times):.3f} s"
              f" (CPU {min(cpus):.3f} s)")
    for r in vote_win_rates(engine, "original"):
        if r.round in expected:
            print(f"  round {r.round}: {100 * r.rate:.2f}% [{100 * r.ci_low:.2f}, {100 * r.ci_high:.2f}]"
                  f" (generated with {100 * expected[r.round]:.0f}%, n={r.n:,})")
    engine.dispose()


if __name__ == "__main__":
    main()
