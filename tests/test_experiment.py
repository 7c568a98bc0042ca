"""`refine experiment` end to end, offline: on a tiny random model (every artefact, resume,
settings without secrets), and with a stand-in CnR server whose revisions parse, judged by the
tiny local model (whose answers are recorded as unparseable, never guessed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refine.cli import main
from refine.judging.judge import read_verdicts
from tests.standin_servers import Recorded, Reply, StandinServer, openai_chunks, sse_reply

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECRET = "sk-never-written-7f3a"
ARTEFACTS = {"command.txt", "settings.json", "prompts.jsonl", "revised.jsonl", "verdicts.jsonl", "stats.md",
             "stats.json", "winrate.png", "outcomes.md"}
# Long enough not to collapse any of the sample answers (acceptance rule `collapsed`).
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
            "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth")
REVISION = " ".join(f"The {w} step explains the {w} part of the question." for w in ORDINALS)


def experiment(out: Path, model: Path, *extra: str):
    args = ["experiment", "--prompts", "samples/chatgpt_answers.jsonl", "--limit", "2", "--rounds", "2",
            "--out", str(out), "--base-model", str(model), "--cnr-model", str(model), "--cnr-adapter", "none",
            "--cnr-max-new-tokens", "12", "--judge-model", str(model), "--judge-max-new-tokens", "4",
            "--dtype", "float32", *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_experiment_on_a_tiny_model_writes_every_artefact(tmp_path: Path, tiny_model_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINE_CNR_API_KEY", SECRET)
    monkeypatch.setenv("REFINE_DATABASE_URL", f"postgresql://refine:{SECRET}@db/refine")
    out = tmp_path / "run"
    result = experiment(out, tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == ARTEFACTS
    assert all(SECRET not in p.read_bytes().decode("latin-1") for p in out.iterdir())

    assert [json.loads(line)["id"] for line in (out / "prompts.jsonl").read_text().splitlines()] == [
        "alpaca_eval-0", "alpaca_eval-20"]
    revised = [json.loads(line) for line in (out / "revised.jsonl").read_text().splitlines()]
    assert len(revised) == 2
    # random weights never write the CnR markers: round 1 fails, is recorded as skipped, not judged
    verdicts = read_verdicts(out / "verdicts.jsonl")
    assert [(v["round"], v["outcome"]) for v in verdicts] == [(1, "skipped"), (1, "skipped")]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rounds"][0]["skipped"] == 2 and stats["rounds"][0]["win_rate"] is None
    assert "| vs original | 1" in (out / "stats.md").read_text() and "| vs original | 1" in result.output
    assert "| 1 | 2 | 2 |" in (out / "outcomes.md").read_text()  # round 1: 2 failed of 2
    png = (out / "winrate.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    from matplotlib.image import imread

    assert imread(out / "winrate.png").shape[2] in (3, 4)

    settings = json.loads((out / "settings.json").read_text())
    run = settings["run"]
    assert run["settings"]["rounds"] == 2 and run["settings"]["stop_early"] is False
    assert run["settings"]["cnr_model"] == str(tiny_model_dir) and run["cnr"]["adapter"] is None
    assert run["judge"] == {"backend": "local", "model": str(tiny_model_dir), "url": None, "max_new_tokens": 4,
                            "temperature": 0.0, "prompt_version": "pairwise-v1", "vs_previous": False}
    assert "base_api_key" not in json.dumps(settings) and settings["environment"]["transformers"]
    line = (out / "command.txt").read_text().splitlines()
    assert line[0].startswith("python -m refine experiment --prompts samples/chatgpt_answers.jsonl --out ")
    assert "--rounds 2" in line[0] and "--cnr-adapter none" in line[0]

    # the same command resumes: nothing is redone
    again = experiment(out, tiny_model_dir)
    assert again.exit_code == 0 and "already in" in again.output
    assert len((out / "revised.jsonl").read_text().splitlines()) == 2 and len(read_verdicts(out / "verdicts.jsonl")) == 2
    assert len((out / "command.txt").read_text().splitlines()) == 2
    # other settings are refused, naming what differs
    other = experiment(out, tiny_model_dir, "--vs-previous")
    assert other.exit_code == 1 and "judge.vs_previous: False then, True now" in other.output


class TwoRevisions(StandinServer):
    """Revises an original answer to REVISION, and REVISION to REVISION plus one sentence."""

    def next_reply(self, request: Recorded) -> Reply:
        self.requests.append(request)
        revised = f"Response to improve:\n{REVISION}" in request.json["messages"][-1]["content"]
        text = REVISION + (" It also links the sources." if revised else "")
        return sse_reply(openai_chunks(["Critique: Too short.", f"\nRevision: {text}"]))


def test_experiment_with_parseable_revisions_and_a_local_judge(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "run"
    with TwoRevisions() as cnr:
        result = experiment(out, tiny_model_dir, "--cnr-backend", "openai", "--cnr-url", cnr.url, "--vs-previous")
        assert result.exit_code == 0, result.output
        assert len(cnr.requests_to("/v1/chat/completions")) == 4  # 2 prompts × 2 rounds
    verdicts = read_verdicts(out / "verdicts.jsonl")
    keys = sorted((v["id"], v["round"], v["versus"]) for v in verdicts)
    assert keys == [(p, k, v) for p in ("alpaca_eval-0", "alpaca_eval-20")
                    for k, v in ((1, "original"), (2, "original"), (2, "previous"))]
    by_key = {(v["id"], v["round"], v["versus"]): v for v in verdicts}
    # the tiny random judge never writes a verdict line: recorded as unparseable, with its raw answers
    judged = by_key[("alpaca_eval-0", 1, "original")]
    assert judged["outcome"] == "unparseable" and len(judged["orders"]) == 2
    assert all(o["verdict"] is None and o["raw"] for o in judged["orders"])
    words = len(REVISION.split())
    assert judged["revision_words"] == words and judged["length_ratio"] == pytest.approx(words / judged["baseline_words"])
    rounds = json.loads((out / "stats.json").read_text())["rounds"]
    assert [(r["series"], r["round"], r["unparseable"], r["ties"], r["n"]) for r in rounds] == [
        ("vs original", 1, 2, 0, 0), ("vs original", 2, 2, 0, 0), ("vs previous", 2, 2, 0, 0)]
    assert "| 1 | 2 |" in (out / "outcomes.md").read_text()  # round 1: 2 accepted
