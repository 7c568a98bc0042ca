"""Training data: validated records, a fixed held-out split by id, and the prompt-completion
examples SFT trains on — the prompt is exactly the CnR request the app sends."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refine.cnr_format import CnRFormat, cnr_messages, cnr_target
from refine.errors import RefineError
from refine.records import FeedbackRecord, read_records


class TrainingDataError(RefineError, ValueError):
    """The training data cannot be used (missing, empty, or invalid)."""


@dataclass(frozen=True)
class DataSplit:
    """Records to train on and records to evaluate on (never trained on)."""

    train: list[FeedbackRecord]
    heldout: list[FeedbackRecord]


def split_key(record: FeedbackRecord) -> str:
    """What decides a record's side of the split: its parent's id for a derived record, else its
    id, else a hash of its content — so a record and anything derived from it stay together."""
    key = record.meta.get("parent_id") or record.id
    if key:
        return str(key)
    content = f"{record.chat()}\x00{record.response}\x00{record.critique}\x00{record.revision}"
    return hashlib.sha256(content.encode()).hexdigest()


def record_id(record: FeedbackRecord) -> str:
    """The record's id, or a content hash for records without one."""
    return record.id or split_key(record)


def is_heldout(record: FeedbackRecord, share: float) -> bool:
    """Deterministic: the first 8 hex digits of sha256(split key) as a fraction below `share`."""
    digest = hashlib.sha256(split_key(record).encode()).hexdigest()
    return int(digest[:8], 16) / 0x1_0000_0000 < share


def load_records(path: str | Path, *, skip_invalid: bool = False) -> list[FeedbackRecord]:
    """Read and validate a records file; refuse a missing, empty or invalid one with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such records file")
    try:
        records = read_records(path, skip_invalid=skip_invalid)
    except ValueError as exc:  # InvalidRecordsError lists every bad line
        raise TrainingDataError(str(exc)) from exc
    if not records:
        raise TrainingDataError(f"{path}: no records (the file is empty or every line was skipped)")
    return records


def split_records(
    records: list[FeedbackRecord],
    *,
    eval_records: list[FeedbackRecord] | None = None,
    heldout_share: float = 0.1,
    limit: int | None = None,
    seed: int = 42,
) -> DataSplit:
    """Train/held-out split. With `eval_records` those are held out (and any training record
    sharing a split key with them is dropped); otherwise about `heldout_share` by id hash.
    Training records come in a seeded random order, which is the order they are trained in;
    `limit` keeps the first N of it (so smaller sets are prefixes of larger ones)."""
    if eval_records is not None:
        keys = {split_key(r) for r in eval_records}
        train = [r for r in records if split_key(r) not in keys]
        heldout = list(eval_records)
    else:
        train = [r for r in records if not is_heldout(r, heldout_share)]
        heldout = [r for r in records if is_heldout(r, heldout_share)]
    train = train[:]
    random.Random(seed).shuffle(train)
    if limit is not None:
        train = train[:limit]
    if not train:
        raise TrainingDataError("no training records left after holding out the evaluation records")
    return DataSplit(train=train, heldout=heldout)


def to_example(record: FeedbackRecord, fmt: CnRFormat = "rewrite") -> dict[str, Any]:
    """A conversational prompt-completion example: prompt = the CnR request in format `fmt`
    (rendered by the chat template with the generation prompt, as at inference); completion =
    the CnR target (in `edits`, the record's edits, or edits derived from its revision)."""
    edits = record.edit_list() if fmt == "edits" else None
    return {
        "prompt": cnr_messages(record.chat(), record.response, fmt=fmt),
        "completion": [
            {"role": "assistant",
             "content": cnr_target(record.critique, record.revision, record.response, fmt=fmt, edits=edits)}
        ],
    }


def to_dataset(records: list[FeedbackRecord], fmt: CnRFormat = "rewrite") -> Any:
    """A datasets.Dataset of prompt-completion examples in format `fmt`."""
    from datasets import Dataset

    return Dataset.from_list([to_example(r, fmt) for r in records])
