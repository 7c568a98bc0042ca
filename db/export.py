"""Streamed exports: votes as DPO preference pairs, feedback as training records, raw tables.

Rows are read with `yield_per` (server-side cursors where the driver has them), so memory
stays constant however large the database is.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, Select, Table, and_, func, select
from sqlalchemy.orm import aliased

from db.errors import InvalidInput
from db.models import Base, Feedback, Round, Turn, Vote

BATCH = 1000
SOURCE = "refine-app"


def _stream(engine: Engine, statement: Select) -> Iterator[Any]:
    with engine.connect() as connection:
        yield from connection.execution_options(yield_per=BATCH).execute(statement)


def _version(round_index: int, answer: str, revision: str | None) -> str | None:
    return answer if round_index == 0 else revision


def preference_rows(engine: Engine) -> Iterator[dict[str, Any]]:
    """One row per vote with a winner (ties and both-bad votes have none), in TRL's
    conversational preference format: `prompt` = the chat up to the user's turn, `chosen` and
    `rejected` = one assistant message each."""
    left, right = aliased(Round), aliased(Round)
    statement = (
        select(Turn.messages, Turn.answer, Vote.left_round, Vote.right_round, Vote.choice,
               left.revision.label("left_text"), right.revision.label("right_text"))
        .join(Turn, Turn.id == Vote.turn_id)
        .outerjoin(left, and_(left.turn_id == Vote.turn_id, left.round_index == Vote.left_round))
        .outerjoin(right, and_(right.turn_id == func.coalesce(Vote.right_turn_id, Vote.turn_id),
                               right.round_index == Vote.right_round))
        .where(Vote.choice.in_(("left", "right")))
        .order_by(Vote.id)
    )
    for row in _stream(engine, statement):
        left_text = _version(row.left_round, row.answer, row.left_text)
        right_text = _version(row.right_round, row.answer, row.right_text)
        chosen, rejected = (left_text, right_text) if row.choice == "left" else (right_text, left_text)
        yield {"prompt": row.messages, "chosen": [{"role": "assistant", "content": chosen}],
               "rejected": [{"role": "assistant", "content": rejected}]}


def feedback_rows(engine: Engine, skipped: Counter[str] | None = None) -> Iterator[dict[str, Any]]:
    """Feedback as feedback records (what `refine train` reads): `response` = the version the
    user judged, `critique` = their written critique, `revision` = their edited answer.

    A record needs both; feedback with only one of them is skipped and counted in `skipped`
    under "critique only" / "edited answer only" (any other invalid row under its reason).
    """
    from refine.records import FeedbackRecord

    statement = (
        select(Feedback.id, Feedback.turn_id, Feedback.round_index, Feedback.critique, Feedback.edited_answer,
               Feedback.created_at, Turn.messages, Turn.answer, Round.revision)
        .join(Turn, Turn.id == Feedback.turn_id)
        .outerjoin(Round, and_(Round.turn_id == Feedback.turn_id, Round.round_index == Feedback.round_index))
        .order_by(Feedback.id)
    )
    skipped = Counter() if skipped is None else skipped
    for row in _stream(engine, statement):
        if row.edited_answer is None or row.critique is None:
            skipped["critique only" if row.edited_answer is None else "edited answer only"] += 1
            continue
        chat = row.messages
        conversation = {"prompt": chat[0]["content"]} if len(chat) == 1 else {"messages": chat}
        try:
            record = FeedbackRecord.model_validate({
                "id": f"feedback-{row.id}", **conversation,
                "response": _version(row.round_index, row.answer, row.revision),
                "critique": row.critique, "revision": row.edited_answer, "source": SOURCE,
                "meta": {"turn_id": row.turn_id, "round": row.round_index, "created_at": _plain(row.created_at)},
            })
        except ValidationError as exc:
            skipped[exc.errors()[0]["msg"]] += 1
            continue
        yield record.model_dump(exclude_none=True)


def _plain(value: Any) -> Any:
    """Times as ISO 8601 text in UTC (SQLite returns them without a zone)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
    return value


def _table(name: str) -> Table:
    table = Base.metadata.tables.get(name)
    if table is None:
        raise InvalidInput(f"no table {name!r}; tables: {', '.join(sorted(Base.metadata.tables))}")
    return table


def table_rows(engine: Engine, name: str) -> Iterator[dict[str, Any]]:
    """Every row of table `name` as a dict (times as ISO 8601 text), in primary-key order.
    An unknown name raises InvalidInput at once, before any row is read."""
    table = _table(name)
    rows = _stream(engine, select(table).order_by(*table.primary_key.columns))
    return ({key: _plain(value) for key, value in row._mapping.items()} for row in rows)


def table_columns(name: str) -> list[str]:
    """The column names of table `name`."""
    return [column.name for column in _table(name).columns]


def write_csv(path: str | Path, rows: Iterator[dict[str, Any]], columns: list[str]) -> int:
    """Write rows as CSV with a header (lists and dicts as JSON text); returns the row count."""
    count = 0
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                             for k, v in row.items()})
            count += 1
    return count
