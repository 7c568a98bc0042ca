"""`python -m refine revise` end to end against a stand-in OpenAI-compatible server: output
schema, resume, database persistence, refusal of invalid input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.standin_servers import StandinServer, openai_chunks, sse_reply

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/chat/completions"


def revise(tmp_path: Path, server: StandinServer, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFINE_BASE_BACKEND": "openai", "REFINE_BASE_URL": server.url,
           "REFINE_CNR_BACKEND": "openai", "REFINE_RETRIES": "0", "OPENAI_API_KEY": "sk-secret-test-key"}
    return subprocess.run([sys.executable, "-m", "refine", "revise", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_revise_writes_rounds_resumes_and_stores(tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "in.jsonl", [
        {"id": "q1", "prompt": "What is 3 times 4?", "response": "7", "generator": "some-model"},
        {"prompt": "Name a prime."},
    ])
    out, db = tmp_path / "out.jsonl", tmp_path / "refine.db"
    answer = sse_reply(openai_chunks(["Critique: Wrong.", "\nRevision: ", "12"]))
    with StandinServer() as server:
        server.on("POST", PATH, answer)
        first = revise(tmp_path, server, "--input", str(rows), "--output", str(out), "--rounds", "2",
                       "--limit", "1", "--db", str(db))
        assert first.returncode == 0, first.stderr
        second = revise(tmp_path, server, "--input", str(rows), "--output", str(out), "--rounds", "2", "--db", str(db))
        assert second.returncode == 0, second.stderr
        assert "resuming: 1 of 2 prompts already" in second.stderr
        requests = server.requests_to(PATH)
    assert all(r.headers.get("authorization") == "Bearer sk-secret-test-key" for r in requests)
    assert "sk-secret-test-key" not in first.stderr + second.stderr

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["q1", "row-2"]  # q1 was not redone on resume
    q1 = lines[0]
    assert q1["generator"] == "some-model" and q1["response"] == "7"
    assert [r["round"] for r in q1["rounds"]] == [1, 2]
    assert q1["rounds"][0] | {"ttft": None, "duration": None} == {
        "round": 1, "critique": "Wrong.", "revision": "12", "status": "complete", "rejection": None,
        "stop_reason": None, "nothing_to_fix": False, "error": None, "finish_reason": "stop", "ttft": None,
        "duration": None, "tokens": 3}
    # round 2 copied round 1: rejected as unchanged, and round 1's revision stays the answer
    assert q1["rounds"][1]["stop_reason"] == "unchanged" and q1["final"] == "12" and q1["stop_reason"] == "unchanged"
    assert (q1["rounds"][1]["status"], q1["rounds"][1]["rejection"]) == ("rejected", "unchanged")
    # the run ends with what became of the rounds
    assert "What became of the rounds" in second.stderr and "| accepted | unchanged |" in second.stderr
    # row 2 had no answer: the base model wrote one first
    assert lines[1]["response"] == "Critique: Wrong.\nRevision: 12"

    with sqlite3.connect(db) as conn:
        turns = conn.execute("select answer from turns order by id").fetchall()
        rounds = conn.execute("select turn_id, revision, status from rounds order by turn_id, id").fetchall()
    assert turns == [("7",), ("Critique: Wrong.\nRevision: 12",)]
    assert rounds == [(1, "12", "complete"), (1, "12", "rejected"), (2, "12", "complete"), (2, "12", "rejected")]


def test_invalid_input_is_refused_with_line_numbers(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": ""}\nnot json\n{"messages": [{"role": "assistant", "content": "x"}]}\n')
    with StandinServer() as server:
        result = revise(tmp_path, server, "--input", str(bad), "--output", str(tmp_path / "o.jsonl"))
        assert server.requests == []
    assert result.returncode != 0
    assert f"{bad}:2: 'prompt' is empty" in result.stderr
    assert f"{bad}:3: not valid JSON" in result.stderr
    assert f"{bad}:4: 'messages' must end with a user turn" in result.stderr
    assert "--skip-invalid" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_revise_on_a_local_model_whose_template_refuses_a_system_role(tmp_path: Path) -> None:
    """../shared/cases/template-refuses-system: a Gemma-like template raises on a system message.
    `revise` folds the system prompt into the user turn instead of crashing."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "tests" / "data" / "tokenizer_refuses_system")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         eos_token_id=2, bos_token_id=1, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    model_dir = tmp_path / "gemma-like"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    rows = write_rows(tmp_path / "one.jsonl", [{"id": "r1", "prompt": "What is the capital of Australia?",
                                                "response": "Sydney."}])
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "REFINE_CNR_ADAPTER": "none", "REFINE_CNR_MODE": "trained"}
    result = subprocess.run([sys.executable, "-m", "refine", "revise", "--input", str(rows), "--output", str(out),
                             "--cnr-model", str(model_dir), "--rounds", "1", "--cnr-max-new-tokens", "8",
                             "--dtype", "float32"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "TemplateError" not in result.stderr
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    # the random model's round runs (and is rejected as cut off): it was not refused by the template
    assert row["rounds"][0]["status"] == "rejected" and row["rounds"][0]["rejection"] == "cut_off"
    assert row["final"] == "Sydney."
