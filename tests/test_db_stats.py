"""Win rates: the bootstrap math (refine.winrate) and the SQL aggregation over votes (db.stats)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from db import open_database
from db.engine import write_session
from db.models import Round, Vote
from db.stats import _patterns, vote_win_rates
from db.store import record_turn
from refine.winrate import (
    MIN_VOTES,
    WinRate,
    bootstrap_ci,
    render_table,
    save_plot,
    too_few_text,
    too_few_votes,
    win_rate,
)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = open_database(f"sqlite:///{tmp_path / 'refine.db'}")
    yield engine
    engine.dispose()


def make_turns(engine: Engine, n: int, rounds: int = 3) -> list[int]:
    ids = [record_turn(engine, prompt=f"q{i}", answer="a", model="m", backend="local") for i in range(n)]
    with write_session(engine) as s:
        s.add_all(Round(turn_id=t, round_index=k, model="c", critique="c", revision=f"r{k}", status="complete")
                  for t in ids for k in range(1, rounds + 1))
    return ids


def add_votes(engine: Engine, votes: list[tuple[int, int, int, str]], *, blind: bool = True) -> None:
    """(turn, left_round, right_round, choice) rows, bulk; blind (the Arena's) unless told."""
    with write_session(engine) as s:
        start = len(s.query(Vote.id).all())
        s.add_all(Vote(turn_id=t, left_round=left, right_round=right, choice=c, key=f"v{start + i}", blind=blind)
                  for i, (t, left, right, c) in enumerate(votes))


def simulate(rng: np.random.Generator, turns: list[int], k: int, other: int, p: dict[str, float],
             votes_per_turn: tuple[int, int] = (1, 6)) -> list[tuple[int, int, int, str]]:
    """Votes of round k against `other`, shown in random order, outcome drawn from `p`
    (probabilities of k winning, tie, k losing, both bad)."""
    outcomes = list(p)
    votes = []
    for t in turns:
        for _ in range(rng.integers(*votes_per_turn, endpoint=True)):
            outcome = rng.choice(outcomes, p=list(p.values()))
            k_left = bool(rng.random() < 0.5)
            left, right = (k, other) if k_left else (other, k)
            choice = {"win": "left" if k_left else "right", "loss": "right" if k_left else "left"}.get(outcome, outcome)
            votes.append((t, left, right, choice))
    return votes


def test_known_win_rates_land_inside_the_confidence_intervals(engine: Engine) -> None:
    rng = np.random.default_rng(7)
    turns = make_turns(engine, 300)
    # Among votes that are not both-bad: round 1 wins 65%, ties 10% -> 70% with ties half.
    add_votes(engine, simulate(rng, turns, 1, 0, {"win": 0.6175, "tie": 0.095, "loss": 0.2375, "both_bad": 0.05}))
    add_votes(engine, simulate(rng, turns, 2, 0, {"win": 0.5, "tie": 0.1, "loss": 0.4, "both_bad": 0.0}))  # 55%
    add_votes(engine, simulate(rng, turns, 2, 1, {"win": 0.35, "tie": 0.0, "loss": 0.65, "both_bad": 0.0}))  # 35%
    add_votes(engine, simulate(rng, turns[:50], 3, 1, {"win": 1.0, "tie": 0, "loss": 0, "both_bad": 0}))  # ignored

    original = {r.round: r for r in vote_win_rates(engine, "original")}
    previous = {r.round: r for r in vote_win_rates(engine, "previous")}
    assert sorted(original) == [1, 2] and sorted(previous) == [1, 2]
    for rate, truth in [(original[1], 0.70), (original[2], 0.55), (previous[2], 0.35)]:
        assert rate.ci_low <= truth <= rate.ci_high, rate
        assert rate.ci_low <= rate.rate <= rate.ci_high
        assert 0.03 <= rate.ci_high - rate.ci_low <= 0.10, rate  # ~1000 votes over 300 turns
    assert original[2].units == previous[2].units == 300
    assert 280 < original[1].units < 300  # a turn whose votes were all both-bad is no unit
    assert previous[1] == original[1]  # round 1's previous version is the original
    assert original[1].both_bad > 0 and original[2].both_bad == 0
    assert original[1].n == original[1].wins + original[1].ties + original[1].losses


def test_placement_ties_and_both_bad_are_counted_exactly(engine: Engine) -> None:
    t1, t2 = make_turns(engine, 2)
    add_votes(engine, [
        (t1, 1, 0, "left"),      # round 1 shown left, chosen: win
        (t1, 0, 1, "right"),     # round 1 shown right, chosen: win
        (t1, 0, 1, "left"),      # original chosen: loss
        (t2, 1, 0, "tie"),       # tie: half a win
        (t2, 0, 1, "both_bad"),  # reported apart, not in the rate
        (t2, 2, 1, "right"),     # round 2 vs 1: loss for round 2 (only in "previous")
        (t2, 3, 1, "left"),      # neither vs the original nor vs the previous round
    ])
    [r1] = vote_win_rates(engine, "original", n_boot=500)
    assert (r1.round, r1.wins, r1.ties, r1.losses, r1.both_bad, r1.n, r1.units) == (1, 2, 1, 1, 1, 4, 2)
    assert r1.rate == pytest.approx(2.5 / 4)
    p1, p2 = vote_win_rates(engine, "previous", n_boot=500)
    assert p1 == r1
    assert (p2.round, p2.wins, p2.losses, p2.n, p2.rate) == (2, 0, 1, 1, 0.0)


def test_a_round_with_only_both_bad_votes_has_no_rate(engine: Engine) -> None:
    [t] = make_turns(engine, 1)
    assert vote_win_rates(engine) == []
    add_votes(engine, [(t, 0, 1, "both_bad"), (t, 1, 0, "both_bad")])
    [r] = vote_win_rates(engine)
    assert (r.both_bad, r.n, r.units) == (2, 0, 0)
    assert math.isnan(r.rate) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert "—" in render_table([r])


def test_below_the_minimum_count_a_round_has_a_rate_but_no_confidence_interval(engine: Engine) -> None:
    """2 votes gave "0.0% – 0.0%": below MIN_VOTES comparisons there is no CI, in the per-round,
    per-model and head-to-head statistics alike; from MIN_VOTES on there is one."""
    from db.stats import vote_win_rates_by_model

    turns = make_turns(engine, MIN_VOTES)
    add_votes(engine, [(turns[0], 0, 1, "left"), (turns[1], 1, 0, "right")])
    [r] = vote_win_rates(engine, n_boot=200)
    assert (r.n, r.rate) == (2, 0.0) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert too_few_votes(r) and too_few_text(r.n) == f"too few votes (2 of {MIN_VOTES})"
    [by_model] = vote_win_rates_by_model(engine, n_boot=200)["c"]
    assert math.isnan(by_model.ci_low)
    add_votes(engine, [(t, 0, 1, "right" if i % 2 else "left") for i, t in enumerate(turns[2:])])
    [r] = vote_win_rates(engine, n_boot=200)
    assert r.n == MIN_VOTES and not too_few_votes(r) and 0.0 <= r.ci_low <= r.rate <= r.ci_high <= 1.0


def test_session_and_connection_work_like_the_engine(engine: Engine) -> None:
    [t] = make_turns(engine, 1)
    add_votes(engine, [(t, 0, 1, "right"), (t, 1, 0, "right")])
    expected = vote_win_rates(engine)
    with Session(engine) as session:
        assert vote_win_rates(session) == expected
    with engine.connect() as connection:
        assert vote_win_rates(connection) == expected
    with pytest.raises(ValueError, match="versus"):
        vote_win_rates(engine, "best")


def test_statistics_query_groups_in_index_order(engine: Engine) -> None:
    """Votes are reduced per (turn, round) while reading the blind (or the other) votes' part of
    the covering index in order, with no sort; per CnR model too (one lookup per turn and round)."""
    for versus in ("original", "previous"):
        for blind in (True, False):
            for by_model in (False, True):
                sql = str(_patterns(versus, blind, by_model).compile(engine, compile_kwargs={"literal_binds": True}))
                with engine.connect() as c:
                    plan = [row[-1] for row in c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
                assert "SEARCH votes USING COVERING INDEX ix_votes_stats (blind=?)" in plan
                assert sum("TEMP B-TREE FOR GROUP BY" in step for step in plan) == 1  # only over the few patterns


def test_blind_votes_and_the_others_are_counted_apart(engine: Engine) -> None:
    t1, t2 = make_turns(engine, 2)
    add_votes(engine, [(t1, 1, 0, "left"), (t2, 0, 1, "left")])  # the Arena: round 1 wins one, loses one
    add_votes(engine, [(t1, 0, 1, "right"), (t1, 1, 0, "left"), (t2, 2, 1, "left")], blind=False)  # the panel
    [blind] = vote_win_rates(engine, n_boot=200)
    assert (blind.round, blind.wins, blind.losses, blind.units) == (1, 1, 1, 2)
    [panel] = vote_win_rates(engine, blind=False, n_boot=200)
    assert (panel.round, panel.wins, panel.losses, panel.units) == (1, 2, 0, 1)
    assert [r.round for r in vote_win_rates(engine, "previous", blind=False, n_boot=200)] == [1, 2]
    assert [r.round for r in vote_win_rates(engine, "previous", n_boot=200)] == [1]


def test_win_rates_per_cnr_model_and_models_head_to_head(engine: Engine) -> None:
    from db.stats import model_head_to_head, model_name, vote_win_rates_by_model
    from db.store import record_round, record_vote
    from refine.events import RoundDone

    def turn(model: str, adapter: str | None) -> int:
        t = record_turn(engine, prompt="q", answer="a", model="m", backend="local")
        for k in (1, 2):
            record_round(engine, t, RoundDone(round=k, model=model, critique="c", revision=f"{model} {k}",
                                              status="complete"), adapter=adapter)
        return t

    plain, tuned, other = turn("cnr", None), turn("cnr", "/srv/models/adapters/v2"), turn("big-cnr", None)
    for i, (t, left, right, choice) in enumerate([(plain, 0, 1, "right"), (tuned, 1, 0, "right"),
                                                   (tuned, 0, 2, "right"), (other, 2, 0, "tie")]):
        record_vote(engine, turn_id=t, left_round=left, right_round=right, choice=choice, key=f"b{i}", blind=True)
    record_vote(engine, turn_id=plain, left_round=1, right_round=0, choice="left", key="panel")  # not blind
    # two models' revision 1 of the same answer, in the Arena: "cnr + v2" beats "big-cnr" twice
    record_vote(engine, turn_id=tuned, left_round=1, right_turn_id=other, right_round=1, choice="left",
                key="x1", blind=True)
    record_vote(engine, turn_id=other, left_round=1, right_turn_id=tuned, right_round=1, choice="right",
                key="x2", blind=True)
    record_vote(engine, turn_id=other, left_round=2, right_turn_id=plain, right_round=2, choice="both_bad",
                key="x3", blind=True)

    by_model = vote_win_rates_by_model(engine, n_boot=200)
    assert model_name("cnr", "/srv/models/adapters/v2") == "cnr + v2"  # not the server's path
    assert model_name("cnr", "org/adapter") == "cnr + org/adapter"
    assert sorted(by_model) == ["big-cnr", "cnr", "cnr + v2"]
    assert [(r.round, r.wins, r.losses) for r in by_model["cnr"]] == [(1, 1, 0)]  # the panel's vote is apart
    assert [(r.round, r.wins, r.losses) for r in by_model["cnr + v2"]] == [(1, 0, 1), (2, 1, 0)]
    assert [(r.round, r.ties) for r in by_model["big-cnr"]] == [(2, 1)]
    assert vote_win_rates_by_model(engine, blind=False, n_boot=200)["cnr"][0].wins == 1
    # votes across two turns are not any round's win rate against the original
    assert sum(r.n for rates in by_model.values() for r in rates) == 4

    first, second = model_head_to_head(engine, n_boot=200)
    assert (first.first, first.second, first.rate.round) == ("big-cnr", "cnr", 2)
    assert (first.rate.both_bad, first.rate.n) == (1, 0)
    assert (second.first, second.second, second.rate.round) == ("big-cnr", "cnr + v2", 1)
    assert (second.rate.wins, second.rate.losses, second.rate.units, second.rate.rate) == (0, 2, 1, 0.0)


def naive_bootstrap(scores: np.ndarray, counts: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(n_boot, len(scores)))
    rates = scores[idx].sum(1) / counts[idx].sum(1)
    return tuple(np.quantile(rates, [0.025, 0.975]))


def test_bootstrap_over_merged_units_matches_resampling_units_one_by_one() -> None:
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 6, 400).astype(float)
    wins = rng.binomial(counts.astype(int), 0.6).astype(float)
    ties = np.minimum(rng.integers(0, 2, 400), counts - wins)
    scores = wins + ties / 2
    fast = bootstrap_ci(scores, counts, n_boot=4000, seed=3)
    slow = naive_bootstrap(scores, counts, 4000, seed=4)
    assert fast == pytest.approx(slow, abs=0.01)
    # Merging identical units changes nothing: the same units given with weights.
    pairs, weights = np.unique(np.stack([scores, counts], 1), axis=0, return_counts=True)
    assert bootstrap_ci(pairs[:, 0], pairs[:, 1], weights=weights, n_boot=4000, seed=3) == fast


def test_binomial_interval_has_the_textbook_width() -> None:
    rng = np.random.default_rng(0)
    wins = (rng.random(1000) < 0.7).astype(int)
    r = win_rate(1, wins, np.zeros(1000), 1 - wins, n_boot=4000, seed=0)
    half_width = 1.96 * math.sqrt(r.rate * (1 - r.rate) / 1000)
    assert r.ci_high - r.ci_low == pytest.approx(2 * half_width, rel=0.1)
    assert r.ci_low < 0.7 < r.ci_high
    assert win_rate(1, wins, np.zeros(1000), 1 - wins, n_boot=500, seed=5) == win_rate(
        1, wins, np.zeros(1000), 1 - wins, n_boot=500, seed=5)  # seeded: reproducible


def test_table_and_plot(tmp_path: Path) -> None:
    rates = [WinRate(1, 60, 10, 30, 5, 100, 40, 0.65, 0.56, 0.74),
             WinRate(2, 0, 0, 0, 3, 0, 0, math.nan, math.nan, math.nan)]
    table = render_table(rates, title="votes vs the original")
    lines = table.splitlines()
    assert lines[0] == "votes vs the original"
    assert lines[1].split()[:4] == ["round", "win", "rate", "95%"]
    assert lines[2].split() == ["1", "65.0%", "[56.0%,", "74.0%]", "60", "10", "30", "5", "100", "40"]
    assert lines[3].split()[:2] == ["2", "—"]
    out = save_plot({"vs original": rates, "vs previous": rates[:1]}, tmp_path / "plots" / "win.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_round_outcomes_count_what_became_of_each_round(engine: Engine) -> None:
    from db.stats import round_outcomes
    from db.store import record_round
    from refine.events import RoundDone, Timing
    from refine.outcomes import tally

    def done(k: int, status: str, **kw) -> RoundDone:
        return RoundDone(round=k, model="c", critique="c", revision="r", status=status,
                         timing=Timing(duration=2.0, tokens=40), **kw)

    turns = [record_turn(engine, prompt=f"q{i}", answer="a", model="m", backend="local") for i in range(4)]
    record_round(engine, turns[0], done(1, "complete"))
    record_round(engine, turns[0], done(2, "rejected", rejection="looping", stop_reason="rejected"))
    record_round(engine, turns[1], done(1, "complete", nothing_to_fix=True, stop_reason="nothing_to_fix"))
    record_round(engine, turns[2], done(1, "rejected", rejection="unchanged", stop_reason="unchanged"))
    record_round(engine, turns[3], done(1, "rejected", rejection="cut_off", stop_reason="rejected"))
    rows = tally(round_outcomes(engine)).rows()
    assert rows[0] == {"round": 1, "accepted": 1, "nothing_to_fix": 1, "unchanged": 1, "rejected:cut_off": 1,
                       "rejected:looping": 0, "rounds": 4, "tokens_per_s": 20.0}
    assert rows[1]["rejected:looping"] == 1 and rows[1]["rounds"] == 1
    assert rows[2]["round"] == "all" and rows[2]["rounds"] == 5
    table = tally(round_outcomes(engine)).markdown()
    assert table.splitlines()[0] == ("| round | accepted | nothing to fix | unchanged | rejected: cut off | "
                                     "rejected: looping | rounds | tokens/s |")
