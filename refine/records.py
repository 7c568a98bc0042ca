"""Feedback records — (conversation, response, critique, revision) — and their validated
reading from JSONL and CSV files."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from refine.errors import FileProblem, RefineError
from refine.textfiles import csv_rows, jsonl_values


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class _Conversation(BaseModel):
    """A prompt given as plain text or as a chat ending with a user turn."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _one_prompt(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' is empty")
        if self.messages is not None:
            if not self.messages or self.messages[-1].role != "user":
                raise ValueError("'messages' must end with a user turn")
        return self

    def chat(self) -> list[dict[str, str]]:
        """The conversation as chat messages."""
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]


class EditItem(BaseModel):
    """One edit of a record's response (see refine.edits): `kind` replace / insert_after /
    append, the exact `span` of the response it changes ("" for append) and the new `text`."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["replace", "insert_after", "append"]
    span: str = ""
    text: str = ""


class FeedbackRecord(_Conversation):
    """One training example for the CnR model. `edits` (optional) turn `response` into
    `revision` when applied in order; the `edits` format trains on them, and a record without
    them gets edits derived from the difference (refine.edits.derive_edits)."""

    response: str = Field(min_length=1)
    critique: str = Field(min_length=1)
    revision: str = Field(min_length=1)
    edits: list[EditItem] | None = None
    source: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _edits_make_the_revision(self):
        if self.edits:
            from refine.edits import Edit, apply_edits

            try:
                edits = [Edit.from_json(e.model_dump()) for e in self.edits]
            except ValueError as exc:
                raise ValueError(f"edits: {exc}") from None
            result, marked = apply_edits(self.response, edits)
            dropped = [f"edit {i + 1} ({e.reason})" for i, e in enumerate(marked) if not e.applied]
            if dropped:
                raise ValueError(f"edits: {', '.join(dropped)} cannot be applied to the response")
            if result.split() != self.revision.split():
                raise ValueError("edits: applied to the response they do not give the revision")
        return self

    def edit_list(self) -> list[Any]:
        """The record's edits as refine.edits.Edit objects: the stored ones, or ones derived
        from the response and the revision."""
        from refine.edits import Edit, derive_edits

        if self.edits is not None:
            return [Edit.from_json(e.model_dump()) for e in self.edits]
        return derive_edits(self.response, self.revision)


class PromptRow(_Conversation):
    """One input row of `refine revise`: a prompt and optionally an answer to revise.
    Other fields are kept and written back unchanged."""

    model_config = ConfigDict(extra="allow")
    response: str | None = None


@dataclass(frozen=True)
class RecordProblem:
    """Why one line of a file was refused."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class InvalidRecordsError(RefineError, ValueError):
    """A file had invalid lines and skipping them was not asked for. The message lists every
    bad line (up to 20) as `file:line: reason`, and ends with one line that sums them up."""

    def __init__(self, problems: list[RecordProblem], hint: str = "pass --skip-invalid to leave such lines out") -> None:
        self.problems = problems
        first = problems[0]
        self.details: list[str] = []  # shown before the summary (refine.errors)
        if len(problems) == 1:
            self.summary = f"{first}; fix the line, or {hint}"
        else:
            self.details = [f"  {p}" for p in problems[:20]]
            if len(problems) > 20:
                self.details.append(f"  … and {len(problems) - 20} more")
            numbers = ", ".join(str(p.line) for p in problems[:10]) + (", …" if len(problems) > 10 else "")
            files = {p.path for p in problems}
            where = first.path if len(files) == 1 else f"{first.path} and {len(files) - 1} more file(s)"
            self.summary = (f"{where}: {len(problems)} invalid lines (lines {numbers}, listed above); fix them, "
                            f"or {hint}")
        super().__init__("\n".join([*self.details, self.summary]))


def _reason(error: ValidationError) -> str:
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _raw_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or an Exception) for each non-blank row of a JSONL/CSV file.
    A CSV file that is not UTF-8 or not valid CSV raises FileProblem (its rows cannot be told apart)."""
    if path.suffix.lower() == ".csv":
        for number, row in csv_rows(path):
            row = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
            for key in ("messages", "meta"):
                if isinstance(row.get(key), str):
                    try:
                        row[key] = json.loads(row[key])
                    except json.JSONDecodeError as exc:
                        row[key] = ValueError(f"{key}: not valid JSON ({exc.msg})")
            bad = [v for v in row.values() if isinstance(v, Exception)]
            yield number, (bad[0] if bad else row)
        return
    for number, value in jsonl_values(path):
        yield number, (ValueError(value.reason) if isinstance(value, FileProblem) else value)


def read_rows(path: str | Path, model: type[BaseModel], *, skip_invalid: bool = False,
              problems: list[RecordProblem] | None = None, hint: str | None = None) -> list[Any]:
    """Read and validate every row of a JSONL or CSV file as `model`.

    Raises InvalidRecordsError listing every bad line (file, line, reason) unless
    `skip_invalid`; then bad lines are left out and appended to `problems`. `hint` is what the
    error tells the user to do besides fixing the lines (default: pass --skip-invalid).
    """
    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, None, "no such file" if not path.exists() else "not a file")
    good: list[Any] = []
    bad: list[RecordProblem] = []
    for number, raw in _raw_rows(path):
        if isinstance(raw, Exception):
            bad.append(RecordProblem(str(path), number, str(raw)))
            continue
        if not isinstance(raw, dict):
            bad.append(RecordProblem(str(path), number, f"expected an object, got {type(raw).__name__}"))
            continue
        try:
            good.append(model.model_validate(raw))
        except ValidationError as exc:
            bad.append(RecordProblem(str(path), number, _reason(exc)))
    if bad and not skip_invalid:
        raise InvalidRecordsError(bad, hint) if hint else InvalidRecordsError(bad)
    if problems is not None:
        problems.extend(bad)
    return good


def read_records(path: str | Path, *, skip_invalid: bool = False,
                 problems: list[RecordProblem] | None = None) -> list[FeedbackRecord]:
    """Read feedback records from a JSONL or CSV file (see `read_rows`)."""
    return read_rows(path, FeedbackRecord, skip_invalid=skip_invalid, problems=problems)


def write_jsonl(path: str | Path, rows: Iterable[BaseModel | dict]) -> int:
    """Write rows as JSONL (UTF-8, one object per line); returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as fh:
        for row in rows:
            data = row.model_dump(exclude_none=True) if isinstance(row, BaseModel) else row
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
            count += 1
    return count


def end_cut_line(path: str | Path) -> None:
    """Repair a last line cut by an interruption, so rows appended next start on their own line:
    a cut line that is not a whole JSON value is dropped (its row runs again), a whole one only
    gets its newline."""
    path = Path(path)
    if not path.exists() or not path.stat().st_size:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, 2)
        if fh.read(1) == b"\n":
            return
        cut = fh.seek(0, 2)
        while cut > 0:  # find the start of the last line, reading backwards
            step = min(cut, 1 << 16)
            fh.seek(cut - step)
            newline = fh.read(step).rfind(b"\n")
            if newline >= 0:
                cut = cut - step + newline + 1
                break
            cut -= step
        fh.seek(cut)
        last = fh.read()
        try:
            json.loads(last)
        except ValueError:  # JSONDecodeError or UnicodeDecodeError: an incomplete row
            fh.truncate(cut)
            return
        fh.write(b"\n")
