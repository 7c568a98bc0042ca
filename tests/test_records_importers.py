"""Feedback records from JSONL and CSV (validation with line numbers) and the importers of
public schemas (HelpSteer3-Edit, Shepherd, Aligner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from refine.cnr_format import NOTHING_TO_FIX
from refine.importers import ImportSchemaError, import_file, no_change_records
from refine.records import InvalidRecordsError, read_records

SHARED_SHEPHERD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "shepherd"

GOOD = {"id": "a", "prompt": "2+2?", "response": "5", "critique": "Wrong sum.", "revision": "4"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


# --- records -------------------------------------------------------------------------------


def test_valid_jsonl(tmp_path: Path) -> None:
    chat = {**GOOD, "id": 7, "prompt": None, "messages": [{"role": "user", "content": "Hi"}]}
    del chat["prompt"]
    records = read_records(_jsonl(tmp_path / "r.jsonl", [GOOD, "", chat]))
    assert [r.id for r in records] == ["a", "7"]
    assert records[1].chat() == [{"role": "user", "content": "Hi"}]


def test_invalid_jsonl_reports_every_line_and_refuses(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "r.jsonl",
        [
            GOOD,
            "{not json",
            {k: v for k, v in GOOD.items() if k != "critique"},
            {**GOOD, "prompt": None, "messages": [{"role": "assistant", "content": "x"}]},
            [1, 2],
        ],
    )
    with pytest.raises(InvalidRecordsError) as info:
        read_records(path)
    problems = {p.line: p.reason for p in info.value.problems}
    assert set(problems) == {2, 3, 4, 5}
    assert "not valid JSON" in problems[2]
    assert "critique" in problems[3]
    assert "user turn" in problems[4] or "exactly one" in problems[4]
    assert "expected an object" in problems[5]
    assert f"{path}:3" in str(info.value)


def test_skip_invalid_keeps_the_good_lines(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "r.jsonl", [GOOD, "{not json", GOOD])
    problems: list = []
    records = read_records(path, skip_invalid=True, problems=problems)
    assert len(records) == 2 and [p.line for p in problems] == [2]


def test_csv_valid_and_invalid(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(
        "id,messages,response,critique,revision\n"
        '1,"[{""role"": ""user"", ""content"": ""Hi""}]",Hello,Too short.,"Hello! How can I help?"\n',
        encoding="utf-8",
    )
    [record] = read_records(good)
    assert record.messages[0].content == "Hi" and record.revision == "Hello! How can I help?"
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,response,critique,revision\nQ,A,C,R\nQ,A,,R\n", encoding="utf-8")
    with pytest.raises(InvalidRecordsError) as info:
        read_records(bad)
    assert [(p.line, "critique" in p.reason) for p in info.value.problems] == [(3, True)]


# --- importers -----------------------------------------------------------------------------

HELPSTEER3_EDIT = {
    "domain": "general",
    "language": "english",
    "context": [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Rain falls."},
        {"role": "user", "content": "Make it 5-7-5."},
    ],
    "original_response": "Rain falls on the roof\nsoftly\nthe end",
    "feedback": ["The second line has 2 syllables, not 7.", "The last line is not a haiku line."],
    "edited_response": "Rain taps on the roof\nsoftly the gutters whisper\nthe garden drinks deep",
}


def test_helpsteer3_edit(tmp_path: Path) -> None:
    [record] = import_file("helpsteer3-edit", _jsonl(tmp_path / "h.jsonl", [HELPSTEER3_EDIT]))
    assert record.messages[-1].content == "Make it 5-7-5." and len(record.messages) == 3
    assert record.critique.startswith("The second line") and "not a haiku line" in record.critique
    assert record.revision.startswith("Rain taps") and record.source == "helpsteer3-edit"
    assert record.meta == {"domain": "general", "language": "english"}
    single = {**HELPSTEER3_EDIT, "feedback": "One note."}
    assert import_file("helpsteer3-edit", _jsonl(tmp_path / "s.jsonl", [single]))[0].critique == "One note."


def test_aligner(tmp_path: Path) -> None:
    row = {
        "question": "Is it safe to eat raw chicken?",
        "answer": "Yes, it is fine.",
        "correction": "No: raw chicken can carry Salmonella; cook it to 74 °C.",
    }
    [record] = import_file("aligner", _jsonl(tmp_path / "a.jsonl", [row]))
    assert record.prompt == row["question"] and record.revision == row["correction"]
    assert "derived" in record.meta["critique"]


SHEPHERD_ROWS = [
    {
        "id": 0,
        "dataset": "GSM8K",
        "question": "Ann has 3 pens and buys 2. How many?",
        "answer": "3 + 2 = 6. The answer is 6.\n\n",
        "feedback": "3 + 2 is 5, not 6.",
    }
]
SHEPHERD_RAW = [
    {
        "id": 0,
        "dataset": "GSM8K",
        "latestLabel": {},
        "metadata": {
            "context": "Ann has 3 pens and buys 2. How many?",
            "output_candidate": "3 + 2 = 6. The answer is 6.\n\n",
            "output_correct": "Ann has 3 + 2 = 5 pens. The answer is 5",
        },
    }
]


def test_shepherd_joins_reference_answers(tmp_path: Path) -> None:
    _jsonl(tmp_path / "human_data_raw.jsonl", SHEPHERD_RAW)
    [record] = import_file("shepherd", _jsonl(tmp_path / "human_data_for_model.jsonl", SHEPHERD_ROWS))
    assert record.id == "shepherd-0" and record.response == "3 + 2 = 6. The answer is 6."
    assert record.critique == "3 + 2 is 5, not 6." and record.revision.endswith("The answer is 5")
    assert record.meta["revision_kind"] == "reference" and "not an edit" in record.meta["note"]


@pytest.mark.skipif(not SHARED_SHEPHERD.is_dir(), reason="shared Shepherd data not present")
def test_shepherd_real_rows(tmp_path: Path) -> None:
    lines = (SHARED_SHEPHERD / "human_data_for_model.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    sample = tmp_path / "human_data_for_model.jsonl"
    sample.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records = import_file("shepherd", sample, raw=SHARED_SHEPHERD / "human_data_raw.jsonl")
    assert len(records) == 5 and all(r.revision and r.critique for r in records)


def test_no_change_records_are_labelled(tmp_path: Path) -> None:
    _jsonl(tmp_path / "human_data_raw.jsonl", SHEPHERD_RAW)
    records = import_file("shepherd", _jsonl(tmp_path / "human_data_for_model.jsonl", SHEPHERD_ROWS))
    [derived] = no_change_records(records * 9, share=0.1)
    assert derived.critique == NOTHING_TO_FIX and derived.response == derived.revision == records[0].revision
    assert derived.source == "shepherd-derived-nochange" and derived.meta["parent_id"] == "shepherd-0"
    assert (
        no_change_records(
            import_file(
                "aligner", _jsonl(tmp_path / "a.jsonl", [{"question": "q", "answer": "a", "correction": "c"}])
            ),
            share=0.5,
        )
        == []
    )


@pytest.mark.parametrize("fmt", ["helpsteer3-edit", "aligner"])
def test_wrong_schema_is_named(tmp_path: Path, fmt: str) -> None:
    path = _jsonl(tmp_path / "x.jsonl", SHEPHERD_ROWS)
    with pytest.raises(ImportSchemaError, match=r"x.jsonl:1: not a row of the .* schema: missing field"):
        import_file(fmt, path)


def test_import_cli(tmp_path: Path) -> None:
    from refine.import_cli import command

    _jsonl(tmp_path / "human_data_raw.jsonl", SHEPHERD_RAW)
    source = _jsonl(tmp_path / "human_data_for_model.jsonl", SHEPHERD_ROWS)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(command, ["shepherd", str(source), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(read_records(out)) == 1
    bad = CliRunner().invoke(command, ["aligner", str(source), "--output", str(out)])
    assert bad.exit_code != 0 and "missing field 'correction'" in bad.output
