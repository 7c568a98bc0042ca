"""Win rate of each round from the stored votes, aggregated in SQL so millions of votes take
well under a second: the database reduces votes to per-turn counts and those to a handful of
distinct (wins, ties, losses) patterns per round; numpy bootstraps over turns from there."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from sqlalchemy import Connection, Engine, Select, and_, case, func, not_, or_, select
from sqlalchemy.orm import Session

from db.models import Vote
from refine.winrate import WinRate, win_rate

Versus = Literal["original", "previous"]


def _patterns(versus: Versus) -> Select:
    """(round k, wins, ties, losses, turns, both-bad) per distinct per-turn outcome pattern."""
    v = Vote.__table__.c
    if versus == "original":
        pair = or_(v.left_round == 0, v.right_round == 0)
    elif versus == "previous":
        pair = or_(v.left_round - v.right_round == 1, v.right_round - v.left_round == 1)
    else:
        raise ValueError(f"versus must be 'original' or 'previous', got {versus!r}")
    k = v.high_round  # the round the vote is about, in both cases
    k_left = v.left_round == v.high_round  # round k was shown on the left
    won = or_(and_(v.choice == "left", k_left), and_(v.choice == "right", not_(k_left)))
    lost = or_(and_(v.choice == "right", k_left), and_(v.choice == "left", not_(k_left)))

    def count_if(condition) -> object:
        return func.sum(case((condition, 1), else_=0))

    per_turn = (
        select(k.label("k"), count_if(won).label("wins"), count_if(v.choice == "tie").label("ties"),
               count_if(lost).label("losses"), count_if(v.choice == "both_bad").label("both_bad"))
        .where(pair)
        .group_by(v.turn_id, k)  # the statistics index's order: no sort
        .subquery()
    )
    c = per_turn.c
    return (select(c.k, c.wins, c.ties, c.losses, func.count().label("turns"),
                   func.sum(c.both_bad).label("both_bad"))
            .group_by(c.k, c.wins, c.ties, c.losses)
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
        rate = win_rate(k, [r.wins for r in rows], [r.ties for r in rows], [r.losses for r in rows],
                        weights=[r.turns for r in rows], n_boot=n_boot, seed=seed, level=level)
        results.append(replace(rate, both_bad=int(sum(r.both_bad for r in rows))))
    return results
