"""Writes through db.store and db.recorder: what is stored, what is refused, and that a
refused write touches nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text

from db import open_database
from db.errors import InvalidInput
from db.models import Conversation, Feedback, Round, Turn, Vote
from db.recorder import EventRecorder
from db.store import (
    MAX_TEXT_CHARS,
    create_conversation,
    hash_voter,
    record_feedback,
    record_round,
    record_turn,
    record_vote,
    versions,
)
from refine.events import BaseDelta, BaseDone, ErrorEvent, RoundDone, RoundStart, Timing, TurnDone


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = open_database(f"sqlite:///{tmp_path / 'refine.db'}")
    yield engine
    engine.dispose()


def done(k: int, revision: str = "better", status: str = "complete", **kw) -> RoundDone:
    return RoundDone(round=k, model="cnr", critique=f"critique {k}", revision=revision, status=status, **kw)


@pytest.fixture
def turn(engine: Engine) -> int:
    """A turn with rounds 1-2 complete and round 3 failed."""
    turn_id = record_turn(engine, prompt="What is 2+2?", answer="5", model="base", backend="local")
    record_round(engine, turn_id, done(1, "4"))
    record_round(engine, turn_id, done(2, "Four."))
    record_round(engine, turn_id, done(3, "Fo", status="failed", error="unparseable"))
    return turn_id


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as c:
        return {m.__tablename__: c.scalar(select(func.count()).select_from(m))
                for m in (Conversation, Turn, Round, Vote, Feedback)}


def test_turn_and_rounds_are_stored_with_every_field(engine: Engine) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Capital of France?"}]
    turn_id = record_turn(engine, messages=chat, answer="Lyon", model="smol", backend="tgi", given=True,
                          timing=Timing(ttft=0.25, duration=1.5, tokens=7))
    record_round(engine, turn_id, done(1, "Paris", stop_reason="nothing_to_fix", nothing_to_fix=True,
                                       timing=Timing(0.1, 2.0, 30)), adapter="my-adapter")
    with engine.connect() as c:
        t = c.execute(select(Turn)).one()
        r = c.execute(select(Round)).one()
    assert (t.prompt, t.messages, t.answer, t.model, t.backend, t.given) == (
        "Capital of France?", chat, "Lyon", "smol", "tgi", True)
    assert (t.ttft, t.duration, t.tokens, t.position, t.error) == (0.25, 1.5, 7, 0, None)
    assert (r.round_index, r.model, r.adapter, r.critique, r.revision, r.status) == (
        1, "cnr", "my-adapter", "critique 1", "Paris", "complete")
    assert (r.stop_reason, r.nothing_to_fix, r.ttft, r.duration, r.tokens) == ("nothing_to_fix", True, 0.1, 2.0, 30)
    assert versions(engine, turn_id) == {0: "Lyon", 1: "Paris"}


def test_turns_of_one_conversation_are_numbered(engine: Engine) -> None:
    conversation = create_conversation(engine)
    ids = [record_turn(engine, prompt=f"q{i}", answer="a", model="m", backend="local",
                       conversation_id=conversation) for i in range(3)]
    other = record_turn(engine, prompt="q", answer="a", model="m", backend="local")
    with engine.connect() as c:
        rows = c.execute(select(Turn.id, Turn.conversation_id, Turn.position).order_by(Turn.id)).all()
    assert [tuple(r) for r in rows] == [(ids[0], conversation, 0), (ids[1], conversation, 1),
                                        (ids[2], conversation, 2), (other, conversation + 1, 0)]
    with pytest.raises(InvalidInput, match="conversation 999 does not exist"):
        record_turn(engine, prompt="q", answer="a", model="m", backend="local", conversation_id=999)


def test_failed_and_cancelled_rounds_keep_partial_text(engine: Engine, turn: int) -> None:
    record_round(engine, turn, done(4, "half a revis", status="cancelled", stop_reason="cancelled"))
    with engine.connect() as c:
        rows = c.execute(select(Round.round_index, Round.status, Round.revision, Round.error)
                         .where(Round.round_index >= 3).order_by(Round.round_index)).all()
    assert [tuple(r) for r in rows] == [(3, "failed", "Fo", "unparseable"), (4, "cancelled", "half a revis", None)]
    assert versions(engine, turn) == {0: "5", 1: "4", 2: "Four."}  # only complete rounds are versions


def test_same_vote_key_twice_stores_one_row_and_returns_the_first(engine: Engine, turn: int) -> None:
    first = record_vote(engine, turn_id=turn, left_round=2, right_round=0, choice="left", key="k-1",
                        voter_hash=hash_voter("session-1"))
    again = record_vote(engine, turn_id=turn, left_round=0, right_round=1, choice="tie", key="k-1")
    assert again.id == first.id
    assert (again.left_round, again.right_round, again.high_round, again.high_score, again.choice) == (2, 0, 2, 2, "left")
    assert again.voter_hash == hash_voter("session-1") != hash_voter("session-2")
    assert counts(engine)["votes"] == 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(turn_id=999), "turn 999 does not exist"),
    (dict(turn_id="1"), "turn id must be an integer"),
    (dict(choice="up"), "choice must be one of"),
    (dict(choice="LEFT"), "choice must be one of"),
    (dict(left_round=1, right_round=1), "two different versions"),
    (dict(left_round=-1), "round index >= 0"),
    (dict(right_round=True), "round index >= 0"),
    (dict(left_round=3), "no complete round 3"),  # round 3 failed
    (dict(left_round=7), "no complete round 7"),
    (dict(left_round=7, right_round=1), "lacks a complete round 7 or 1"),
    (dict(key=""), "key is empty"),
    (dict(key="x" * 129), "key is too long"),
    (dict(voter_hash="h" * 129), "voter_hash is too long"),
])
def test_invalid_votes_are_refused_and_touch_nothing(engine: Engine, turn: int, kwargs: dict, message: str) -> None:
    record_vote(engine, turn_id=turn, left_round=1, right_round=0, choice="left", key="existing")
    before = counts(engine)
    vote = dict(turn_id=turn, left_round=1, right_round=0, choice="right", key="new") | kwargs
    with pytest.raises(InvalidInput, match=message):
        record_vote(engine, **vote)
    assert isinstance(InvalidInput("x"), ValueError)
    assert counts(engine) == before
    # The refused key stays free: a valid vote with it is stored afterwards.
    if kwargs.get("key") is None:
        assert record_vote(engine, turn_id=turn, left_round=1, right_round=0, choice="right", key="new").choice == "right"


def test_vote_on_a_turn_whose_base_answer_failed_is_refused(engine: Engine) -> None:
    recorder = EventRecorder(engine, backend="tgi", model="base", prompt="hi")
    recorder.feed(ErrorEvent(stage="base", kind="timeout", message="no token in 60 s", partial="Hel"))
    with engine.connect() as c:
        t = c.execute(select(Turn)).one()
    assert (t.answer, t.error, t.model) == ("Hel", "timeout: no token in 60 s", "base")
    with pytest.raises(InvalidInput, match="no complete base answer"):
        record_vote(engine, turn_id=recorder.turn_id, left_round=0, right_round=1, choice="left", key="k")
    assert versions(engine, recorder.turn_id) == {}


def test_feedback_is_stored_and_invalid_feedback_refused(engine: Engine, turn: int) -> None:
    fid = record_feedback(engine, turn_id=turn, round_index=2, critique="Say 4.", edited_answer="4",
                          voter_hash="abc")
    only_edit = record_feedback(engine, turn_id=turn, round_index=0, critique="   ", edited_answer="4")
    with engine.connect() as c:
        rows = c.execute(select(Feedback.id, Feedback.round_index, Feedback.critique, Feedback.edited_answer)
                         .order_by(Feedback.id)).all()
    assert [tuple(r) for r in rows] == [(fid, 2, "Say 4.", "4"), (only_edit, 0, None, "4")]
    before = counts(engine)
    for kwargs, message in [
        (dict(critique=None, edited_answer=None), "needs a critique or an edited answer"),
        (dict(critique=" \n", edited_answer=""), "needs a critique or an edited answer"),
        (dict(turn_id=12345), "turn 12345 does not exist"),
        (dict(round_index=3), "no complete round 3"),
        (dict(round_index=-2), "round index >= 0"),
        (dict(critique="x" * (MAX_TEXT_CHARS + 1)), "critique is too long"),
        (dict(edited_answer=123), "edited_answer must be a string"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            record_feedback(engine, **(dict(turn_id=turn, round_index=1, critique="c") | kwargs))
    assert counts(engine) == before


def test_the_same_feedback_saved_twice_is_one_record(engine: Engine, turn: int) -> None:
    from db.store import save_feedback

    first = save_feedback(engine, turn_id=turn, round_index=2, critique="Say 4.", edited_answer="4", voter_hash="a")
    assert first[1] is True
    # the same turn, version and texts: the stored record, nothing written (another voter too)
    assert save_feedback(engine, turn_id=turn, round_index=2, critique="Say 4.", edited_answer="4") == (first[0], False)
    assert record_feedback(engine, turn_id=turn, round_index=2, critique="Say 4.", edited_answer="4",
                           voter_hash="b") == first[0]
    # a different text or another version is new feedback
    other_text = save_feedback(engine, turn_id=turn, round_index=2, critique="Say four.", edited_answer="4")
    other_version = save_feedback(engine, turn_id=turn, round_index=1, critique="Say 4.", edited_answer="4")
    assert other_text[1] and other_version[1] and len({first[0], other_text[0], other_version[0]}) == 3
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(Feedback)).scalar_one() == 3
        assert c.execute(select(Feedback.voter_hash).where(Feedback.id == first[0])).scalar_one() == "a"


def test_invalid_turns_and_rounds_are_refused(engine: Engine, turn: int) -> None:
    before = counts(engine)
    for kwargs, message in [
        (dict(prompt=None), "give exactly one of 'prompt' or 'messages'"),
        (dict(prompt="   "), "'prompt' is empty"),
        (dict(prompt=None, messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]),
         "must end with a user turn"),
        (dict(prompt=None, messages=[{"role": "robot", "content": "q"}]), "Input should be"),
        (dict(answer="a" * (MAX_TEXT_CHARS + 1)), "answer is too long"),
        (dict(prompt="p" * (MAX_TEXT_CHARS + 1)), "content is too long"),
        (dict(answer="nul \x00 byte"), "NUL"),
        (dict(answer="lone \ud800 surrogate"), "not valid Unicode"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            record_turn(engine, **(dict(prompt="q", answer="a", model="m", backend="local") | kwargs))
    for event, message in [
        (done(1), "already has a round 1"),
        (done(0), "round index must be >= 1"),
        (done(5, status="done"), "round status must be"),
        (done(5, stop_reason="bored"), "unknown stop reason"),
        (done(5, "r" * (MAX_TEXT_CHARS + 1)), "revision is too long"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            record_round(engine, turn, event)
    with pytest.raises(InvalidInput, match="turn 999 does not exist"):
        record_round(engine, 999, done(1))
    assert counts(engine) == before


STRANGE = [
    "Robert'); DROP TABLE votes;--",
    "' OR '1'='1",
    '"; DELETE FROM turns WHERE "1"="1',
    "%s %(x)s ? :name $1 \\x00 \\' \\\\",
    "emoji 👩‍💻🚀, RTL مرحبا, CJK 漢字, combining é, zero-width\u200bjoiner, line\r\nbreaks\ttab",
    "😀" * 50_000,  # 50k astral characters (4 UTF-8 bytes each)
    "x" * MAX_TEXT_CHARS,  # exactly at the limit
]


@pytest.mark.parametrize("value", STRANGE, ids=range(len(STRANGE)))
def test_texts_are_stored_verbatim(engine: Engine, value: str) -> None:
    turn_id = record_turn(engine, prompt=value, answer=value, model="m", backend="local")
    record_round(engine, turn_id, RoundDone(round=1, model="cnr", critique=value, revision=value, status="complete"))
    record_feedback(engine, turn_id=turn_id, round_index=1, critique=value, edited_answer=value)
    vote = record_vote(engine, turn_id=turn_id, left_round=0, right_round=1, choice="tie", key=value[:128],
                       voter_hash=value[:128])
    with engine.connect() as c:
        t = c.execute(select(Turn)).one()
        r = c.execute(select(Round)).one()
        f = c.execute(select(Feedback)).one()
        raw_prompt = c.execute(text("SELECT prompt FROM turns")).scalar()
    assert t.prompt == t.answer == t.messages[0]["content"] == raw_prompt == value
    assert r.critique == r.revision == f.critique == f.edited_answer == value
    assert vote.key == vote.voter_hash == value[:128]
    assert counts(engine) == {"conversations": 1, "turns": 1, "rounds": 1, "votes": 1, "feedback": 1}


def test_recorder_stores_a_turn_from_its_events(engine: Engine) -> None:
    recorder = EventRecorder(engine, backend="local", prompt="Fix: teh cat", adapter="cnr-v1")
    events = [
        BaseDelta("the"), BaseDone(text="teh cat sat", model="smol", timing=Timing(0.2, 1.0, 4)),
        RoundStart(1, "cnr"), done(1, "the cat sat"),
        RoundStart(2, "cnr"), done(2, "The cat sat.", stop_reason="unchanged"),
        TurnDone(final="The cat sat.", rounds_completed=2, stop_reason="unchanged"),
    ]
    for event in events:
        recorder.feed(event)
    assert versions(engine, recorder.turn_id) == {0: "teh cat sat", 1: "the cat sat", 2: "The cat sat."}
    with engine.connect() as c:
        assert c.execute(select(Round.adapter, Round.stop_reason).order_by(Round.round_index)).all() == [
            ("cnr-v1", None), ("cnr-v1", "unchanged")]
    with pytest.raises(RuntimeError, match="already stored"):
        recorder.feed(BaseDone(text="again", model="smol"))
    fresh = EventRecorder(engine, backend="local", prompt="q")
    with pytest.raises(RuntimeError, match="before the turn was stored"):
        fresh.feed(done(1))
    with pytest.raises(InvalidInput):
        EventRecorder(engine, backend="local", prompt="")


def test_a_round_stores_its_format_and_edits_and_its_candidates_edits(engine: Engine) -> None:
    from db.export import table_rows
    from refine.events import Candidate

    applied = {"kind": "replace", "span": "Lyon", "text": "Paris", "applied": True}
    dropped = {"kind": "insert_after", "span": "Berlin", "text": "too", "applied": False, "reason": "not found"}
    turn_id = record_turn(engine, prompt="Capital of France?", answer="Lyon", model="base", backend="local")
    chosen = Candidate(critique="Wrong city.", revision="Paris", status="complete", edits=(applied, dropped))
    other = Candidate(critique="Say more.", revision="Lyon, France", status="rejected", rejection="unchanged",
                      edits=({"kind": "append", "span": "", "text": "France", "applied": True},))
    record_round(engine, turn_id, done(1, "Paris", cnr_format="edits-v1", edits=(applied, dropped),
                                       candidates=(chosen, other)))
    record_round(engine, turn_id, done(2, "Paris."))  # the rewrite format: no edits
    with engine.connect() as c:
        rows = c.execute(select(Round.cnr_format, Round.edits, Round.candidates).order_by(Round.round_index)).all()
    assert rows[0].cnr_format == "edits-v1" and rows[0].edits == [applied, dropped]
    assert [c["edits"] for c in rows[0].candidates] == [[applied, dropped], list(other.edits)]
    assert (rows[1].cnr_format, rows[1].edits, rows[1].candidates) == ("cnr-v1", None, None)
    exported = list(table_rows(engine, "rounds"))  # the table export has both columns
    assert [(r["cnr_format"], r["edits"]) for r in exported] == [("edits-v1", [applied, dropped]), ("cnr-v1", None)]
    for event, message in [(done(3, cnr_format="x" * 33), "cnr_format is too long"),
                           (done(3, edits=("replace",)), r"edits\[0\] must be an object"),
                           (done(3, edits=({"kind": "replace", "span": "a\x00", "text": "b"},)), "NUL")]:
        with pytest.raises(InvalidInput, match=message):
            record_round(engine, turn_id, event)
