"""Win rate of each round from the stored votes, aggregated in SQL so a million votes take
well under a second: the database reduces votes to per-turn sums while scanning the
statistics index in order, then those to the few distinct per-turn outcomes per round;
numpy bootstraps over turns from there (refine.winrate).

Blind votes (the Arena: the voter did not know which version was which) and the votes cast
beside the Refinement panel (which names the versions) are always counted apart."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, Engine, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from db.models import Round, Vote
from refine.winrate import WinRate, vote_ci, win_rate

Versus = Literal["original", "previous"]


def _patterns(versus: Versus, blind: bool = True, by_model: bool = False) -> Select:
    """Per round k: (points, wins, n, turns, both_bad) for each distinct per-turn outcome,
    where points = 2·wins + ties and n = wins + ties + losses of round k in that turn; from the
    blind votes or from the others, never both; with `by_model`, also per CnR model of round k
    (`model`, `adapter`). Votes across two turns (two CnR models) are left out."""
    v = Vote.__table__.c
    if versus == "original":
        pair = or_(v.left_round == 0, v.right_round == 0)
    elif versus == "previous":
        pair = or_(v.left_round - v.right_round == 1, v.right_round - v.left_round == 1)
    else:
        raise ValueError(f"versus must be 'original' or 'previous', got {versus!r}")
    # high_score: the later version's points (2 won, 1 tie, 0 lost, NULL both bad).
    per_turn = (
        select(v.turn_id, v.high_round.label("k"), func.sum(v.high_score).label("points"),
               func.sum(v.high_score // 2).label("wins"), func.count(v.high_score).label("n"),
               (func.count() - func.count(v.high_score)).label("both_bad"))
        .where(v.blind == blind, v.right_turn_id.is_(None), pair)
        .group_by(v.turn_id, v.high_round)  # the statistics index's order: no sort
        .subquery()
    )
    c = per_turn.c
    outcome = (c.k, c.points, c.wins, c.n)
    if not by_model:
        return (select(*outcome, func.count().label("turns"), func.sum(c.both_bad).label("both_bad"))
                .group_by(*outcome)
                .order_by(c.k))
    r = Round.__table__.c
    model = (r.model, r.adapter)
    return (select(*model, *outcome, func.count().label("turns"), func.sum(c.both_bad).label("both_bad"))
            .select_from(per_turn.join(Round, and_(r.turn_id == c.turn_id, r.round_index == c.k)))
            .group_by(*model, *outcome)
            .order_by(*model, c.k))


def _rows(bind: Engine | Connection | Session, statement: Select) -> list:
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return connection.execute(statement).all()
    return bind.execute(statement).all()


def _rates(rows: list, n_boot: int, seed: int, level: float) -> list[WinRate]:
    by_round: dict[int, list] = {}
    for row in rows:
        by_round.setdefault(row.k, []).append(row)
    results = []
    for k, group in sorted(by_round.items()):
        wins = [r.wins or 0 for r in group]
        ties = [(r.points or 0) - 2 * w for r, w in zip(group, wins)]
        losses = [r.n - w - t for r, w, t in zip(group, wins, ties)]
        rate = win_rate(k, wins, ties, losses, weights=[r.turns for r in group],
                        n_boot=n_boot, seed=seed, level=level)
        results.append(vote_ci(replace(rate, both_bad=int(sum(r.both_bad for r in group)))))
    return results


def vote_win_rates(bind: Engine | Connection | Session, versus: Versus = "original", *, blind: bool = True,
                   n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[WinRate]:
    """For each round k with votes, the win rate of round k against the original answer
    (`versus="original"`) or against round k−1 (`"previous"`), whichever side it was shown
    on; ties count half, both-bad votes are counted apart; bootstrap CI over turns (none, NaN, below
    refine.winrate.MIN_VOTES comparisons). From the
    blind votes (the Arena) by default, or with `blind=False` from the votes cast beside the
    Refinement panel, which names the versions: the two are never mixed."""
    return _rates(_rows(bind, _patterns(versus, blind)), n_boot, seed, level)


def model_name(model: str, adapter: str | None) -> str:
    """How statistics name a CnR model: its id, and its adapter's name when it has one (the
    folder's name for a local adapter, not the server's path)."""
    if not adapter:
        return model
    shown = Path(adapter).name if adapter.startswith(("/", ".", "~")) or "\\" in adapter else adapter
    return f"{model} + {shown or adapter}"


def vote_win_rates_by_model(bind: Engine | Connection | Session, versus: Versus = "original", *,
                            blind: bool = True, n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> dict[str, list[WinRate]]:
    """`vote_win_rates` for each CnR model (the model and adapter of round k), by model_name."""
    groups: dict[str, list] = {}
    for row in _rows(bind, _patterns(versus, blind, by_model=True)):
        groups.setdefault(model_name(row.model, row.adapter), []).append(row)
    return {name: _rates(rows, n_boot, seed, level) for name, rows in sorted(groups.items())}


@dataclass(frozen=True)
class HeadToHead:
    """Blind votes between two CnR models' revision `rate.round` of the same prompt's answer:
    `rate` is `first`'s win rate against `second` (bootstrap CI over prompts; none below MIN_VOTES)."""

    first: str
    second: str
    rate: WinRate


def model_head_to_head(bind: Engine | Connection | Session, *, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> list[HeadToHead]:
    """The blind votes that compared two CnR models' revisions of the same answer (the Arena's
    votes across two turns), per pair of models and round."""
    v = Vote.__table__.c
    left, right = Round.__table__.alias("left_round"), Round.__table__.alias("right_round")
    statement = (
        select(v.turn_id, v.right_turn_id, v.left_round, v.choice, left.c.model.label("left_model"),
               left.c.adapter.label("left_adapter"), right.c.model.label("right_model"),
               right.c.adapter.label("right_adapter"))
        .join(left, and_(left.c.turn_id == v.turn_id, left.c.round_index == v.left_round))
        .join(right, and_(right.c.turn_id == v.right_turn_id, right.c.round_index == v.right_round))
        .where(v.blind.is_(True), v.right_turn_id.is_not(None))
    )
    # (first, second, round) -> prompt (pair of turns) -> [wins, ties, losses, both bad] of `first`
    counts: dict[tuple[str, str, int], dict[tuple[int, int], list[int]]] = {}
    for row in _rows(bind, statement):
        sides = [(model_name(row.left_model, row.left_adapter), row.turn_id, "left"),
                 (model_name(row.right_model, row.right_adapter), row.right_turn_id, "right")]
        (first, first_turn, first_side), (second, second_turn, _) = sorted(sides)
        if first == second:
            continue
        outcome = {"tie": 1, "both_bad": 3}.get(row.choice, 0 if row.choice == first_side else 2)
        unit = counts.setdefault((first, second, row.left_round), {}).setdefault(
            (min(first_turn, second_turn), max(first_turn, second_turn)), [0, 0, 0, 0])
        unit[outcome] += 1
    results = []
    for (first, second, k), units in sorted(counts.items()):
        wins, ties, losses, both_bad = (list(column) for column in zip(*units.values()))
        results.append(HeadToHead(first, second, vote_ci(win_rate(k, wins, ties, losses, both_bad, n_boot=n_boot,
                                                                   seed=seed, level=level))))
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
