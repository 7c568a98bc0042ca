"""`refine judge` against a stand-in OpenAI-compatible judge over a real socket: which pairs are
judged, both orders per pair, controlled verdicts, skipped rounds, resuming after a judge that
fails mid-run without re-judging finished pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from refine.cli import main
from refine.judging.judge import plan, read_verdicts
from refine.judging.prompt import PROMPT_VERSION
from refine.records import PromptRow
from tests.standin_servers import StandinServer, json_reply, openai_chunks, sse_reply

PATH = "/v1/chat/completions"


def revised_row(rid: str, response: str, *rounds: tuple[str, str], prompt: str = "Name a colour.") -> dict[str, Any]:
    """A `refine revise` output row; each round is (revision, status)."""
    return {
        "id": rid, "prompt": prompt, "response": response, "cnr_model": "cnr-standin",
        "rounds": [{"round": k, "critique": "c", "revision": text, "status": status, "stop_reason": None,
                    "nothing_to_fix": False, "error": None if status == "complete" else "unparseable output: x"}
                   for k, (text, status) in enumerate(rounds, start=1)],
        "final": response, "stop_reason": "max_rounds",
    }


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def verdict(text: str):
    return sse_reply(openai_chunks([text]))


def judge(tmp_path: Path, server: StandinServer, *extra: str, rows: Path | None = None):
    args = ["judge", "--input", str(rows or tmp_path / "revised.jsonl"), "--output", str(tmp_path / "verdicts.jsonl"),
            "--judge-backend", "openai", "--judge-url", server.url, "--judge-model", "judge-standin", "--retries", "0",
            *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture
def server():
    with StandinServer() as s:
        yield s


def test_plan_pairs_skipped_rounds_and_vs_previous() -> None:
    rows = [PromptRow.model_validate(r) for r in [
        revised_row("p1", "red", ("red, bright", "complete"), ("red, bright and warm", "complete")),
        revised_row("p2", "blue", ("blue!", "complete"), ("garbled", "failed")),
        revised_row("p3", "green", ("", "failed")),
    ]]
    pairs, skipped = plan(rows, vs_previous=True)
    assert [(p.id, p.round, p.versus, p.baseline, p.revision) for p in pairs] == [
        ("p1", 1, "original", "red", "red, bright"),
        ("p1", 2, "original", "red", "red, bright and warm"),
        ("p1", 2, "previous", "red, bright", "red, bright and warm"),
        ("p2", 1, "original", "blue", "blue!"),
    ]
    assert [(s["id"], s["round"], s["versus"], s["outcome"]) for s in skipped] == [
        ("p2", 2, "original", "skipped"), ("p2", 2, "previous", "skipped"), ("p3", 1, "original", "skipped")]
    assert skipped[0]["reason"] == "round failed: unparseable output: x"
    assert len(plan(rows)[0]) == 3  # without --vs-previous


def test_both_orders_with_controlled_verdicts(tmp_path: Path, server: StandinServer) -> None:
    write_rows(tmp_path / "revised.jsonl", [
        revised_row("p1", "Red.", ("Red, the colour of blood.", "complete")),
        revised_row("p2", "Blue.", ("Blue.", "complete")),  # identical: a tie without asking
        revised_row("p3", "Green.", ("", "failed")),
    ])
    # p1: original shown first -> "B" (the revision); revision shown first -> "A" (the revision): a win
    server.on("POST", PATH, verdict("Verdict: B"), verdict("**Verdict: A**"))
    result = judge(tmp_path, server, "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert len(server.requests_to(PATH)) == 2
    first, second = (r.json["messages"][1]["content"] for r in server.requests_to(PATH))
    assert first.index("Red.") < first.index("Red, the colour") and second.index("Red, the colour") < second.index("Red.")
    assert all(r.json["temperature"] == 0 and r.json["model"] == "judge-standin" for r in server.requests_to(PATH))

    rows = {r["id"]: r for r in read_verdicts(tmp_path / "verdicts.jsonl")}
    p1 = rows["p1"]
    assert p1["outcome"] == "win" and p1["versus"] == "original" and p1["baseline_round"] == 0
    assert [(o["revision_side"], o["verdict"], o["outcome"], o["raw"]) for o in p1["orders"]] == [
        ("B", "B", "win", "Verdict: B"), ("A", "A", "win", "**Verdict: A**")]
    assert p1["judge"] == "openai:judge-standin" and p1["prompt_version"] == PROMPT_VERSION
    assert (p1["revision_words"], p1["baseline_words"], p1["length_ratio"]) == (5, 1, 5.0)
    assert rows["p2"]["outcome"] == "tie" and rows["p2"]["orders"] == [] and "identical" in rows["p2"]["reason"]
    assert rows["p3"]["outcome"] == "skipped" and rows["p3"]["reason"].startswith("round failed")

    again = judge(tmp_path, server)  # everything done: no request, nothing appended
    assert again.exit_code == 0 and len(server.requests_to(PATH)) == 2
    assert len(read_verdicts(tmp_path / "verdicts.jsonl")) == 3


def test_disagreeing_and_unparseable_orders(tmp_path: Path, server: StandinServer) -> None:
    write_rows(tmp_path / "revised.jsonl", [
        revised_row("p1", "Red.", ("Crimson red.", "complete")),
        revised_row("p2", "Blue.", ("Deep blue.", "complete")),
    ])
    # p1: "A" then "A" = the first-shown answer both times: inconsistent. p2: garbage then a verdict.
    server.on("POST", PATH, verdict("Verdict: A"), verdict("Verdict: A"), verdict("I like both!"), verdict("Verdict: B"))
    assert judge(tmp_path, server, "--concurrency", "1").exit_code == 0
    rows = {r["id"]: r for r in read_verdicts(tmp_path / "verdicts.jsonl")}
    assert rows["p1"]["outcome"] == "inconsistent"
    assert rows["p2"]["outcome"] == "unparseable"
    assert rows["p2"]["orders"][0]["verdict"] is None and "no 'Verdict" in rows["p2"]["orders"][0]["error"]


def test_judge_failing_mid_run_resumes_without_rejudging(tmp_path: Path) -> None:
    rows = [revised_row(f"p{i}", f"Answer {i}.", (f"Better answer {i}.", "complete"), (f"Best answer {i}.", "complete"))
            for i in range(6)]
    write_rows(tmp_path / "revised.jsonl", rows)
    total_pairs = 6 * 3  # rounds 1, 2 vs the original and round 2 vs round 1
    with StandinServer() as failing:
        # 7 answers, then the server breaks: at most 3 pairs can finish both orders
        failing.on("POST", PATH, *[verdict("Verdict: tie")] * 7, json_reply({"error": "model crashed"}, 500))
        first = judge(tmp_path, failing, "--vs-previous", "--concurrency", "2")
        assert first.exit_code == 1 and "rerun to retry" in first.output
        assert len(failing.requests_to(PATH)) > 7  # it kept trying the other pairs after the failure
    done = read_verdicts(tmp_path / "verdicts.jsonl")
    assert 1 <= len(done) <= 3 and all(r["outcome"] == "tie" for r in done)

    with StandinServer() as healthy:
        healthy.on("POST", PATH, verdict("Verdict: tie"))
        second = judge(tmp_path, healthy, "--vs-previous", "--concurrency", "2")
        assert second.exit_code == 0, second.output
        # exactly the unfinished pairs were judged, two orders each
        assert len(healthy.requests_to(PATH)) == 2 * (total_pairs - len(done))
    final = read_verdicts(tmp_path / "verdicts.jsonl")
    keys = [(r["id"], r["round"], r["versus"]) for r in final]
    assert len(keys) == len(set(keys)) == total_pairs


def test_output_of_another_judge_is_refused(tmp_path: Path, server: StandinServer) -> None:
    write_rows(tmp_path / "revised.jsonl", [revised_row("p1", "Red.", ("Crimson.", "complete"))])
    (tmp_path / "verdicts.jsonl").write_text(json.dumps(
        {"id": "p0", "round": 1, "versus": "original", "outcome": "win", "judge": "openai:other",
         "prompt_version": PROMPT_VERSION}) + "\n")
    result = judge(tmp_path, server)
    assert result.exit_code == 1 and "write to another file" in result.output
    assert server.requests_to(PATH) == []


def test_a_line_cut_by_an_interruption_is_rejudged(tmp_path: Path, server: StandinServer) -> None:
    write_rows(tmp_path / "revised.jsonl", [revised_row("p1", "Red.", ("Crimson.", "complete"))])
    (tmp_path / "verdicts.jsonl").write_text('{"id": "p1", "round": 1, "versus": "orig')  # no newline
    server.on("POST", PATH, verdict("Verdict: B"), verdict("Verdict: A"))
    assert judge(tmp_path, server).exit_code == 0
    assert [r["outcome"] for r in read_verdicts(tmp_path / "verdicts.jsonl")] == ["win"]
    assert len(server.requests_to(PATH)) == 2


def test_a_remote_judge_without_a_model_name_records_the_model_it_reports(tmp_path: Path, server: StandinServer) -> None:
    """A judge server left to serve its default model: rows name it by the model id it reports
    (`judge_model`) and by its address (`judge`), never as the embedded model."""
    write_rows(tmp_path / "revised.jsonl", [
        revised_row("p1", "Red.", ("Crimson red.", "complete")),
        revised_row("p2", "Blue.", ("Blue.", "complete")),  # identical: the judge is not asked
    ])
    reply = sse_reply(openai_chunks(["Verdict: B"], model="Qwen/Qwen2.5-72B-Instruct"))
    server.on("POST", PATH, reply, sse_reply(openai_chunks(["Verdict: A"], model="Qwen/Qwen2.5-72B-Instruct")))
    args = ["judge", "--input", str(tmp_path / "revised.jsonl"), "--output", str(tmp_path / "verdicts.jsonl"),
            "--judge-backend", "openai", "--judge-url", server.url, "--retries", "0", "--concurrency", "1"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in read_verdicts(tmp_path / "verdicts.jsonl")}
    assert rows["p1"]["judge_model"] == "Qwen/Qwen2.5-72B-Instruct"
    assert rows["p1"]["judge"].startswith("openai:default model at 127.0.0.1:") and "embedded" not in rows["p1"]["judge"]
    assert rows["p2"]["judge_model"] is None  # not asked: nothing reported a model
    assert rows["p2"]["judge"] == rows["p1"]["judge"]


def test_stats_refuse_a_verdicts_file_with_bad_lines(tmp_path: Path) -> None:
    """`stats --verdicts` never computes a rate from fewer rows than the file holds."""
    good = {"id": "p1", "round": 1, "versus": "original", "outcome": "win", "judge": "j", "prompt_version": "v"}
    path = tmp_path / "verdicts.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "p2", "round": "one"}) + "\nnot json\n"
                    + json.dumps({**good, "id": "p3"}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["stats", "--verdicts", str(path)])
    assert result.exit_code == 1
    assert f"{path}:2: 'round' must be an integer" in result.output and f"{path}:3: not valid JSON" in result.output
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {path}: 2 invalid lines (lines 2, 3")
