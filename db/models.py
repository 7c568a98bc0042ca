"""The schema: conversations, turns, refinement rounds, votes and feedback (SQLAlchemy 2.x ORM).

Versions of an answer are numbered by round: 0 is the base answer, k is the revision of
round k. Times are UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROUND_STATUSES = ("complete", "rejected", "failed", "cancelled")
CHOICES = ("left", "right", "tie", "both_bad")


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    # Named constraints, so that migrations can refer to them (and SQLite batch mode works).
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Conversation(Base):
    """A chat session; its turns are numbered by `position`."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Turn(Base):
    """One user prompt and the base model's answer to it (version 0)."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("conversation_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)  # the last user message
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # the whole chat, ending with the prompt
    backend: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(512))
    answer: Mapped[str] = mapped_column(Text)  # partial text when `error` is set
    given: Mapped[bool] = mapped_column(Boolean, default=False)  # the answer came with the input
    error: Mapped[str | None] = mapped_column(Text)  # why the base answer failed
    ttft: Mapped[float | None] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(16))  # stop, length, looping, …
    thinking: Mapped[str | None] = mapped_column(Text)  # the base model's reasoning, kept apart
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Round(Base):
    """One critique-and-revise round of a turn; `round_index` starts at 1.

    status complete: `revision` is the answer from this round on; rejected: an acceptance rule
    (`rejection`, explained in `error`) kept the previous answer and `revision` is the rejected
    text; failed/cancelled: `revision` is partial. `candidates` lists every sampled candidate
    when there were several or a selector ran (see refine.events.Candidate). `cnr_format` is
    the CnR format version the round was generated in (NULL on rounds stored before it was
    recorded); `edits`, in the `edits` format, every edit of the round (refine.edits.Edit as
    JSON, dropped ones too)."""

    __tablename__ = "rounds"
    __table_args__ = (
        UniqueConstraint("turn_id", "round_index"),
        CheckConstraint("round_index >= 1", name="round_index_positive"),
        CheckConstraint(_in("status", ROUND_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    round_index: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(512))
    adapter: Mapped[str | None] = mapped_column(String(512))
    critique: Mapped[str] = mapped_column(Text)
    revision: Mapped[str] = mapped_column(Text)  # the answer only when status is complete
    status: Mapped[str] = mapped_column(String(16))
    rejection: Mapped[str | None] = mapped_column(String(32))  # the acceptance rule that failed
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    candidates: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    cnr_format: Mapped[str | None] = mapped_column(String(32))  # cnr-v1 (rewrite), edits-v1, …
    edits: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    nothing_to_fix: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    ttft: Mapped[float | None] = mapped_column(Float)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


ROUNDS_DIFFER_SQL = "left_round <> right_round OR right_turn_id IS NOT NULL"
STATS_INDEX = "ix_votes_stats"
STATS_INDEX_COLUMNS = ("blind", "turn_id", "high_round", "left_round", "right_round", "high_score", "right_turn_id")
HIGH_ROUND_SQL = "CASE WHEN left_round > right_round THEN left_round ELSE right_round END"
HIGH_SCORE_SQL = ("CASE WHEN choice = 'tie' THEN 1 WHEN choice = CASE WHEN left_round > right_round"
                  " THEN 'left' ELSE 'right' END THEN 2 ELSE 0 END")


def high_score(left_round: int, right_round: int, choice: str) -> int | None:
    """Points of the later version in a vote: 2 it won, 1 tie, 0 it lost, None both bad."""
    if choice == "both_bad":
        return None
    if choice == "tie":
        return 1
    return 2 if choice == ("left" if left_round > right_round else "right") else 0


def _default_high_round(context: Any) -> int:
    p = context.get_current_parameters()
    return max(p["left_round"], p["right_round"])


def _default_high_score(context: Any) -> int | None:
    p = context.get_current_parameters()
    return high_score(p["left_round"], p["right_round"], p["choice"])


class Vote(Base):
    """An A/B comparison of two versions of an answer.

    `left_round` is the version shown on the left (or first), `right_round` the other one;
    0 is the base answer. Both are versions of turn `turn_id`, unless `right_turn_id` is set:
    then the right version is that turn's (the same prompt's answer revised by another CnR
    model, compared in the Arena). `choice` names the side the voter preferred. `blind`: the
    voter did not know which version was which (the Arena); votes cast beside the Refinement
    panel, which names the versions, are not blind. `high_round` and `high_score` restate the
    vote from the later version's side, for fast statistics.
    """

    __tablename__ = "votes"
    __table_args__ = (
        CheckConstraint(_in("choice", CHOICES), name="choice"),
        CheckConstraint("left_round >= 0 AND right_round >= 0", name="rounds_non_negative"),
        CheckConstraint(ROUNDS_DIFFER_SQL, name="rounds_differ"),
        CheckConstraint("right_turn_id IS NULL OR right_turn_id <> turn_id", name="right_turn_other"),
        CheckConstraint(f"high_round = {HIGH_ROUND_SQL}", name="high_round_is_max"),
        CheckConstraint(f"(choice = 'both_bad' AND high_score IS NULL) OR (choice <> 'both_bad' AND "
                        f"high_score IS NOT NULL AND high_score = {HIGH_SCORE_SQL})", name="high_score_matches"),
        # Covers the statistics queries (db.stats), whose per-(turn, round) grouping of the blind or
        # the other votes then needs no sort.
        Index(STATS_INDEX, *STATS_INDEX_COLUMNS),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    left_round: Mapped[int] = mapped_column(Integer)
    right_round: Mapped[int] = mapped_column(Integer)
    right_turn_id: Mapped[int | None] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"))
    high_round: Mapped[int] = mapped_column(Integer, default=_default_high_round)  # the later version
    high_score: Mapped[int | None] = mapped_column(Integer, default=_default_high_score)  # see high_score()
    choice: Mapped[str] = mapped_column(String(16))
    blind: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    key: Mapped[str] = mapped_column(String(128), unique=True)  # idempotency key from the client
    voter_hash: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Feedback(Base):
    """A user's written critique and/or edited answer for one version of a turn's answer.
    `key` (db.store.feedback_key: the turn, the version and both texts) makes the same feedback
    saved twice one record; NULL only on a duplicate stored before it existed."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("critique IS NOT NULL OR edited_answer IS NOT NULL", name="has_content"),
        CheckConstraint("round_index >= 0", name="round_index_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    round_index: Mapped[int] = mapped_column(Integer)  # the version the feedback is about
    critique: Mapped[str | None] = mapped_column(Text)
    edited_answer: Mapped[str | None] = mapped_column(Text)
    voter_hash: Mapped[str | None] = mapped_column(String(128))
    key: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
