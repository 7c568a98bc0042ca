"""`python -m refine build-data`: CnR records with edits from the raw public datasets, on small
real fixtures (tests/data/build_data/, see its README.md) — never the shared data folder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from refine.build_data import _by_priority, example_chars, normalized_prompt
from refine.cli import main
from refine.cnr_format import NOTHING_TO_FIX
from refine.edits import apply_edits
from refine.records import FeedbackRecord, read_records
from refine.training.data import is_heldout

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "data" / "build_data"
SHARE = 0.3  # held-out share in these tests, so that both sides of a few records are populated
OUTPUTS = ("train.jsonl", "heldout.jsonl", "card.json", "README.md")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["build-data", *args])


def build(output: Path, *args: str, source: Path = FIXTURES) -> Result:
    result = run("--source", str(source), "--output", str(output), "--heldout-share", str(SHARE), *args)
    assert result.exit_code == 0, result.output
    return result


def records(folder: Path) -> tuple[list[FeedbackRecord], list[FeedbackRecord]]:
    return read_records(folder / "train.jsonl"), read_records(folder / "heldout.jsonl")


def card(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "card.json").read_text(encoding="utf-8"))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def copy_fixtures(tmp_path: Path) -> Path:
    target = tmp_path / "source"
    shutil.copytree(FIXTURES, target)
    return target


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("cnr")
    build(output)
    return output


@pytest.fixture(scope="module")
def everything(built: Path) -> list[FeedbackRecord]:
    train, heldout = records(built)
    return train + heldout


# --- the records ---------------------------------------------------------------------------


def test_every_record_has_edits_that_give_its_revision(everything: list[FeedbackRecord]) -> None:
    assert {r.source for r in everything} == {"lamp", "coachlm", "shepherd", "alpaca_eval-gpt4"}
    for r in everything:
        assert r.edits is not None, r.id
        result, marked = apply_edits(r.response, r.edit_list())
        assert all(e.applied for e in marked), r.id
        assert result.split() == r.revision.split(), r.id
        assert r.meta["parent_id"], r.id
        assert r.meta["critique"].startswith(("derived:", "human:")), r.id
        assert r.source == "alpaca_eval-gpt4" or r.meta["edits"].startswith(("derived:", "human:")), r.id
        if r.source == "alpaca_eval-gpt4":
            assert (r.edits, r.critique, r.revision) == ([], NOTHING_TO_FIX, r.response)
        else:
            assert r.edits and r.critique != NOTHING_TO_FIX, r.id


def test_lamp_records_use_the_writers_edits_and_a_short_derived_critique(everything: list[FeedbackRecord]) -> None:
    lamp = {r.id: r for r in everything if r.source == "lamp"}
    assert len(lamp) == 9  # 3 writers x 3 paragraphs
    rows = json.loads((FIXTURES / "lamp" / "W12_edits.json").read_text(encoding="utf-8"))
    row = next(r for r in rows if r["id"] == "W12_reannotation_1")
    record = lamp["lamp-W12_reannotation_1"]
    assert (record.prompt, record.response, record.revision) == (row["instruction"], row["preedit"], row["postedit"])
    assert record.meta["edits"] == "human: the writer's fine_grained_edits"
    assert record.meta["critique"] == "derived: from LAMP edit categories"
    for r in lamp.values():
        assert r.critique.startswith("The answer has") and len(r.critique) < 400, r.critique
        quotes = re.findall(r'"([^"]+?)…?"', r.critique)
        assert 1 <= len(quotes) <= 3
        flat = " ".join(r.response.split())
        assert all(q.rstrip("…") in flat for q in quotes), (r.id, quotes)
    # one writer's list does not reproduce the postedit: the edits are derived from the paragraph
    assert lamp["lamp-W3_reannotation_2"].meta["edits"].startswith("derived:")


def test_coachlm_keeps_only_revisions_that_edit_the_response(built: Path, everything: list[FeedbackRecord]) -> None:
    kept = {r.id: r for r in everything if r.source == "coachlm"}
    assert set(kept) == {"coachlm-4", "coachlm-5", "coachlm-6", "coachlm-7"}
    # the slogan row's one edit covers the whole slogan (spans are whole words): a whole replacement
    assert card(built)["sources"]["coachlm"]["dropped"] == {
        "instruction or input revised": 1, "more than 4 edits": 1, "unchanged": 1, "whole-response replacement": 2,
    }
    for r in kept.values():
        assert 1 <= len(r.edits or []) <= 4
        assert not any(e.kind == "replace" and e.span.split() == r.response.split() for e in r.edits or [])
        assert r.meta["critique"].startswith("derived:")
        assert "noinput" not in (r.prompt or "").replace(" ", "").lower()  # Alpaca's placeholder input is dropped
    assert kept["coachlm-5"].critique.startswith("It should open with a sentence introducing the answer")


def test_shepherd_keeps_short_answers_with_the_human_critique(built: Path, everything: list[FeedbackRecord]) -> None:
    shepherd = {r.id: r for r in everything if r.source == "shepherd"}
    rows = {row["id"]: row for row in jsonl(FIXTURES / "shepherd" / "human_data_for_model.jsonl")}
    assert set(shepherd) == {f"shepherd-{i}" for i in rows if len(rows[i]["answer"].strip()) <= 600}
    assert "shepherd-17" not in shepherd
    for r in shepherd.values():
        assert r.critique == rows[int(r.id.split("-")[1])]["feedback"]
        assert r.meta["revision_kind"] == "reference"
    # ids 15 and 16 ask the same question: one parent, one side of the split
    assert shepherd["shepherd-15"].meta["parent_id"] == shepherd["shepherd-16"].meta["parent_id"] == "shepherd-15"
    assert card(built)["sources"]["shepherd"]["dropped"] == {"answer over 600 characters": 1}


# --- the evaluation set --------------------------------------------------------------------


def eval_prompts() -> tuple[set[str], set[str]]:
    rows = jsonl(FIXTURES / "alpaca_eval" / "chatgpt.dev.jsonl")[:40]
    return {r["id"] for r in rows}, {normalized_prompt(r["prompt"]) for r in rows}


def test_the_40_evaluation_prompts_never_appear(built: Path, everything: list[FeedbackRecord]) -> None:
    ids, prompts = eval_prompts()
    assert not [r.id for r in everything if normalized_prompt(r.prompt or "") in prompts]
    assert not [r.id for r in everything if r.meta["parent_id"] in ids]
    gpt4 = jsonl(FIXTURES / "alpaca_eval" / "gpt4.dev.jsonl")
    assert [r["id"] for r in gpt4[:3]] == [r["id"] for r in jsonl(FIXTURES / "alpaca_eval" / "chatgpt.dev.jsonl")[:3]]
    nothing_to_fix = {r.meta["parent_id"] for r in everything if r.source == "alpaca_eval-gpt4"}
    assert nothing_to_fix and nothing_to_fix <= {r["id"] for r in gpt4[3:]}
    assert card(built)["sources"]["alpaca_eval"]["dropped"] == {"evaluation prompt": 3, "over 3600 characters": 1}


def test_an_evaluation_prompt_in_another_source_is_left_out(tmp_path: Path) -> None:
    source = copy_fixtures(tmp_path)
    path = source / "coachlm" / "expert_revision_dataset.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    prompt = jsonl(FIXTURES / "alpaca_eval" / "chatgpt.dev.jsonl")[7]["prompt"]
    rows[5]["Raw Instruction"] = rows[5]["Revised Instruction"] = prompt
    rows[5]["Raw Input"] = rows[5]["Revised Input"] = ""
    path.write_text(json.dumps(rows, indent=4), encoding="utf-8")
    build(tmp_path / "out", source=source)
    train, heldout = records(tmp_path / "out")
    assert "coachlm-5" not in {r.id for r in train + heldout}
    assert card(tmp_path / "out")["sources"]["coachlm"]["dropped"]["evaluation prompt"] == 1


# --- split, sample, limits -----------------------------------------------------------------


def test_split_is_by_parent_and_stable(tmp_path: Path, built: Path) -> None:
    train, heldout = records(built)
    assert train and heldout
    assert all(not is_heldout(r, SHARE) for r in train) and all(is_heldout(r, SHARE) for r in heldout)
    side: dict[str, set[str]] = {}
    for name, group in (("train", train), ("heldout", heldout)):
        for r in group:
            side.setdefault(r.meta["parent_id"], set()).add(name)
    assert all(len(sides) == 1 for sides in side.values())
    # LAMP's three writers of a paragraph share a parent, even where one writer's instruction differs
    lamp = [r for r in train + heldout if r.source == "lamp"]
    assert {r.meta["parent_id"] for r in lamp} == {"lamp-paragraph-1", "lamp-paragraph-2", "lamp-paragraph-41"}
    assert len({r.prompt for r in lamp if r.meta["parent_id"] == "lamp-paragraph-41"}) == 2
    # another sample size, or a source left out, moves no record to the other side
    source = copy_fixtures(tmp_path)
    shutil.rmtree(source / "coachlm")
    result = build(tmp_path / "other", "--train-size", "4", "--skip-missing", source=source)
    assert "coachlm" in result.output and "missing" in result.output
    other_train, other_heldout = records(tmp_path / "other")
    assert len(other_train) == 4
    assert {r.id for r in other_heldout} == {r.id for r in heldout if r.source != "coachlm"}
    assert {r.id for r in other_train} <= {r.id for r in train}
    assert card(tmp_path / "other")["skipped_sources"] == ["coachlm"]


def test_train_size_samples_the_training_side_by_source_priority(tmp_path: Path, built: Path) -> None:
    build(tmp_path / "small", "--train-size", "6")
    train, heldout = records(tmp_path / "small")
    assert len(train) == 6
    assert {r.id for r in heldout} == {r.id for r in records(built)[1]}
    assert sum(r.source == "alpaca_eval-gpt4" for r in train) == 1  # round(6 * 0.15)
    assert _by_priority({"shepherd": 9, "lamp": 3, "coachlm": 4}, 10) == {"lamp": 3, "coachlm": 4, "shepherd": 3}
    assert _by_priority({"shepherd": 3, "lamp": 2}, 10) == {"lamp": 2, "shepherd": 3}
    sides = card(tmp_path / "small")["sources"]
    assert sum(s["train"] for s in sides.values()) == 6


def test_max_chars_drops_long_records_and_says_how_many(tmp_path: Path) -> None:
    result = build(tmp_path / "short", "--max-chars", "2300")
    train, heldout = records(tmp_path / "short")
    assert train and all(example_chars(r) <= 2300 for r in train + heldout)
    dropped = card(tmp_path / "short")["sources"]["lamp"]["dropped"]["over 2300 characters"]
    assert dropped >= 3
    assert f"{dropped} over 2300 characters" in result.output


def test_rerun_is_byte_identical(tmp_path: Path, built: Path) -> None:
    build(tmp_path / "again", source=copy_fixtures(tmp_path))  # same files, another folder
    for name in OUTPUTS:
        assert (tmp_path / "again" / name).read_bytes() == (built / name).read_bytes(), name


def test_card_gives_counts_provenance_and_licences(built: Path) -> None:
    data = card(built)
    train, heldout = records(built)
    for name, source in (("lamp", "lamp"), ("coachlm", "coachlm"), ("shepherd", "shepherd"),
                         ("alpaca_eval", "alpaca_eval-gpt4")):
        assert data["sources"][name]["train"] == sum(r.source == source for r in train)
        assert data["sources"][name]["heldout"] == sum(r.source == source for r in heldout)
        assert len(data["sources"][name]["commit"]) == 40
    assert data["train"]["records"] == len(train)
    assert 0 < data["train"]["nothing_to_fix_share"] < 0.5
    assert 0 <= data["train"]["whole_response_replacement_share"] <= 1
    assert {"median", "p95", "max"} <= set(data["train"]["example_chars"])
    readme = (built / "README.md").read_text(encoding="utf-8")
    for text in ("CC BY-NC 4.0", "BSD-3-Clause", "Apache-2.0", "Alpaca-52k", "Non-commercial",
                 "fced0ab2d3068244152d1302a8bd8e9f538440f5", "29b1863bbecd616e2052a0d664507b69bde60fff",
                 "is_heldout", "derived", "| lamp | 9 | 9 |"):
        assert text in readme, text


# --- errors --------------------------------------------------------------------------------


def error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: ")
    return lines[-1]


def test_a_missing_source_file_is_one_sentence_and_exit_1(tmp_path: Path) -> None:
    source = copy_fixtures(tmp_path)
    (source / "lamp" / "W12_edits.json").unlink()
    completed = subprocess.run([sys.executable, "-m", "refine", "build-data", "--source", str(source), "--output",
                                str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                               check=False)
    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and str(source / "lamp" / "W12_edits.json") in last
    assert "--skip-missing" in last
    assert not (tmp_path / "out" / "train.jsonl").exists()
    # with --skip-missing the build goes on without LAMP, and says so
    result = build(tmp_path / "out", "--skip-missing", source=source)
    assert "W12_edits.json is missing" in result.output
    train, heldout = records(tmp_path / "out")
    assert train and not [r for r in train + heldout if r.source == "lamp"]


def test_a_missing_source_folder_is_one_sentence(tmp_path: Path) -> None:
    line = error_line(run("--source", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")))
    assert str(tmp_path / "nowhere") in line


def _cut_coachlm(source: Path) -> tuple[Path, str]:
    path = source / "coachlm" / "expert_revision_dataset.json"
    path.write_text(path.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    return path, "cut off"


def _bad_shepherd_line(source: Path) -> tuple[Path, str]:
    path = source / "shepherd" / "human_data_for_model.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2][:40] + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    return path, ":3:"


def _lamp_without_postedit(source: Path) -> tuple[Path, str]:
    path = source / "lamp" / "W16_edits.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    del rows[1]["postedit"]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path, ":1 (row 2): a LAMP row needs the field 'postedit'"


def _gpt4_wrong_type(source: Path) -> tuple[Path, str]:
    path = source / "alpaca_eval" / "gpt4.dev.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    row = json.loads(lines[4])
    row["response"] = ["not", "text"]
    lines[4] = json.dumps(row) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    return path, ":5: the AlpacaEval field 'response' is a list"


@pytest.mark.parametrize("spoil", [_cut_coachlm, _bad_shepherd_line, _lamp_without_postedit, _gpt4_wrong_type])
def test_a_malformed_source_is_one_sentence_naming_the_file(tmp_path: Path, spoil) -> None:
    source = copy_fixtures(tmp_path)
    path, detail = spoil(source)
    line = error_line(run("--source", str(source), "--output", str(tmp_path / "out")))
    assert str(path) in line and detail in line, line
