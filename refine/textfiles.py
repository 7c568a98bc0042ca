"""Reading the user's JSONL, JSON and CSV files, with every problem as `file:line: reason`.

Shared by every reader of a user file (records, prompts, revise outputs, verdicts, other tools'
verdict files, public datasets):

- the text must be UTF-8; a UTF-8 byte-order mark at the start is accepted (and dropped), a
  UTF-16 one is refused with what to do;
- a last line, JSON array or CSV row cut off by an interrupted write is named as such;
- a JSON array's elements carry the line they start on.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from refine.errors import FileProblem

SAVE_AS_UTF8 = "save the file as UTF-8"


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> str:
    column = len(raw[:exc.start].decode("utf-8", "replace")) + 1
    return f"bytes that are not UTF-8 (0x{raw[exc.start]:02x} at column {column}); {SAVE_AS_UTF8}"


def _check_start(path: Path, head: bytes) -> None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileProblem(path, 1, f"the file is UTF-16 (it starts with a UTF-16 byte-order mark); {SAVE_AS_UTF8}")


def decoded_lines(path: str | Path) -> Iterator[tuple[int, str | FileProblem]]:
    """(line number, text) for each line of a file, line ends kept; a line that is not UTF-8 comes
    as a FileProblem instead of its text (the caller decides whether it ends the file)."""
    path = Path(path)
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1:
                _check_start(path, raw)
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, FileProblem(path, number, _not_utf8(raw, exc))


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line; the first line that is not UTF-8 raises FileProblem."""
    for number, line in decoded_lines(path):
        if isinstance(line, FileProblem):
            raise line
        yield number, line


def read_text(path: str | Path) -> str:
    """The whole file as text (UTF-8, a byte-order mark dropped); FileProblem names the line of
    the first byte that is not UTF-8."""
    path = Path(path)
    data = path.read_bytes()
    _check_start(path, data)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        raw = data[start:end if end >= 0 else len(data)]
        raise FileProblem(path, line, _not_utf8(raw, UnicodeDecodeError("utf-8", raw, exc.start - start,
                                                                         exc.end - start, exc.reason))) from None


def _ends_early(text: str, exc: json.JSONDecodeError) -> bool:
    """Whether JSON failed because the text ended before the value did."""
    return exc.msg.startswith("Unterminated string") or exc.pos >= len(text.rstrip())


def json_line_problem(line: str, exc: json.JSONDecodeError) -> str:
    """Why a JSONL line does not parse; a last line without its newline that ends before its
    value does is called cut off."""
    if not line.endswith("\n") and _ends_early(line, exc):
        return "the line is cut off: the file ends inside its JSON value (was the file cut short?)"
    return f"not valid JSON ({exc.msg} at column {exc.colno})"


def jsonl_values(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, value or FileProblem) for each non-blank line of a JSONL file."""
    for number, line in decoded_lines(path):
        if isinstance(line, FileProblem):
            yield number, line
            continue
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, FileProblem(path, number, json_line_problem(line, exc))


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_problem(path: str | Path, text: str, exc: json.JSONDecodeError, what: str) -> FileProblem:
    if _ends_early(text, exc):
        return FileProblem(path, exc.lineno, f"the {what} is cut off: the file ends inside it (was the file cut "
                                             "short?); complete or replace the file")
    return FileProblem(path, exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})")


def json_array_items(path: str | Path, text: str) -> Iterator[tuple[int, Any]]:
    """(line the element starts on, element) for each element of a JSON array file; a malformed
    or cut-off array raises FileProblem at its line."""
    decoder = json.JSONDecoder()
    start = text.index("[")
    pos = start + 1
    ws = " \t\r\n"

    def skip(p: int) -> int:
        while p < len(text) and text[p] in ws:
            p += 1
        return p

    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        end = skip(pos + 1)
        if end < len(text):
            raise FileProblem(path, _line_of(text, end), "text after the end of the JSON array")
        return
    while True:
        begin = skip(pos)
        try:
            value, pos = decoder.raw_decode(text, begin)
        except json.JSONDecodeError as exc:
            raise _json_problem(path, text, exc, "JSON array") from None
        yield _line_of(text, begin), value
        pos = skip(pos)
        if pos >= len(text):
            raise FileProblem(path, _line_of(text, len(text.rstrip())),
                              "the JSON array is cut off: the file ends before its closing ']' (was the file cut short?)")
        if text[pos] == ",":
            pos += 1
            continue
        if text[pos] == "]":
            end = skip(pos + 1)
            if end < len(text):
                raise FileProblem(path, _line_of(text, end), "text after the end of the JSON array")
            return
        raise FileProblem(path, _line_of(text, pos), f"expected ',' or ']' after an element of the JSON array, "
                                                     f"found {text[pos]!r}")


def json_or_jsonl_values(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line, value or FileProblem) for a JSON array file (one value per element) or a JSONL file."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        yield from json_array_items(path, text)
        return
    if text.lstrip().startswith("{") and not _is_jsonl(text):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _json_problem(path, text, exc, "JSON object") from None
        raise FileProblem(path, 1, f"expected a JSON array of objects or one JSON object per line, found one "
                                   f"{type(value).__name__} over several lines")
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, FileProblem(path, number, json_line_problem(line, exc))


def _is_jsonl(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        json.loads(first)
        return True
    except json.JSONDecodeError:
        return False


def csv_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line the row starts on, row as a dict by header) for each row of a CSV file; a file that
    is not UTF-8, malformed quoting or a row cut off inside a quoted field raise FileProblem."""
    path = Path(path)
    lines = (line for _, line in text_lines(path))
    reader = csv.DictReader(lines, strict=True)
    try:
        reader.fieldnames  # reads the header  # noqa: B018
    except csv.Error as exc:
        raise FileProblem(path, 1, f"not valid CSV ({exc})") from None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise FileProblem(path, start, "the row is cut off: the file ends inside a quoted field "
                                               "(a closing quote is missing, or the file was cut short)") from None
            raise FileProblem(path, start, f"not valid CSV ({exc})") from None
        yield start, row


def read_json_object(path: str | Path, what: str = "a JSON object") -> dict[str, Any]:
    """A JSON file holding one object (a settings or config file); text that is not UTF-8, JSON
    that does not parse or is cut off, or another kind of value raise FileProblem at its line."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_problem(path, text, exc, "JSON object") from None
    if not isinstance(value, dict):
        raise FileProblem(path, 1, f"expected {what}, found a JSON {type(value).__name__}")
    return value
