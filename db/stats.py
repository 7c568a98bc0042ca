"""Win rate of each round from the stored votes, aggregated in SQL so a million votes take
well under a second: the database reduces votes to per-turn sums while scanning the
statistics index in order, then those to the few distinct per-turn outcomes per round;
numpy bootstraps over turns from there (refine.winrate)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from sqlalchemy import Connection, Engine, Select, func, or_, select
from sqlalchemy.orm import Session

from db.models import Round, Vote
from refine.winrate import WinRate, win_rate

Versus = Literal["original", "previous"]


def _patterns(versus: Versus) -> Select:
    """Per round k: (points, wins, n, turns, both_bad) for each distinct per-turn outcome,
    where points = 2·wins + ties and n = wins + ties + losses of round k in that turn."""
    v = Vote.__table__.c
    if versus == "original":
        pair = or_(v.left_round == 0, v.right_round == 0)
    elif versus == "previous":
        pair = or_(v.left_round - v.right_round == 1, v.right_round - v.left_round == 1)
    else:
        raise ValueError(f"versus must be 'original' or 'previous', got {versus!r}")
    # high_score: the later version's points (2 won, 1 tie, 0 lost, NULL both bad).
    per_turn = (
        select(v.high_round.label("k"), func.sum(v.high_score).label("points"),
               func.sum(v.high_score // 2).label("wins"), func.count(v.high_score).label("n"),
               (func.count() - func.count(v.high_score)).label("both_bad"))
        .where(pair)
        .group_by(v.turn_id, v.high_round)  # the statistics index's order: no sort
        .subquery()
    )
    c = per_turn.c
    return (select(c.k, c.points, c.wins, c.n, func.count().label("turns"), func.sum(c.both_bad).label("both_bad"))
            .group_by(c.k, c.points, c.wins, c.n)
            .order_by(c.k))


def _rows(bind: Engine | Connection | Session, statement: Select) -> list:
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return connection.execute(statement).all()
    return bind.execute(statement).all()


def vote_win_rates(bind: Engine | Connection | Session, versus: Versus = "original", *,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[WinRate]:
    """For each round k with votes, the win rate of round k against the original answer
    (`versus="original"`) or against round k−1 (`"previous"`), whichever side it was shown
    on; ties count half, both-bad votes are counted apart; bootstrap CI over turns."""
    by_round: dict[int, list] = {}
    for row in _rows(bind, _patterns(versus)):
        by_round.setdefault(row.k, []).append(row)
    results = []
    for k, rows in sorted(by_round.items()):
        wins = [r.wins or 0 for r in rows]
        ties = [(r.points or 0) - 2 * w for r, w in zip(rows, wins)]
        losses = [r.n - w - t for r, w, t in zip(rows, wins, ties)]
        rate = win_rate(k, wins, ties, losses, weights=[r.turns for r in rows],
                        n_boot=n_boot, seed=seed, level=level)
        results.append(replace(rate, both_bad=int(sum(r.both_bad for r in rows))))
    return results


def round_outcomes(bind: Engine | Connection | Session) -> list[dict]:
    """What became of the stored rounds, aggregated in SQL: one dict per (round, status,
    nothing_to_fix, rejection) with `n` rounds and their summed `tokens` and `duration` (s), the
    record shape `refine.outcomes.tally` reads."""
    r = Round.__table__.c
    statement = (select(r.round_index, r.status, r.nothing_to_fix, r.rejection, func.count().label("n"),
                        func.sum(r.tokens).label("tokens"), func.sum(r.duration).label("duration"))
                 .group_by(r.round_index, r.status, r.nothing_to_fix, r.rejection)
                 .order_by(r.round_index))
    return [{"round": row.round_index, "status": row.status, "nothing_to_fix": bool(row.nothing_to_fix),
             "rejection": row.rejection, "n": row.n, "tokens": row.tokens or 0, "duration": row.duration or 0.0}
            for row in _rows(bind, statement)]
