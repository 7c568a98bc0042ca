"""Writes the app and the CLI make (turns, rounds, votes, feedback) and the reads they need.

Every write validates its input first and runs in one short transaction: a refused write
raises `InvalidInput` and leaves the database untouched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Row, and_, bindparam, exists, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import session_factory, write_connection, write_session
from db.errors import InvalidInput
from db.models import CHOICES, ROUND_STATUSES, Conversation, Feedback, Round, Turn, Vote, high_score, utcnow
from refine.events import RoundDone, StopReason, Timing
from refine.records import PromptRow

MAX_TEXT_CHARS = 100_000  # per text field (prompt, answer, critique, revision, each message)
MAX_CHAT_CHARS = 1_000_000  # a whole conversation
MAX_NAME_CHARS = 512  # model, adapter, error kind
MAX_KEY_CHARS = 128  # idempotency key, voter hash
STOP_REASONS = frozenset(get_args(StopReason))


def _text(name: str, value: Any, limit: int = MAX_TEXT_CHARS, *, optional: bool = False) -> str | None:
    """`value` if it is a storable string, else InvalidInput."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInput(f"{name} is too long: {len(value):,} characters (limit {limit:,})")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{name} is not valid Unicode text ({exc.reason})") from None
    return value


def _round_number(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{name} must be a round index >= 0, got {value!r}")
    return value


def _turn_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"turn id must be an integer, got {value!r}")
    return value


def chat_messages(prompt: str | None, messages: Sequence[dict[str, str]] | None) -> list[dict[str, str]]:
    """The prompt as chat messages (exactly one of `prompt` or `messages` ending with a user
    turn), validated for storage; else InvalidInput."""
    try:
        chat = PromptRow(prompt=prompt, messages=messages).chat()
    except ValidationError as exc:
        raise InvalidInput(f"invalid prompt: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    for i, message in enumerate(chat):
        _text(f"messages[{i}].content", message["content"])
    if sum(len(m["content"]) for m in chat) > MAX_CHAT_CHARS:
        raise InvalidInput(f"the conversation is too long (limit {MAX_CHAT_CHARS:,} characters)")
    return chat


def hash_voter(identity: str, salt: str = "") -> str:
    """A stable pseudonym for a voter (e.g. a session id or IP): hex SHA-256 of salt + identity."""
    return hashlib.sha256(f"{salt}\x1f{identity}".encode()).hexdigest()


def create_conversation(engine: Engine) -> int:
    """Start a conversation; returns its id."""
    with write_session(engine) as session:
        conversation = Conversation()
        session.add(conversation)
        session.flush()
        return conversation.id


def record_turn(engine: Engine, *, answer: str, model: str, backend: str, prompt: str | None = None,
                messages: Sequence[dict[str, str]] | None = None, given: bool = False,
                timing: Timing | None = None, error: str | None = None,
                conversation_id: int | None = None, finish_reason: str | None = None,
                thinking: str | None = None) -> int:
    """Store a turn once its base answer has ended; returns the turn id.

    Give the prompt as `prompt` or as chat `messages` ending with the user's turn. `error` marks a
    base answer that failed (`answer` then holds its partial text). `finish_reason` says why the
    answer ended (stop, length, looping, …); `thinking` is reasoning kept apart from it. Without `conversation_id`
    the turn starts a new conversation; otherwise it becomes that conversation's next turn.
    """
    chat = chat_messages(prompt, messages)
    values = dict(
        prompt=chat[-1]["content"], messages=chat, answer=_text("answer", answer),
        model=_text("model", model, MAX_NAME_CHARS), backend=_text("backend", backend, 32),
        given=bool(given), error=_text("error", error, optional=True),
        finish_reason=_text("finish_reason", finish_reason, 16, optional=True),
        thinking=_text("thinking", thinking, optional=True) or None,
    )
    timing = timing or Timing()
    with write_session(engine) as session:
        if conversation_id is None:
            conversation = Conversation()
            session.add(conversation)
            session.flush()
            position = 0
        else:
            conversation = session.scalar(
                select(Conversation).where(Conversation.id == conversation_id).with_for_update())
            if conversation is None:
                raise InvalidInput(f"conversation {conversation_id} does not exist")
            last = session.scalar(select(func.max(Turn.position)).where(Turn.conversation_id == conversation_id))
            position = 0 if last is None else last + 1
        turn = Turn(conversation_id=conversation.id, position=position, ttft=timing.ttft,
                    duration=timing.duration, tokens=timing.tokens, **values)
        session.add(turn)
        session.flush()
        return turn.id


def _edits(name: str, edits: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """A round's edits (refine.edits.Edit as JSON) fit for storage, None when there are none;
    else InvalidInput."""
    if not edits:
        return None
    for i, edit in enumerate(edits):
        if not isinstance(edit, dict):
            raise InvalidInput(f"{name}[{i}] must be an object, got {type(edit).__name__}")
        for key, value in edit.items():
            if isinstance(value, str):
                _text(f"{name}[{i}].{key}", value)
    return [dict(edit) for edit in edits]


def _candidates(done: RoundDone) -> list[dict[str, Any]] | None:
    """The candidates worth storing apart: all of them when there were several or a selector
    judged them (their verdicts), else None (the round's own columns say everything)."""
    if len(done.candidates) <= 1 and not any(c.verdicts for c in done.candidates):
        return None
    return [
        {"critique": _text("critique", c.critique), "revision": _text("revision", c.revision), "status": c.status,
         "nothing_to_fix": c.nothing_to_fix, "rejection": c.rejection, "detail": c.detail,
         "finish_reason": c.finish_reason, "verdicts": list(c.verdicts), "tokens": c.timing.tokens,
         "duration": c.timing.duration, "chosen": i == done.chosen,
         "edits": _edits(f"candidates[{i}].edits", c.edits) or []}
        for i, c in enumerate(done.candidates)
    ]


def record_round(engine: Engine, turn_id: int, done: RoundDone, *, adapter: str | None = None) -> int:
    """Store a round once it has ended (complete, rejected, failed or cancelled, with its text,
    its CnR format version and, in the `edits` format, its edits); returns the round id.
    `adapter` names the CnR adapter when the model id does not."""
    if done.status not in ROUND_STATUSES:
        raise InvalidInput(f"round status must be one of {', '.join(ROUND_STATUSES)}, got {done.status!r}")
    if done.stop_reason is not None and done.stop_reason not in STOP_REASONS:
        raise InvalidInput(f"unknown stop reason {done.stop_reason!r}")
    if not isinstance(done.round, int) or done.round < 1:
        raise InvalidInput(f"round index must be >= 1, got {done.round!r}")
    row = Round(
        turn_id=turn_id, round_index=done.round, model=_text("model", done.model, MAX_NAME_CHARS),
        adapter=_text("adapter", adapter, MAX_NAME_CHARS, optional=True),
        critique=_text("critique", done.critique), revision=_text("revision", done.revision),
        status=done.status, stop_reason=done.stop_reason, nothing_to_fix=bool(done.nothing_to_fix),
        error=_text("error", done.error, optional=True), ttft=done.timing.ttft,
        duration=done.timing.duration, tokens=done.timing.tokens, rejection=done.rejection,
        finish_reason=done.finish_reason, candidates=_candidates(done),
        cnr_format=_text("cnr_format", done.cnr_format, 32, optional=True), edits=_edits("edits", done.edits),
    )
    with write_session(engine) as session:
        _turn(session, turn_id)
        if session.scalar(select(Round.id).where(Round.turn_id == turn_id, Round.round_index == done.round)):
            raise InvalidInput(f"turn {turn_id} already has a round {done.round}")
        session.add(row)
        session.flush()
        return row.id


def _turn(session: Session, turn_id: Any) -> Turn:
    turn = session.get(Turn, _turn_id(turn_id))
    if turn is None:
        raise InvalidInput(f"turn {turn_id} does not exist")
    return turn


_VOTE_COLUMNS = list(Vote.__table__.columns)
_VOTE_VALUES = ["turn_id", "left_round", "right_round", "right_turn_id", "high_round", "high_score", "choice", "blind",
                "key", "voter_hash", "created_at"]
# Complete rounds among the two versions: the left one of turn_id, the right one of right_turn
# (turn_id itself unless the vote compares two turns); version 0, the base answer, is no round.
_ROUNDS_FOUND = select(func.count()).where(
    Round.status == "complete",
    or_(and_(Round.turn_id == bindparam("turn_id"), Round.round_index == bindparam("left_round")),
        and_(Round.turn_id == bindparam("right_turn"), Round.round_index == bindparam("right_round"))),
).scalar_subquery()
# The hot write path, one statement: insert the vote only if its key is new, its turn exists
# (with a complete base answer when version 0 is compared) and its rounds are complete.
_INSERT_VOTE = insert(Vote).from_select(
    _VOTE_VALUES,
    select(*(bindparam(name, type_=Vote.__table__.c[name].type) for name in _VOTE_VALUES)).where(
        ~exists().where(Vote.key == bindparam("key")),
        exists().where(Turn.id == bindparam("turn_id"), or_(Turn.error.is_(None), bindparam("needs_base") == 0)),
        _ROUNDS_FOUND == bindparam("rounds_needed"),
    ),
).returning(*_VOTE_COLUMNS)
_VERSIONS_CHECK = select(
    select(Turn.id).where(Turn.id == bindparam("turn_id")).scalar_subquery().label("turn"),
    select(Turn.error).where(Turn.id == bindparam("turn_id")).scalar_subquery().label("turn_error"),
    _ROUNDS_FOUND.label("rounds"),
)


def _stored_vote(connection: Connection, key: str) -> Row | None:
    return connection.execute(select(*_VOTE_COLUMNS).where(Vote.key == key)).first()


def _missing_version(connection: Connection, turn_id: int, left: int, right: int) -> InvalidInput | None:
    """Why versions `left` and `right` of a turn's answer cannot be voted on or critiqued (0 =
    the base answer, which must not have failed; k = round k, which must be complete)."""
    check = connection.execute(_VERSIONS_CHECK, dict(turn_id=turn_id, right_turn=turn_id, left_round=left,
                                                     right_round=right)).one()
    needed = len({left, right} - {0})
    if check.turn is None:
        return InvalidInput(f"turn {turn_id} does not exist")
    if 0 in (left, right) and check.turn_error is not None:
        return InvalidInput(f"turn {turn_id} has no complete base answer")
    if check.rounds < needed:
        return InvalidInput(f"turn {turn_id} has no complete round {max(left, right)}" if needed == 1 else
                            f"turn {turn_id} lacks a complete round {left} or {right}")
    return None


def _missing_across(connection: Connection, turn_id: int, left: int, right_turn: int, right: int) -> InvalidInput:
    """Why round `left` of one turn and round `right` of another cannot be voted on."""
    for turn, index in ((turn_id, left), (right_turn, right)):
        problem = _missing_version(connection, turn, index, index)
        if problem:
            return problem
    return InvalidInput(f"turns {turn_id} and {right_turn} lack a complete round {left} or {right}")


def record_vote(engine: Engine, *, turn_id: int, left_round: int, right_round: int, choice: str,
                key: str, voter_hash: str | None = None, blind: bool = False,
                right_turn_id: int | None = None) -> Row:
    """Store an A/B vote; returns the stored row (attributes as in `Vote`). Idempotent: a vote
    whose `key` is already stored is returned as it was stored, and nothing is written.

    `left_round`/`right_round` are the versions shown on the left and right (0 = the base
    answer, k = round k's revision) of turn `turn_id`, or, with `right_turn_id`, the right one
    of that other turn (two CnR models' revisions of the same prompt: both rounds must be
    revisions). `choice` is one of left, right, tie, both_bad. `blind`: the voter did not know
    which version was which (the Arena); a vote beside the Refinement panel is not blind.
    """
    if choice not in CHOICES:
        raise InvalidInput(f"choice must be one of {', '.join(CHOICES)}; got {choice!r}")
    left, right = _round_number("left_round", left_round), _round_number("right_round", right_round)
    if not isinstance(blind, bool):
        raise InvalidInput(f"blind must be true or false, got {blind!r}")
    _turn_id(turn_id)
    if right_turn_id is not None:
        _turn_id(right_turn_id)
        if right_turn_id == turn_id:
            raise InvalidInput("a vote across turns compares two different turns; leave right_turn_id out")
        if 0 in (left, right):
            raise InvalidInput("a vote across turns compares two revisions (rounds >= 1), not base answers")
    elif left == right:
        raise InvalidInput("a vote compares two different versions")
    if not _text("key", key, MAX_KEY_CHARS).strip():
        raise InvalidInput("key is empty")
    _text("voter_hash", voter_hash, MAX_KEY_CHARS, optional=True)
    across = right_turn_id is not None
    values = dict(turn_id=turn_id, left_round=left, right_round=right, right_turn_id=right_turn_id,
                  right_turn=right_turn_id if across else turn_id, high_round=max(left, right),
                  high_score=high_score(left, right, choice), choice=choice, blind=blind, key=key,
                  voter_hash=voter_hash, created_at=utcnow(), needs_base=int(0 in (left, right)),
                  rounds_needed=(left > 0) + (right > 0))
    try:
        with write_connection(engine) as connection:
            row = connection.execute(_INSERT_VOTE, values).first()
            if row is None:  # the key is taken, or the vote is invalid
                row = _stored_vote(connection, key)
                if row is None:
                    if across:
                        raise _missing_across(connection, turn_id, left, right_turn_id, right)
                    raise _missing_version(connection, turn_id, left, right) or AssertionError(values)
            return row
    except IntegrityError:
        # Another writer stored the same key between our check and insert (PostgreSQL).
        with engine.connect() as connection:
            row = _stored_vote(connection, key)
        if row is None:
            raise
        return row


def feedback_key(turn_id: int, round_index: int, critique: str | None, edited_answer: str | None) -> str:
    """The identity of a feedback record: the turn, the version and both texts as stored (the
    same feedback saved twice has the same key; migration 0008 keeps its own copy of this)."""
    data = json.dumps([turn_id, round_index, critique, edited_answer], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def save_feedback(engine: Engine, *, turn_id: int, round_index: int, critique: str | None = None,
                  edited_answer: str | None = None, voter_hash: str | None = None) -> tuple[int, bool]:
    """Store a user's written critique and/or edited answer of version `round_index` of a
    turn's answer (0 = the base answer); returns (feedback id, whether it is new). Blank texts
    count as absent. Idempotent: the same texts on the same version of the same turn are one
    record (the first one's voter is kept), whoever saves them and however often."""
    index = _round_number("round_index", round_index)
    critique = _text("critique", critique, optional=True)
    edited_answer = _text("edited_answer", edited_answer, optional=True)
    critique = critique if critique and critique.strip() else None
    edited_answer = edited_answer if edited_answer and edited_answer.strip() else None
    if critique is None and edited_answer is None:
        raise InvalidInput("feedback needs a critique or an edited answer")
    _text("voter_hash", voter_hash, MAX_KEY_CHARS, optional=True)
    _turn_id(turn_id)
    key = feedback_key(turn_id, index, critique, edited_answer)
    try:
        with write_session(engine) as session:
            stored = session.scalar(select(Feedback.id).where(Feedback.key == key))
            if stored is not None:
                return stored, False
            problem = _missing_version(session.connection(), turn_id, index, index)
            if problem:
                raise problem
            row = Feedback(turn_id=turn_id, round_index=index, critique=critique, edited_answer=edited_answer,
                           voter_hash=voter_hash, key=key)
            session.add(row)
            session.flush()
            return row.id, True
    except IntegrityError:
        # Another writer stored the same feedback between our check and insert (PostgreSQL).
        with session_factory(engine)() as session:
            stored = session.scalar(select(Feedback.id).where(Feedback.key == key))
        if stored is None:
            raise
        return stored, False


def record_feedback(engine: Engine, *, turn_id: int, round_index: int, critique: str | None = None,
                    edited_answer: str | None = None, voter_hash: str | None = None) -> int:
    """`save_feedback`, returning only the feedback id (the stored one for feedback saved before)."""
    return save_feedback(engine, turn_id=turn_id, round_index=round_index, critique=critique,
                         edited_answer=edited_answer, voter_hash=voter_hash)[0]


def versions(engine: Engine, turn_id: int) -> dict[int, str]:
    """The versions of a turn's answer that can be compared: 0 = the base answer (unless it
    failed), k = the revision of each complete round k."""
    with session_factory(engine)() as session:
        turn = _turn(session, turn_id)
        found = {} if turn.error is not None else {0: turn.answer}
        rows = session.execute(select(Round.round_index, Round.revision).where(
            Round.turn_id == turn_id, Round.status == "complete").order_by(Round.round_index))
        found.update({index: text for index, text in rows})
        return found
