"""The Arena's pairs: two versions of an answer from the stored turns (the app's, and those of
`python -m refine revise --db`), to be judged blind, and the blind votes on them.

A pair is one of: the original answer vs revision k of the same turn (`original`), revision
k−1 vs revision k (`previous`), or revision k of the same prompt's same answer by two different
CnR models, i.e. two turns whose rounds differ in model or adapter (`models`). Only accepted
versions take part: a base answer that did not fail, a round that is `complete` and not a
"nothing to fix" copy of the answer before it; two texts that are the same (ignoring case and
white space) are never paired.

Pairs are sampled fewest blind votes first, at random among equals, so votes spread over every
pair before any gets a second one.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, String, and_, cast, func, literal, select, union_all

from db.models import Round, Turn, Vote
from db.store import record_vote
from refine.cnr_format import normalize

Kind = Literal["original", "previous", "models"]
KEY_VERSION = "a1"  # of the idempotency keys of Arena votes


@dataclass(frozen=True)
class Side:
    """One version of an answer: `round` 0 is the base answer (by the base `model`), k the
    revision of round k (by the CnR `model` and `adapter`)."""

    turn_id: int
    round: int
    text: str
    model: str
    adapter: str | None = None

    @property
    def ref(self) -> tuple[int, int]:
        return (self.turn_id, self.round)


@dataclass(frozen=True)
class ArenaPair:
    """Two versions to compare, `a` before `b` in (turn, round) order (not the order shown):
    `messages` is the conversation they answer (ending with the prompt), `votes` the blind
    votes the pair had when it was drawn."""

    kind: Kind
    a: Side
    b: Side
    messages: list[dict[str, Any]]
    votes: int = 0

    @property
    def key(self) -> str:
        return pair_key(self.a.ref, self.b.ref)


def pair_key(a: tuple[int, int], b: tuple[int, int]) -> str:
    """A pair's name, the same in either order: 'turn.round-turn.round', lower first."""
    (ta, ra), (tb, rb) = sorted((a, b))
    return f"{ta}.{ra}-{tb}.{rb}"


def _accepted(r: Any) -> Any:
    return and_(r.c.status == "complete", r.c.nothing_to_fix.is_(False))


def _within_turns() -> Any:
    """Every pair of accepted versions of one turn whose texts differ exactly, as (kind, turn_a,
    round_a, turn_b, round_b), a before b: the original vs each revision, each revision vs the
    next. (Case and white space are compared later, in Python.)"""
    t = Turn.__table__.alias("t")
    r1, r2 = Round.__table__.alias("r1"), Round.__table__.alias("r2")
    columns = ("kind", "turn_a", "round_a", "turn_b", "round_b")

    def labelled(*values: Any) -> list[Any]:
        return [value.label(name) for value, name in zip(values, columns)]

    original = (select(*labelled(literal("original"), t.c.id, literal(0), t.c.id, r1.c.round_index))
                .select_from(t.join(r1, r1.c.turn_id == t.c.id))
                .where(t.c.error.is_(None), _accepted(r1), r1.c.revision != t.c.answer))
    previous = (select(*labelled(literal("previous"), r1.c.turn_id, r1.c.round_index, r2.c.turn_id,
                                 r2.c.round_index))
                .select_from(r1.join(r2, and_(r2.c.turn_id == r1.c.turn_id,
                                              r2.c.round_index == r1.c.round_index + 1)))
                .where(_accepted(r1), _accepted(r2), r1.c.revision != r2.c.revision))
    return union_all(original, previous)


def _across_models(connection: Connection) -> list[tuple[Kind, int, int, int, int]]:
    """Every pair of two turns with the same prompt and base answer, revised by two different CnR
    models (model or adapter), at the same round k that both accepted, with texts that differ
    (but for case and white space): ("models", turn_a, k, turn_b, k). The database groups the
    turns by their texts (a sort; no pairwise comparison); the few turns that share them are
    paired here."""
    t, r = Turn.__table__.c, Round.__table__
    revised = select(r.c.turn_id).where(_accepted(r))
    groups = (select(func.aggregate_strings(cast(t.id, String), ",").label("ids"))
              .where(t.error.is_(None), t.id.in_(revised))
              .group_by(t.prompt, t.answer)
              .having(func.count() > 1))
    turn_groups = [sorted(int(i) for i in row.ids.split(",")) for row in connection.execute(groups)]
    if not turn_groups:
        return []
    members = [turn for group in turn_groups for turn in group]
    rounds: dict[int, dict[int, tuple[str, str | None, str]]] = {}  # turn -> k -> (model, adapter, text)
    for start in range(0, len(members), 500):
        statement = (select(r.c.turn_id, r.c.round_index, r.c.model, r.c.adapter, r.c.revision)
                     .where(_accepted(r), r.c.turn_id.in_(members[start:start + 500])))
        for row in connection.execute(statement):
            rounds.setdefault(row.turn_id, {})[row.round_index] = (row.model, row.adapter, normalize(row.revision))
    found: list[tuple[Kind, int, int, int, int]] = []
    for group in turn_groups:
        for first, second in combinations(group, 2):
            a, b = rounds.get(first, {}), rounds.get(second, {})
            found += [("models", first, k, second, k) for k in sorted(a.keys() & b.keys())
                      if a[k][:2] != b[k][:2] and a[k][2] != b[k][2]]  # other model, other text
    return found


def candidate_pairs(connection: Connection) -> list[tuple[Kind, int, int, int, int]]:
    """Every pair worth judging as (kind, turn_a, round_a, turn_b, round_b), a before b; a few
    may still turn out to be the same text but for case and white space (see load_pair)."""
    within = [(row.kind, row.turn_a, row.round_a, row.turn_b, row.round_b)
              for row in connection.execute(_within_turns())]
    return within + _across_models(connection)


def blind_vote_counts(connection: Connection) -> dict[str, int]:
    """Blind votes so far, by pair_key."""
    v = Vote.__table__.c
    right_turn = func.coalesce(v.right_turn_id, v.turn_id)
    statement = (select(v.turn_id, v.left_round, right_turn.label("right_turn"), v.right_round,
                        func.count().label("n"))
                 .where(v.blind.is_(True))
                 .group_by(v.turn_id, v.left_round, right_turn, v.right_round))
    counts: dict[str, int] = {}
    for row in connection.execute(statement):
        key = pair_key((row.turn_id, row.left_round), (row.right_turn, row.right_round))
        counts[key] = counts.get(key, 0) + row.n
    return counts


def _side(connection: Connection, turn_id: int, index: int) -> tuple[Side, Row] | None:
    """A version with its turn's row, or None when it is no longer an accepted version."""
    turn = connection.execute(select(Turn.messages, Turn.prompt, Turn.answer, Turn.model, Turn.error)
                              .where(Turn.id == turn_id)).first()
    if turn is None:
        return None
    if index == 0:
        return (Side(turn_id, 0, turn.answer, turn.model), turn) if turn.error is None else None
    found = connection.execute(select(Round.revision, Round.model, Round.adapter).where(
        Round.turn_id == turn_id, Round.round_index == index, Round.status == "complete",
        Round.nothing_to_fix.is_(False))).first()
    return (Side(turn_id, index, found.revision, found.model, found.adapter), turn) if found else None


def load_pair(connection: Connection, kind: Kind, a: tuple[int, int], b: tuple[int, int],
              votes: int = 0) -> ArenaPair | None:
    """The pair of versions `a` and `b`, or None when it is not (or no longer) one to judge:
    a version is gone or not accepted, the texts are the same but for case and white space,
    or two turns' conversations differ."""
    first, second = _side(connection, *a), _side(connection, *b)
    if first is None or second is None:
        return None
    (side_a, turn_a), (side_b, turn_b) = first, second
    if normalize(side_a.text) == normalize(side_b.text):
        return None
    if side_a.turn_id != side_b.turn_id and (turn_a.messages != turn_b.messages or turn_a.answer != turn_b.answer):
        return None
    return ArenaPair(kind, side_a, side_b, list(turn_a.messages), votes)


def sample_pair(engine: Engine, *, exclude: Collection[str] = (), seen: Collection[str] = (),
                rng: random.Random | None = None) -> ArenaPair | None:
    """The next pair to judge: among the pairs not in `exclude` (by key; e.g. those the voter
    has judged), one with the fewest blind votes, at random among those, preferring pairs not
    in `seen` (e.g. shown to this voter already); None when there is none."""
    rng = rng or random.Random()
    with engine.connect() as connection:
        counts = blind_vote_counts(connection)
        ranked = []
        for kind, turn_a, round_a, turn_b, round_b in candidate_pairs(connection):
            key = pair_key((turn_a, round_a), (turn_b, round_b))
            if key not in exclude:
                ranked.append((key in seen, counts.get(key, 0), rng.random(), kind, (turn_a, round_a),
                               (turn_b, round_b)))
        ranked.sort(key=lambda item: item[:3])
        for _, votes, _, kind, a, b in ranked:
            pair = load_pair(connection, kind, a, b, votes)
            if pair is not None:
                return pair
    return None


def arena_vote_key(voter_hash: str, pair: ArenaPair) -> str:
    """The idempotency key of one voter's vote on one pair (one vote per voter and pair)."""
    return f"{KEY_VERSION}:{voter_hash[:40]}:{pair.key}"


def record_arena_vote(engine: Engine, pair: ArenaPair, *, a_left: bool, choice: str, voter_hash: str) -> Row:
    """Store a blind vote on `pair` as it was shown (`a_left`: version a on the left), through
    db.store.record_vote (idempotent by voter and pair); returns the stored row."""
    left, right = (pair.a, pair.b) if a_left else (pair.b, pair.a)
    return record_vote(engine, turn_id=left.turn_id, left_round=left.round, right_round=right.round,
                       right_turn_id=right.turn_id if right.turn_id != left.turn_id else None, choice=choice,
                       key=arena_vote_key(voter_hash, pair), voter_hash=voter_hash, blind=True)
