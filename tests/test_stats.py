"""`refine stats`: win rates of judge verdicts against hand-computed values and a generated
dataset with a known win rate, the saved artefacts, votes from the database, and AlpacaEval's
metrics for verdict files of other tools."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from refine.cli import main
from refine.judging.stats import verdict_summaries
from refine.verdict_formats import head_to_head, label_preferences, parse_mapping, read_alpaca_eval, read_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def row(pid: str, k: int, outcome: str, versus: str = "original", ratio: float | None = 1.5) -> dict:
    return {"id": pid, "round": k, "versus": versus, "outcome": outcome, "length_ratio": ratio,
            "judge": "openai:j", "prompt_version": "pairwise-v1"}


ROUND_1 = ["win", "win", "loss", "tie", "inconsistent", "unparseable", "skipped"]


def test_verdict_summary_against_hand_computed_values() -> None:
    rows = [row(f"p{i}", 1, o, ratio=r) for i, (o, r) in enumerate(zip(ROUND_1, [1.0, 2.0, 1.5, 1.0, 0.5, 3.0, None]))]
    rows += [row("p0", 2, "win", ratio=4.0), row("p1", 2, "loss", ratio=2.0), row("p0", 2, "win", "previous")]
    one, two, prev = verdict_summaries(rows, n_boot=500)
    assert one.series == "vs original" and one.rate.round == 1
    r = one.rate
    # win rate = (2 wins + (1 tie + 1 inconsistent)/2) / 5 comparisons; unparseable and skipped left out
    assert (r.wins, r.ties, r.losses, r.n, r.units) == (2, 2, 1, 5, 5) and r.rate == pytest.approx(0.6)
    assert (one.inconsistent, one.unparseable, one.skipped) == (1, 1, 1)
    assert one.length_ratio == pytest.approx((1.0 + 2.0 + 1.5 + 1.0 + 0.5 + 3.0) / 6)  # all judged pairs
    assert 0 <= r.ci_low <= 0.6 <= r.ci_high <= 1
    assert (two.rate.round, two.rate.rate, two.length_ratio) == (2, 0.5, 3.0)
    assert prev.series == "vs previous" and prev.rate.rate == 1.0


def test_several_judges_in_one_file_are_separate_series() -> None:
    rows = [row("p0", 1, "win"), {**row("p0", 1, "loss"), "judge": "openai:other"}]
    assert [s.series for s in verdict_summaries(rows, n_boot=100)] == [
        "vs original · openai:j pairwise-v1", "vs original · openai:other pairwise-v1"]


def test_generated_dataset_with_known_win_rate_lies_in_the_ci() -> None:
    """Outcomes drawn with P(win)=.55, P(tie)=.1, P(inconsistent)=.1, P(loss)=.25: true win rate
    .55 + .2/2 = .65. The 95% CI must contain it in (about) 95% of datasets."""
    truth, covered = 0.65, 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        outcomes = rng.choice(["win", "tie", "inconsistent", "loss"], p=[0.55, 0.1, 0.1, 0.25], size=300)
        (s,) = verdict_summaries([row(f"p{i}", 1, o) for i, o in enumerate(outcomes)], n_boot=1000, seed=seed)
        assert abs(s.rate.rate - truth) < 0.1 and s.rate.ci_high - s.rate.ci_low < 0.15
        covered += s.rate.ci_low <= truth <= s.rate.ci_high
    assert covered >= 34  # 40 × 95% = 38 expected; P(fewer than 34) < 1% for a calibrated CI


def test_stats_cli_prints_and_saves_table_json_and_plot(tmp_path: Path) -> None:
    verdicts = tmp_path / "verdicts.jsonl"
    rows = [row(f"p{i}", 1, o) for i, o in enumerate(ROUND_1)] + [row("p0", 2, "win"), row("p0", 2, "loss", "previous")]
    verdicts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["stats", "--verdicts", str(verdicts), "--out-dir", str(tmp_path / "out"),
                                       "--title", "test run"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split("|")[1:4] == [" series      ", " round ", " win rate "]
    assert "| vs original | 1     | 60.0%" in result.output and "inconsistent" in lines[0]
    assert (tmp_path / "out" / "stats.md").read_text().startswith("test run\n\n| series")
    data = json.loads((tmp_path / "out" / "stats.json").read_text())
    first = data["rounds"][0]
    assert data["source"] == str(verdicts) and data["title"] == "test run"
    assert {k: first[k] for k in ("series", "round", "win_rate", "wins", "ties", "losses", "inconsistent",
                                  "unparseable", "skipped", "n", "units")} == {
        "series": "vs original", "round": 1, "win_rate": 0.6, "wins": 2, "ties": 1, "losses": 1, "inconsistent": 1,
        "unparseable": 1, "skipped": 1, "n": 5, "units": 5}
    assert first["both_bad"] is None
    png = (tmp_path / "out" / "winrate.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    from matplotlib.image import imread

    assert imread(tmp_path / "out" / "winrate.png").ndim == 3


def test_stats_of_votes_in_the_database(tmp_path: Path) -> None:
    from db import open_database
    from db.store import record_round, record_turn, record_vote
    from refine.events import RoundDone

    url = f"sqlite:///{tmp_path / 'votes.db'}"
    engine = open_database(url)
    choices = [(0, 1, "right"), (1, 0, "right"), (0, 1, "tie"), (1, 0, "left"), (2, 0, "both_bad")]  # round 1: W L T W
    for i, (left, right, choice) in enumerate(choices):
        turn = record_turn(engine, answer="Red.", model="m", backend="local", prompt="Name a colour.")
        for k in (1, 2):
            record_round(engine, turn, RoundDone(round=k, model="c", critique="c", revision=f"Red {k}.", status="complete"))
        record_vote(engine, turn_id=turn, left_round=left, right_round=right, choice=choice, key=f"v{i}", blind=True)
        # beside the panel (not blind): round 1 always wins there; counted apart
        record_vote(engine, turn_id=turn, left_round=0, right_round=1, choice="right", key=f"p{i}")
    engine.dispose()
    result = CliRunner().invoke(main, ["stats", "--db", url, "--json", str(tmp_path / "votes.json")])
    assert result.exit_code == 0, result.output
    rounds = json.loads((tmp_path / "votes.json").read_text())["rounds"]
    assert [(r["series"], r["round"], r["wins"], r["ties"], r["losses"], r["both_bad"], r["win_rate"]) for r in rounds] == [
        ("vs original", 1, 2, 1, 1, 0, 0.625), ("vs original", 2, 0, 0, 0, 1, None),
        ("vs original (not blind)", 1, 5, 0, 0, 0, 1.0)]
    assert "turns" in result.output.splitlines()[0] and "both bad" in result.output
    # 4 and 5 votes: too few for a CI (refine.winrate.MIN_VOTES), said in the table, null in the JSON
    assert result.output.count("too few votes (4 of 10)") == 1 and "too few votes (5 of 10)" in result.output
    assert all(r["ci_low"] is None for r in rounds)
    assert "10 votes" in CliRunner().invoke(main, ["stats", "--help"]).output  # the help names MIN_VOTES


# --- other tools' verdict files ------------------------------------------------------------------

def test_alpaca_eval_metrics_against_hand_computed_values() -> None:
    # 0 is AlpacaEval's old spelling of a draw; None and 3 are not preferences and are dropped.
    m = head_to_head([2, 2, 1, 1.5, 0, None, 1.75, 3])
    # valid preferences − 1: [1, 1, 0, .5, .5, .75]: mean .625; sample sd sqrt(.71875/5); se = sd/sqrt(6)
    assert m.win_rate == pytest.approx(62.5)
    assert m.standard_error == pytest.approx(100 * math.sqrt(0.71875 / 5) / math.sqrt(6))
    assert (m.n_wins, m.n_wins_base, m.n_draws, m.n_total, m.n_dropped) == (3, 1, 2, 6, 2)
    assert m.discrete_win_rate == pytest.approx(100 * 4 / 6)  # 1.75 rounds to a win


def test_alpaca_eval_annotations_file(tmp_path: Path) -> None:
    records = [{"instruction": f"q{i}", "output_1": "ref", "generator_1": "gpt4_1106_preview", "output_2": "ours",
                "generator_2": "refine-r1", "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": p}
               for i, p in enumerate([1.0000126, 1.9999, 1.5, None, 1.25])]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(records, indent=2))
    assert list(read_alpaca_eval(path)) == ["refine-r1 vs gpt4_1106_preview"]
    result = CliRunner().invoke(main, ["stats", str(path), "--format", "alpaca_eval", "--json", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    (m,) = json.loads((tmp_path / "m.json").read_text())["metrics"]
    expected = np.array([1.0000126, 1.9999, 1.5, 1.25]) - 1
    assert m["win_rate"] == pytest.approx(100 * expected.mean())
    assert m["standard_error"] == pytest.approx(100 * expected.std(ddof=1) / 2)
    assert (m["n_wins"], m["n_wins_base"], m["n_draws"], m["n_total"], m["n_dropped"]) == (1, 2, 1, 4, 1)
    assert m["discrete_win_rate"] == pytest.approx(100 * (0 + 1 + 0.5 + 0) / 4)
    assert "refine-r1 vs gpt4_1106_preview" in result.output and f"{100 * expected.mean():.2f}" in result.output


def test_table_with_a_column_mapping_and_labels(tmp_path: Path) -> None:
    # A Chatbot-Arena-style CSV: the model evaluated is model_b.
    path = tmp_path / "battles.csv"
    path.write_text("model_a,model_b,winner\nbase,ours,model_b\nbase,ours,model_a\nbase,ours,tie\n"
                    "base,ours,tie (bothbad)\nbase,ours,model_b\nbase,other,model_a\nbase,ours,??\n")
    labels = label_preferences(parse_mapping("win=model_b,loss=model_a,tie=tie|tie (bothbad)"))
    groups = read_table(path, parse_mapping("preference=winner,group=model_b"), labels)
    assert groups == {"ours": [2.0, 1.0, 1.5, 1.5, 2.0, None], "other": [1.0]}
    result = CliRunner().invoke(main, ["stats", str(path), "--format", "table", "--columns",
                                       "preference=winner,group=model_b", "--values",
                                       "win=model_b,loss=model_a,tie=tie|tie (bothbad)"])
    assert result.exit_code == 0, result.output
    ours = next(line for line in result.output.splitlines() if line.startswith("| ours"))
    # (2 wins + 2 draws / 2) / 5 = 60%; counts 2 wins, 1 loss, 2 draws, 5 valid, 1 dropped
    assert [c.strip() for c in ours.strip("|").split("|")] == ["ours", "60.00", f"{100 * np.std([1, 0, .5, .5, 1], ddof=1) / math.sqrt(5):.2f}",
                                                              "2", "1", "2", "5", "60.00", "1"]


def test_table_with_alpaca_eval_numbers_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps({"pref": p}) + "\n" for p in [2, 1, 2, 1.5]))
    (prefs,) = read_table(path, {"preference": "pref"}).values()
    assert head_to_head(prefs).win_rate == pytest.approx(100 * 2.5 / 4)


@pytest.mark.parametrize("args, message", [
    (["--format", "table", "--columns", "group=x"], "preference=<column>"),
    (["--format", "table", "--columns", "preference=nope"], "no column 'nope'"),
    (["--format", "table", "--columns", "preference=pref", "--values", "draw=x"], "win, loss or tie"),
    (["--format", "table", "--columns", "preference"], "NAME=VALUE"),
])
def test_bad_column_mappings_are_reported(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"pref": 2}) + "\n")
    result = CliRunner().invoke(main, ["stats", str(path), *args])
    assert result.exit_code == 1 and message in result.output


def test_our_verdicts_read_as_a_table_grouped_by_two_columns(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    outcomes = [("original", 1, "win"), ("original", 1, "inconsistent"), ("original", 1, "skipped"),
                ("previous", 2, "loss"), ("original", 2, "win")]
    path.write_text("".join(json.dumps({"versus": v, "round": k, "outcome": o}) + "\n" for v, k, o in outcomes))
    labels = label_preferences(parse_mapping("win=win,loss=loss,tie=tie|inconsistent"))
    groups = read_table(path, parse_mapping("preference=outcome,group=versus+round"), labels)
    assert groups == {"original 1": [2.0, 1.5, None], "previous 2": [1.0], "original 2": [2.0]}
    assert head_to_head(groups["original 1"]).win_rate == pytest.approx(75.0)
