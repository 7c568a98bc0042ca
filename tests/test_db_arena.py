"""The Arena's pairs (db/arena.py): which versions are paired, which never are, the order pairs
are drawn in (fewest blind votes first, at random among equals), and the blind votes on them
going through the same idempotent vote storage as every vote."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db import open_database
from db.arena import ArenaPair, arena_vote_key, record_arena_vote, sample_pair
from db.errors import InvalidInput
from db.store import record_round, record_turn, record_vote
from refine.events import RoundDone


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = open_database(f"sqlite:///{tmp_path / 'arena.db'}")
    yield engine
    engine.dispose()


def turn(engine: Engine, rounds: list[tuple[str, str]], *, prompt: str = "Capital of France?",
         answer: str = "Lyon.", model: str = "cnr", adapter: str | None = None, error: str | None = None) -> int:
    """A stored turn whose rounds are (revision, status) in order; status "nothing" is a complete
    round whose critique found nothing to fix (its revision is the answer before it)."""
    t = record_turn(engine, prompt=prompt, answer=answer, model="base", backend="local", error=error)
    for k, (revision, status) in enumerate(rounds, start=1):
        nothing = status == "nothing"
        record_round(engine, t, RoundDone(round=k, model=model, critique="c", revision=revision,
                                          status="complete" if nothing else status, nothing_to_fix=nothing),
                     adapter=adapter)
    return t


def every_pair(engine: Engine, **kwargs) -> dict[str, ArenaPair]:
    """Every pair the Arena would show, drawn until none is left."""
    pairs: dict[str, ArenaPair] = {}
    while (pair := sample_pair(engine, exclude=pairs.keys(), rng=random.Random(len(pairs)), **kwargs)) is not None:
        pairs[pair.key] = pair
    return pairs


def test_only_accepted_versions_with_different_texts_are_paired(engine: Engine) -> None:
    t = turn(engine, [("Paris.", "complete"), ("Paris is the capital.", "complete"), ("Paris!!!", "rejected"),
                      ("Paris is the capital of France.", "complete"), ("x", "failed")])
    same = turn(engine, [("  lyon. ", "complete")], prompt="Other")  # the same text but for case and space
    stopped = turn(engine, [("Paris.", "complete"), ("Paris.", "nothing")], prompt="Stopped")
    turn(engine, [], prompt="Broken", answer="", error="timeout: no answer")
    pairs = every_pair(engine)
    assert {(p.kind, p.a.ref, p.b.ref) for p in pairs.values()} == {
        ("original", (t, 0), (t, 1)), ("original", (t, 0), (t, 2)), ("original", (t, 0), (t, 4)),
        ("previous", (t, 1), (t, 2)),  # not 2-3 or 3-4: round 3 was rejected
        ("original", (stopped, 0), (stopped, 1)),  # not round 2: nothing to fix, a copy of round 1
    }
    assert all(p.a.turn_id != same for p in pairs.values())
    texts = {p.a.text for p in pairs.values()} | {p.b.text for p in pairs.values()}
    assert "Paris!!!" not in texts and "x" not in texts  # rejected and failed rounds are never shown
    first = pairs[f"{t}.0-{t}.4"]
    assert (first.a.text, first.b.text, first.b.model, first.messages) == (
        "Lyon.", "Paris is the capital of France.", "cnr", [{"role": "user", "content": "Capital of France?"}])


def test_two_cnr_models_revising_the_same_answer_are_paired_at_the_same_round(engine: Engine) -> None:
    a = turn(engine, [("Paris.", "complete"), ("Paris, France.", "complete")], model="cnr")
    b = turn(engine, [("It is Paris.", "complete"), ("Paris, France.", "complete")], model="cnr",
             adapter="adapters/v2")
    c = turn(engine, [("Paris!", "complete")], model="big-cnr")
    d = turn(engine, [("It is Paris, of course.", "complete")], model="cnr")  # the same model as a: no pair
    turn(engine, [("Rome.", "complete")], model="other", answer="Rome?")  # another answer: no pair
    across = {(p.a.ref, p.b.ref) for p in every_pair(engine).values() if p.kind == "models"}
    # round 2 of a and b are the same text: never paired
    assert across == {((a, 1), (b, 1)), ((a, 1), (c, 1)), ((b, 1), (c, 1)), ((c, 1), (d, 1)), ((b, 1), (d, 1))}


def test_a_chat_turn_with_other_messages_before_is_not_paired_with_a_lone_prompt(engine: Engine) -> None:
    lone = turn(engine, [("Paris.", "complete")])
    chat = record_turn(engine, messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                                         {"role": "user", "content": "Capital of France?"}],
                       answer="Lyon.", model="base", backend="local")
    record_round(engine, chat, RoundDone(round=1, model="other", critique="c", revision="Paris!", status="complete"))
    pairs = every_pair(engine)
    assert not [p for p in pairs.values() if p.kind == "models"]
    assert pairs[f"{chat}.0-{chat}.1"].messages[0] == {"role": "user", "content": "Hi"}
    assert f"{lone}.0-{lone}.1" in pairs


def test_pairs_with_fewer_blind_votes_come_first_at_random_among_equals(engine: Engine) -> None:
    turns = [turn(engine, [(f"Paris {i}.", "complete")], prompt=f"q{i}") for i in range(4)]
    keys = [f"{t}.0-{t}.1" for t in turns]
    drawn = Counter(sample_pair(engine, rng=random.Random(seed)).key for seed in range(200))
    assert set(drawn) == set(keys) and min(drawn.values()) > 25  # none voted yet: any of them
    # two blind votes on pair 0, one on pairs 1 and 2; votes beside the panel do not count
    for i, (t, voter) in enumerate([(turns[0], "v1"), (turns[0], "v2"), (turns[1], "v1"), (turns[2], "v1")]):
        pair = sample_pair(engine, exclude=[k for k in keys if k != f"{t}.0-{t}.1"])
        record_arena_vote(engine, pair, a_left=i % 2 == 0, choice="left", voter_hash=voter)
    for i in range(5):
        record_vote(engine, turn_id=turns[3], left_round=0, right_round=1, choice="right", key=f"panel{i}")
    assert {sample_pair(engine, rng=random.Random(seed)).key for seed in range(50)} == {keys[3]}
    pair = sample_pair(engine, exclude=[keys[3]], rng=random.Random(0))
    assert pair.votes == 1
    assert {sample_pair(engine, exclude=[keys[3]], rng=random.Random(s)).key for s in range(60)} == set(keys[1:3])
    assert sample_pair(engine, exclude=keys[1:]).votes == 2
    # a pair this voter has seen comes after every other, however many votes those have
    assert sample_pair(engine, seen=[keys[3]], rng=random.Random(0)).key in keys[1:3]
    assert sample_pair(engine, seen=keys[1:], rng=random.Random(0)).key == keys[0]
    assert sample_pair(engine, exclude=keys) is None


def test_an_arena_vote_is_stored_blind_in_the_order_shown_once_per_voter(engine: Engine) -> None:
    t = turn(engine, [("Paris.", "complete")])
    other = turn(engine, [("Paris!", "complete")], model="big-cnr")
    pair = sample_pair(engine, exclude=[f"{t}.0-{t}.1", f"{other}.0-{other}.1"])
    assert pair.kind == "models" and (pair.a.turn_id, pair.b.turn_id) == (t, other)
    row = record_arena_vote(engine, pair, a_left=False, choice="left", voter_hash="h" * 64)  # b shown left
    assert (row.turn_id, row.left_round, row.right_turn_id, row.right_round, row.choice, row.blind) == (
        other, 1, t, 1, "left", True)
    assert row.key == arena_vote_key("h" * 64, pair) == f"a1:{'h' * 40}:{pair.key}" and row.voter_hash == "h" * 64
    again = record_arena_vote(engine, pair, a_left=True, choice="right", voter_hash="h" * 64)
    assert again == row  # idempotent: the first vote stands
    within = sample_pair(engine, exclude=[pair.key, f"{other}.0-{other}.1"])
    row = record_arena_vote(engine, within, a_left=True, choice="tie", voter_hash="h2")
    assert (row.turn_id, row.left_round, row.right_round, row.right_turn_id, row.blind) == (t, 0, 1, None, True)
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*), sum(blind) FROM votes")).one() == (2, 2)


def test_votes_across_turns_are_checked_like_any_vote(engine: Engine) -> None:
    t = turn(engine, [("Paris.", "complete"), ("Paris!", "rejected")])
    other = turn(engine, [("It is Paris.", "complete"), ("Paris, France.", "complete")], model="big-cnr")
    vote = dict(turn_id=t, left_round=1, right_turn_id=other, right_round=1, choice="left", key="k", blind=True)
    for change, message in [(dict(right_turn_id=t), "two different turns"),
                            (dict(left_round=0), "two revisions"),
                            (dict(left_round=2, right_round=2), f"turn {t} has no complete round 2"),
                            (dict(right_turn_id=other + 1), f"turn {other + 1} does not exist"),
                            (dict(blind="yes"), "blind must be")]:
        with pytest.raises(InvalidInput, match=message):
            record_vote(engine, **(vote | change))
    assert record_vote(engine, **vote).right_turn_id == other
    assert record_vote(engine, **(vote | dict(key="k2", left_round=1, right_round=2))).right_round == 2
