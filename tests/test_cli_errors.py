"""One clear sentence for every input and setting error (issue 11).

One table: each row runs a command (`python -m refine …` or `python app.py`) as a subprocess
over real bad files in tmp_path and real SQLite files, and checks that it exits non-zero, that
the last line of stderr is the one message (`Error: …` naming the file and line, or the
setting) and that no traceback is printed anywhere. No model is loaded: the adapter check and
every input check run before any model would.

Kinds: user files (JSONL, JSON arrays, CSV; every reader) that are not UTF-8, are cut off or
hold wrong types; output and database paths that cannot be written; database URLs that are
malformed, of an unknown dialect or unreachable; a database written by a newer Refine
(tests/data/cases/database-newer-than-code); adapter folders that are missing, empty or made for
another base model (tests/data/cases/adapter-other-base); settings out of range.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "data" / "cases"
NEWER_DB = CASES / "database-newer-than-code" / "db_at_0005.sqlite"
OTHER_BASE = CASES / "adapter-other-base" / "adapter_other_base"
UNREACHABLE = "postgresql+psycopg://u@127.0.0.1:1/x"

PROMPT = {"id": "a", "prompt": "What is the capital of Australia?", "response": "Sydney."}
RECORD = {**PROMPT, "critique": "Wrong city.", "revision": "Canberra."}
VERDICT = {"id": "a", "round": 1, "versus": "original", "outcome": "win", "judge": "local:embedded",
           "prompt_version": "pairwise-v1"}
REVISED = {**PROMPT, "rounds": [{"round": 1, "critique": "c", "revision": "Canberra.", "status": "complete"}]}
ALIGNER = {"question": "q", "answer": "a", "correction": "c"}


def jsonl(*rows: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def not_utf8(*rows: object) -> bytes:
    """Row 1 fine, row 2 with a Latin-1 é (0xe9)."""
    return jsonl(rows[0]) + json.dumps(rows[1]).encode().replace(b"X", b"\xe9") + b"\n"


def cut(*rows: object) -> bytes:
    """Rows, the last one cut in the middle (no newline): an interrupted write."""
    whole = jsonl(*rows)
    return whole[: len(whole) - len(json.dumps(rows[-1])) // 2 - 1]


@dataclass
class Files:
    """The bad inputs, written once into a temporary folder."""

    dir: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def add(self, name: str, data: bytes) -> None:
        """Write `name`; its placeholder is the name without `.jsonl`/`.json`, else with `_csv`."""
        path = self.dir / name
        path.write_bytes(data)
        stem, _, suffix = name.partition(".")
        self.paths[stem if suffix in ("jsonl", "json", "") else f"{stem}_{suffix}"] = path

    def __getitem__(self, key: str) -> str:
        return str(self.paths[key])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    f = Files(tmp_path_factory.mktemp("bad-inputs"))
    f.add("prompts_latin1.jsonl", not_utf8(PROMPT, {**PROMPT, "id": "b", "prompt": "Caf X?"}))
    f.add("prompts_cut.jsonl", cut(PROMPT, {**PROMPT, "id": "b"}))
    f.add("prompts_types.jsonl", jsonl(PROMPT, {**PROMPT, "id": "b", "prompt": 5}))
    f.add("prompts_cut.csv", b'id,prompt,response\na,Hi?,Hello.\nb,"Why?,Because.\n')
    f.add("prompts_latin1.csv", b"id,prompt,response\na,Hi?,Hello.\nb,Caf\xe9?,Yes.\n")
    f.add("prompts_utf16.jsonl", "\ufeff".encode("utf-16-le") + json.dumps(PROMPT).encode("utf-16-le"))
    f.add("records.jsonl", jsonl(RECORD, {**RECORD, "id": "b"}))
    f.add("records_types.jsonl", jsonl(RECORD, {**RECORD, "id": "b", "critique": ["a", "list"]}))
    f.add("records_cut.jsonl", cut(RECORD, {**RECORD, "id": "b"}))
    f.add("records_latin1.jsonl", not_utf8(RECORD, {**RECORD, "id": "b", "critique": "Caf X."}))
    f.add("revised_types.jsonl", jsonl(REVISED, {**REVISED, "id": "b", "rounds": [{"round": "one", "status": "complete"}]}))
    f.add("revised_cut.jsonl", cut(REVISED, {**REVISED, "id": "b"}))
    f.add("verdicts_latin1.jsonl", not_utf8(VERDICT, {**VERDICT, "id": "b", "judge": "X"}))
    f.add("verdicts_cut.jsonl", cut(VERDICT, {**VERDICT, "id": "b"}, {**VERDICT, "id": "c"}))
    f.add("verdicts_types.jsonl", jsonl(VERDICT, {**VERDICT, "id": "b", "round": "one"}, {**VERDICT, "id": "c"}))
    f.add("verdicts_outcome.jsonl", jsonl(VERDICT, {**VERDICT, "id": "b", "outcome": "better"}))
    f.add("annotations_cut.json", b'[\n  {"preference": 2, "generator_2": "m"},\n  {"preference": 1, "gen')
    f.add("annotations_types.json", b'[\n  {"preference": 2},\n  ["not", "an", "object"]\n]\n')
    f.add("annotations_nopref.json", b'[\n  {"preference": 2},\n  {"winner": 1}\n]\n')
    f.add("annotations_latin1.json", b'[\n  {"preference": 2},\n  {"preference": 1, "note": "caf\xe9"}\n]\n')
    f.add("table_cut.csv", b'winner,group\nmodel_b,x\n"model_a,x\n')
    f.add("aligner_cut.json", b'[\n  {"question": "q", "answer": "a", "correction": "c"},\n  {"question": "q2", "ans')
    f.add("aligner_types.jsonl", jsonl(ALIGNER, {**ALIGNER, "question": 5}))
    f.add("aligner_latin1.jsonl", not_utf8(ALIGNER, {**ALIGNER, "answer": "caf X"}))
    f.add("aligner_cut_line.jsonl", cut(ALIGNER, {**ALIGNER, "question": "q2"}))
    f.add("blocker", b"a file where a folder should be\n")
    f.add("empty.db", b"")
    (f.dir / "empty_adapter").mkdir()
    f.paths["empty_adapter"] = f.dir / "empty_adapter"
    f.paths["missing"] = f.dir / "no-such-folder"
    newer = f.dir / "newer.db"
    shutil.copyfile(NEWER_DB, newer)
    f.paths["newer"] = newer
    return f


@dataclass(frozen=True)
class Case:
    """A command line (`{name}` stands for a bad input's path), extra environment, and what the
    last line of stderr must contain."""

    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    app: bool = False


def case(id: str, command: str, *expect: str, env: dict[str, str] | None = None, app: bool = False) -> Case:
    return Case(id, tuple(command.split()), expect, tuple((env or {}).items()), app)


REVISE = "revise --output {missing_out_ok} --cnr-adapter none"
NEWER_MESSAGE = ("was written by a newer version of Refine (revision 0005, unknown to this one, whose newest is 0008); "
                 "upgrade Refine")

TABLE: list[Case] = [
    # --- revise: its input (JSONL and CSV), output, database and adapter
    case("revise-not-utf8", f"{REVISE} --input {{prompts_latin1}}", "{prompts_latin1}:2:", "not UTF-8"),
    case("revise-utf16", f"{REVISE} --input {{prompts_utf16}}", "{prompts_utf16}:1:", "UTF-16", "UTF-8"),
    case("revise-cut-line", f"{REVISE} --input {{prompts_cut}}", "{prompts_cut}:2:", "cut off"),
    case("revise-wrong-type", f"{REVISE} --input {{prompts_types}}", "{prompts_types}:2:", "prompt"),
    case("revise-csv-cut", f"{REVISE} --input {{prompts_cut_csv}}", "{prompts_cut_csv}:3:", "cut off"),
    case("revise-csv-not-utf8", f"{REVISE} --input {{prompts_latin1_csv}}", "{prompts_latin1_csv}:3:", "not UTF-8"),
    case("revise-output-folder-missing", "revise --cnr-adapter none --input {records} --output {missing}/out.jsonl",
         "{missing}/out.jsonl", "does not exist"),
    case("revise-output-under-a-file", "revise --cnr-adapter none --input {records} --output {blocker}/out.jsonl",
         "{blocker}/out.jsonl", "not a folder"),
    case("revise-db-under-a-file", f"{REVISE} --input {{records}} --db {{blocker}}/x.db", "{blocker}", "REFINE_DATABASE_URL"),
    case("revise-db-unreachable", f"{REVISE} --input {{records}} --db {UNREACHABLE}", "cannot reach", "127.0.0.1:1"),
    case("revise-db-newer", f"{REVISE} --input {{records}} --db {{newer}}", NEWER_MESSAGE),
    case("revise-adapter-other-base", "revise --output {missing_out_ok} --input {records} --cnr-adapter " + str(OTHER_BASE),
         "adapter_other_base", "some-org/tiny-llama-64", "SmolLM2-135M-Instruct", "REFINE_CNR_ADAPTER"),
    case("revise-adapter-missing", "revise --output {missing_out_ok} --input {records} --cnr-adapter {missing}",
         "{missing}", "does not exist", "REFINE_CNR_ADAPTER"),
    case("revise-adapter-empty", "revise --output {missing_out_ok} --input {records} --cnr-adapter {empty_adapter}",
         "{empty_adapter}", "empty", "REFINE_CNR_ADAPTER"),
    case("revise-setting-out-of-range", f"{REVISE} --input {{records}} --temperature 9", "REFINE_TEMPERATURE"),
    case("revise-setting-from-env", f"{REVISE} --input {{records}}", "REFINE_ROUNDS", env={"REFINE_ROUNDS": "eleven"}),
    # --- judge
    case("judge-wrong-type", "judge --input {revised_types} --output {missing_out_ok}", "{revised_types}:2:", "round"),
    case("judge-cut-line", "judge --input {revised_cut} --output {missing_out_ok}", "{revised_cut}:2:", "cut off"),
    case("judge-not-utf8", "judge --input {prompts_latin1} --output {missing_out_ok}", "{prompts_latin1}:", "lines 1, 2"),
    case("judge-output-folder-missing", "judge --input {records} --output {missing}/v.jsonl", "--output", "{missing}",
         "does not exist"),
    case("judge-remote-without-url", "judge --input {records} --output {missing_out_ok} --judge-backend openai",
         "--judge-url"),
    # --- stats: verdicts (never computed from fewer rows), other tools' files, the database, outputs
    case("stats-verdicts-not-utf8", "stats --verdicts {verdicts_latin1}", "{verdicts_latin1}:2:", "not UTF-8"),
    case("stats-verdicts-cut", "stats --verdicts {verdicts_cut}", "{verdicts_cut}:3:", "cut off"),
    case("stats-verdicts-wrong-type", "stats --verdicts {verdicts_types}", "{verdicts_types}:2:", "'round'"),
    case("stats-verdicts-unknown-outcome", "stats --verdicts {verdicts_outcome}", "{verdicts_outcome}:2:", "'outcome'"),
    case("stats-alpaca-array-cut", "stats {annotations_cut} --format alpaca_eval", "{annotations_cut}:3:", "cut off"),
    case("stats-alpaca-not-an-object", "stats {annotations_types} --format alpaca_eval", "{annotations_types}:3:",
         "expected an object"),
    case("stats-alpaca-no-preference", "stats {annotations_nopref} --format alpaca_eval", "{annotations_nopref}:3:",
         "'preference'"),
    case("stats-alpaca-not-utf8", "stats {annotations_latin1} --format alpaca_eval", "{annotations_latin1}:3:",
         "not UTF-8"),
    case("stats-table-csv-cut", "stats {table_cut_csv} --format table --columns preference=winner --values win=model_b",
         "{table_cut_csv}:3:", "cut off"),
    case("stats-db-newer", "stats --db {newer}", NEWER_MESSAGE),
    case("stats-db-url-malformed", "stats", "'not a url'", "malformed", "REFINE_DATABASE_URL",
         env={"REFINE_DATABASE_URL": "not a url"}),
    case("stats-json-folder-missing", "stats --verdicts {records} --json {missing}/s.json", "--json", "does not exist"),
    case("stats-out-dir-under-a-file", "stats --verdicts {records} --out-dir {blocker}/stats", "--out-dir",
         "{blocker} is a file"),
    # --- import
    case("import-json-array-cut", "import aligner {aligner_cut} --output {missing_out_ok}", "{aligner_cut}:3:", "cut off"),
    case("import-wrong-type", "import aligner {aligner_types} --output {missing_out_ok}", "{aligner_types}:2:",
         "'question'", "str"),
    case("import-not-utf8", "import aligner {aligner_latin1} --output {missing_out_ok}", "{aligner_latin1}:2:",
         "not UTF-8"),
    case("import-cut-line", "import aligner {aligner_cut_line} --output {missing_out_ok}", "{aligner_cut_line}:2:",
         "cut off"),
    case("import-output-folder-missing", "import aligner {aligner_types} --output {missing}/r.jsonl", "--output",
         "does not exist"),
    # --- export
    case("export-db-newer", "export feedback {missing_out_ok} --db {newer}", NEWER_MESSAGE),
    case("export-db-unreachable", f"export table votes {{missing_out_ok}} --db {UNREACHABLE}", "cannot reach"),
    case("export-out-folder-missing", "export preferences {missing}/p.jsonl --db {newer}", "'OUT'", "does not exist"),
    # --- db
    case("db-current-newer", "db current --db {newer}", NEWER_MESSAGE),
    case("db-upgrade-newer", "db upgrade --db {newer}", NEWER_MESSAGE),
    case("db-url-malformed", "db current --db postgresql://u@host:port/x", "malformed", "REFINE_DATABASE_URL"),
    case("db-url-unknown-dialect", "db current --db nosuchdb://u@host/x", "unknown dialect", "'nosuchdb'"),
    case("db-url-unreachable", f"db current --db {UNREACHABLE}", "cannot reach", "127.0.0.1:1", "REFINE_DATABASE_URL"),
    case("db-read-only", "db upgrade --db sqlite:///file:{empty_db}?mode=ro&uri=true", "read-only", "REFINE_DATABASE_URL"),
    case("db-not-a-database", "db current --db {blocker}", "{blocker}", "not a database"),
    case("db-unknown-revision", "db upgrade --revision 9999 --db {missing_out_ok}.db", "'9999'", "0005a"),
    # --- train, evaluate-model, sweep: the data is checked before any model loads
    case("train-wrong-type", "train --data {records_types} --output {missing}/run", "{records_types}:2:", "critique"),
    case("train-cut-line", "train --data {records_cut} --output {missing}/run", "{records_cut}:2:", "cut off"),
    case("train-not-utf8", "train --data {records_latin1} --output {missing}/run", "{records_latin1}:2:", "not UTF-8"),
    case("train-output-under-a-file", "train --data {records} --output {blocker}/run", "--output", "{blocker} is a file"),
    case("evaluate-wrong-type", "evaluate-model --data {records_types} --model base", "{records_types}:2:", "critique"),
    case("evaluate-adapter-other-base", "evaluate-model --data {records} --model " + str(OTHER_BASE),
         "adapter_other_base", "some-org/tiny-llama-64", "SmolLM2-135M-Instruct"),
    case("evaluate-output-folder-missing", "evaluate-model --data {records} --model base --output {missing}/r.json",
         "--output", "does not exist"),
    case("sweep-sizes-not-numbers", "sweep --data {records} --output {missing}/sweep --sizes 100,many", "--sizes",
         "'many'"),
    case("sweep-cut-line", "sweep --data {records_cut} --output {missing}/sweep", "{records_cut}:2:", "cut off"),
    # --- experiment
    case("experiment-wrong-type", "experiment --prompts {prompts_types} --out {missing}/exp", "{prompts_types}:2:",
         "--prompts"),
    case("experiment-out-under-a-file", "experiment --prompts {records} --out {blocker}/exp", "--out",
         "{blocker} is a file"),
    case("experiment-adapter-other-base", "experiment --prompts {records} --out {fresh_dir} --rounds 1 --cnr-adapter "
         + str(OTHER_BASE), "some-org/tiny-llama-64", "REFINE_CNR_ADAPTER"),
    # --- the app's start-up: settings, adapter and database, all before any model loads
    case("app-adapter-other-base", "", "cannot start", "some-org/tiny-llama-64", "REFINE_CNR_ADAPTER",
         env={"REFINE_CNR_ADAPTER": str(OTHER_BASE)}, app=True),
    case("app-adapter-empty", "", "cannot start", "{empty_adapter}", "REFINE_CNR_ADAPTER",
         env={"REFINE_CNR_ADAPTER": "{empty_adapter}"}, app=True),
    case("app-db-newer", "--database-url sqlite:///{newer}", "cannot start", NEWER_MESSAGE, app=True),
    case("app-db-unreachable", "", "cannot start", "cannot reach", "REFINE_DATABASE_URL",
         env={"REFINE_DATABASE_URL": UNREACHABLE}, app=True),
    case("app-db-url-not-a-url", "", "cannot start", "malformed", "REFINE_DATABASE_URL",
         env={"REFINE_DATABASE_URL": "data/refine.db"}, app=True),
    case("app-setting-out-of-range", "", "REFINE_ROUNDS", env={"REFINE_ROUNDS": "0"}, app=True),
]


def _fill(text: str, f: Files, tmp_path: Path) -> str:
    values = {**{k: str(v) for k, v in f.paths.items()},
              "missing_out_ok": str(tmp_path / "out.jsonl"), "fresh_dir": str(tmp_path / "run")}
    return text.format(**values)


def run(argv: list[str], env: dict[str, str], cwd: Path, *, app: bool) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REFINE_")}
    full_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT),
                    REFINE_DATA_DIR=str(cwd / "data"), **env)
    command = [sys.executable, str(ROOT / "app.py")] if app else [sys.executable, "-m", "refine"]
    return subprocess.run([*command, *argv], check=False, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("row", TABLE, ids=[c.id for c in TABLE])
def test_one_clear_sentence(row: Case, files: Files, tmp_path: Path) -> None:
    argv = [_fill(a, files, tmp_path) for a in row.args]
    env = {k: _fill(v, files, tmp_path) for k, v in row.env}
    result = run(argv, env, tmp_path, app=row.app)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error: "), result.stderr
    for expected in row.expect:
        assert _fill(expected, files, tmp_path) in last, f"{expected!r} not in the last line:\n{result.stderr}"


def test_debug_shows_the_traceback(files: Files, tmp_path: Path) -> None:
    """`--debug` (or REFINE_DEBUG=1) prints the traceback first; the last line is the same sentence."""
    for argv, env in ((["--debug", "db", "current", "--db", str(files["newer"])], {}),
                      (["db", "current", "--db", str(files["newer"])], {"REFINE_DEBUG": "1"})):
        result = run(argv, env, tmp_path, app=False)
        assert result.returncode == 1 and "Traceback" in result.stderr
        assert NEWER_MESSAGE in result.stderr.strip().splitlines()[-1]


# --- what is accepted: a UTF-8 byte-order mark -------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_a_utf8_byte_order_mark_is_accepted_by_every_reader(tmp_path: Path) -> None:
    from refine.importers import import_file
    from refine.judging.judge import load_verdicts
    from refine.records import PromptRow, read_records, read_rows
    from refine.verdict_formats import read_alpaca_eval

    (tmp_path / "r.jsonl").write_bytes(BOM + jsonl(RECORD))
    (tmp_path / "r.csv").write_bytes(BOM + b"prompt,response,critique,revision\nQ,A,C,R\n")
    (tmp_path / "p.jsonl").write_bytes(BOM + jsonl(PROMPT))
    (tmp_path / "v.jsonl").write_bytes(BOM + jsonl(VERDICT))
    (tmp_path / "a.json").write_bytes(BOM + b'[{"preference": 2}]')
    (tmp_path / "al.json").write_bytes(BOM + json.dumps([ALIGNER]).encode())
    assert read_records(tmp_path / "r.jsonl")[0].critique == "Wrong city."
    assert read_records(tmp_path / "r.csv")[0].prompt == "Q"
    assert read_rows(tmp_path / "p.jsonl", PromptRow)[0].id == "a"
    assert load_verdicts(tmp_path / "v.jsonl")[0]["outcome"] == "win"
    assert read_alpaca_eval(tmp_path / "a.json") == {"all": [2.0]}
    assert import_file("aligner", tmp_path / "al.json")[0].revision == "c"


def test_an_interrupted_output_line_is_dropped_before_appending(tmp_path: Path) -> None:
    """A resumed `revise` / `judge` drops the line an interruption cut (its row runs again), so the
    file stays readable by `stats --verdicts`, which refuses bad lines."""
    from refine.judging.judge import load_verdicts
    from refine.records import end_cut_line

    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(cut(VERDICT, {**VERDICT, "id": "b"}))
    end_cut_line(path)
    assert path.read_bytes() == jsonl(VERDICT)
    path.write_bytes(jsonl(VERDICT)[:-1])  # a whole row that only lost its newline keeps it
    end_cut_line(path)
    assert [r["id"] for r in load_verdicts(path)] == ["a"]


def test_help_stays_fast() -> None:
    """`python -m refine --help` imports no command module."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "refine", "--help"], check=False, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--debug" in result.stdout
    imported = result.stderr
    for heavy in ("torch", "transformers", "sqlalchemy", "pydantic", "gradio"):
        assert f" {heavy}\n" not in imported and f" {heavy}." not in imported, heavy
