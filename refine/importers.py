"""Converters from public feedback datasets to Refine's FeedbackRecord.

Each importer reads rows in one published schema and raises ImportSchemaError, naming the
file, line and missing or mistyped field, for a row in another schema.

- HelpSteer3-Edit (nvidia/HelpSteer3, `edit` subset): `context` (chat list ending with a user
  turn), `original_response`, `feedback` (list of strings or a string), `edited_response`.
- Shepherd (facebookresearch/Shepherd `data/`): `human_data_for_model.jsonl` rows
  `{id, dataset, question, answer, feedback}` joined by `id` with `human_data_raw.jsonl`, whose
  `metadata.output_correct` is the revision — a correct reference answer, not an edit.
- Aligner (PKU-Alignment/aligner-20K): `question`, `answer`, `correction`. It has no written
  critique, so the critique is a fixed derived sentence, marked in `meta`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from refine.cnr_format import NOTHING_TO_FIX
from refine.errors import FileProblem, RefineError
from refine.records import FeedbackRecord
from refine.textfiles import json_or_jsonl_values

ALIGNER_CRITIQUE = "The response can be improved: it is corrected in the revision below."


class ImportSchemaError(RefineError, ValueError):
    """A row does not have the fields of the schema being imported."""


def read_json_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) for each row of a JSONL file, or each element of a JSON array file
    (numbered by the line it starts on). Text that is not UTF-8, a line or array that does not
    parse (or is cut off) raise ImportSchemaError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ImportSchemaError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        for number, value in json_or_jsonl_values(path):
            if isinstance(value, FileProblem):  # a line that does not parse
                raise ImportSchemaError(f"{value}; fix or delete the line")
            yield number, value
    except FileProblem as exc:
        raise ImportSchemaError(str(exc)) from None


def _field(row: Any, name: str, kind: type | tuple[type, ...], where: str, schema: str) -> Any:
    if not isinstance(row, dict):
        raise ImportSchemaError(f"{where}: expected a {schema} object, got {type(row).__name__}")
    if name not in row:
        raise ImportSchemaError(
            f"{where}: not a row of the {schema} schema: missing field {name!r} (has {sorted(row)}); "
            "is FORMAT right for this file?"
        )
    value = row[name]
    if not isinstance(value, kind):
        raise ImportSchemaError(f"{where}: {schema} field {name!r} has type {type(value).__name__}, "
                                f"expected {_type_names(kind)}; fix the row, or check that FORMAT fits the file")
    return value


def _type_names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _record(where: str, **fields: Any) -> FeedbackRecord:
    try:
        return FeedbackRecord.model_validate(fields)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ImportSchemaError(f"{where}: {reasons}") from exc


def helpsteer3_edit(rows: Iterable[tuple[int, Any]], path: str = "<rows>") -> Iterator[FeedbackRecord]:
    """HelpSteer3-Edit rows → records (critique = the annotators' feedback, one per paragraph)."""
    schema = "HelpSteer3-Edit"
    for number, row in rows:
        where = f"{path}:{number}"
        context = _field(row, "context", list, where, schema)
        feedback = _field(row, "feedback", (list, str), where, schema)
        critique = feedback if isinstance(feedback, str) else "\n\n".join(f.strip() for f in feedback if f)
        meta = {k: row[k] for k in ("domain", "language") if k in row}
        yield _record(
            where,
            id=str(row.get("id", f"helpsteer3-edit-{number}")),
            messages=context,
            response=_field(row, "original_response", str, where, schema),
            critique=critique,
            revision=_field(row, "edited_response", str, where, schema),
            source="helpsteer3-edit",
            meta=meta,
        )


def shepherd(
    rows: Iterable[tuple[int, Any]], raw: dict[str, dict], path: str = "<rows>"
) -> Iterator[FeedbackRecord]:
    """Shepherd rows → records; `raw` maps id → human_data_raw row (for `metadata.output_correct`)."""
    schema = "Shepherd"
    for number, row in rows:
        where = f"{path}:{number}"
        key = str(_field(row, "id", (int, str), where, schema))
        annotation = raw.get(key)
        if annotation is None:
            raise ImportSchemaError(f"{where}: Shepherd id {key} is not in the raw annotations file")
        metadata = _field(annotation, "metadata", dict, f"raw annotation {key}", "Shepherd raw")
        reference = _field(metadata, "output_correct", str, f"raw annotation {key} metadata", "Shepherd raw")
        yield _record(
            where,
            id=f"shepherd-{key}",
            prompt=_field(row, "question", str, where, schema),
            response=_field(row, "answer", str, where, schema).strip(),
            critique=_field(row, "feedback", str, where, schema),
            revision=reference,
            source="shepherd",
            meta={
                "dataset": row.get("dataset"),
                "revision_kind": "reference",
                "note": "the revision is a correct reference answer, not an edit of the response",
            },
        )


def aligner(rows: Iterable[tuple[int, Any]], path: str = "<rows>") -> Iterator[FeedbackRecord]:
    """Aligner rows → records with a fixed derived critique (Aligner has no written critique)."""
    schema = "Aligner"
    for number, row in rows:
        where = f"{path}:{number}"
        yield _record(
            where,
            id=str(row.get("id", f"aligner-{number}")),
            prompt=_field(row, "question", str, where, schema),
            response=_field(row, "answer", str, where, schema),
            critique=ALIGNER_CRITIQUE,
            revision=_field(row, "correction", str, where, schema),
            source="aligner",
            meta={"critique": "derived: Aligner has no written critique"},
        )


def no_change_records(records: Iterable[FeedbackRecord], share: float) -> list[FeedbackRecord]:
    """Labelled "nothing to fix" records made from reference revisions (response = revision =
    the reference answer), for about `share` of the final set; deterministic (every k-th record).

    Only records whose `meta.revision_kind` is "reference" qualify: an edit is not known to be
    flawless, a correct reference answer is."""
    eligible = [r for r in records if r.meta.get("revision_kind") == "reference"]
    if share <= 0 or not eligible:
        return []
    wanted = round(len(eligible) * share / (1 - share))
    step = max(1, len(eligible) // max(1, wanted))
    picked = eligible[::step][:wanted]
    return [
        r.model_copy(
            update={
                "id": f"{r.id}-nochange",
                "response": r.revision,
                "critique": NOTHING_TO_FIX,
                "source": f"{r.source}-derived-nochange",
                "meta": {
                    **r.meta,
                    "derived": "no-change: the response is the reference answer",
                    "parent_id": r.id,
                },
            }
        )
        for r in picked
    ]


def _raw_index(path: Path) -> dict[str, dict]:
    return {str(row.get("id")): row for _, row in read_json_rows(path) if isinstance(row, dict)}


def import_file(fmt: str, path: str | Path, *, raw: str | Path | None = None) -> list[FeedbackRecord]:
    """Read a file in a public schema (`helpsteer3-edit`, `shepherd`, `aligner`) as records.

    For Shepherd, `raw` is human_data_raw.jsonl (default: beside `path`)."""
    path = Path(path)
    rows = read_json_rows(path)
    if fmt == "shepherd":
        raw_path = Path(raw) if raw else path.with_name("human_data_raw.jsonl")
        if not raw_path.is_file():
            raise ImportSchemaError(f"{raw_path}: no such file: Shepherd's raw annotations are needed (give --raw)")
        return list(shepherd(rows, _raw_index(raw_path), str(path)))
    return list(IMPORTERS[fmt](rows, str(path)))


IMPORTERS: dict[str, Callable[..., Iterator[FeedbackRecord]]] = {
    "helpsteer3-edit": helpsteer3_edit,
    "shepherd": shepherd,
    "aligner": aligner,
}
