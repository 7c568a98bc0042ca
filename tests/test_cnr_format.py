"""The CnR template and its streaming parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from refine.cnr_format import (
    CRITIQUE_MARKER, NOTHING_TO_FIX, REVISION_MARKER, CnRStreamParser, cnr_messages, cnr_target,
    has_format_text, is_nothing_to_fix, parse_cnr, training_messages,
)

# Text that never contains a label or template text by accident.
_LABEL_WORDS = ("revis", "critique", "feedback", "improved response")
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), min_size=1, max_size=80
).filter(lambda t: t.strip() and not any(w in t.lower() for w in _LABEL_WORDS) and has_format_text(t) is None)


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(text)]:
        pieces.append(text[last:p])
        last = p
    return [p for p in pieces if p]


def feed_all(chunks: list[str]) -> tuple[CnRStreamParser, list[tuple[str, str]]]:
    parser = CnRStreamParser()
    pieces = []
    for chunk in chunks:
        pieces.extend(parser.feed(chunk))
    pieces.extend(parser.flush())
    return parser, pieces


@settings(max_examples=300, deadline=None)
@given(critique=safe_text, revision=safe_text, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30))
def test_any_chunking_parses_the_same(critique: str, revision: str, cuts: list[int]) -> None:
    text = cnr_target(critique, revision)
    whole = parse_cnr(text)
    parser, pieces = feed_all(chunked(text, cuts))
    streamed = parser.finish()
    assert streamed == whole
    assert whole.ok
    assert whole.critique == critique.strip()
    assert whole.revision == revision.strip()
    # the streamed pieces rebuild both parts, critique strictly before revision
    sections = [s for s, _ in pieces]
    assert sections == sorted(sections, key=["critique", "revision"].index)
    assert "".join(t for s, t in pieces if s == "critique").strip() == critique.strip()
    assert "".join(t for s, t in pieces if s == "revision").strip() == revision.strip()


def test_section_tracks_what_is_being_written() -> None:
    parser = CnRStreamParser()
    assert parser.section == "preamble"
    parser.feed("Crit")
    assert parser.section == "preamble"
    assert parser.feed("ique: The sum is wrong.\nRev") == [("critique", "The sum is wrong.")]
    assert parser.section == "critique"  # "\nRev" may still be the marker: held back
    assert parser.feed("ision: 12") == [("revision", "12")]
    assert parser.section == "revision"
    assert parser.finish().revision == "12"


def test_marker_lookalike_is_released_as_critique_text() -> None:
    parser = CnRStreamParser()
    parser.feed("Critique: see the\nRev")
    assert parser.feed("iew section") == [("critique", "\nReview section")]


def test_nothing_to_fix() -> None:
    result = parse_cnr(f"{CRITIQUE_MARKER} {NOTHING_TO_FIX}")
    assert result.ok and result.nothing_to_fix and result.revision == ""
    assert is_nothing_to_fix("nothing to fix!")
    assert not is_nothing_to_fix("The answer has nothing to fix the bug.")
    # a no-change record becomes the short target; a change keeps the revision
    assert cnr_target(NOTHING_TO_FIX, "same", "same") == f"{CRITIQUE_MARKER} {NOTHING_TO_FIX}"
    assert REVISION_MARKER in cnr_target("Wrong sum.", "fixed", "broken")


def test_malformed_outputs_fail_with_a_reason() -> None:
    assert parse_cnr("").error == "the output has no critique"
    no_revision = parse_cnr("Critique: the answer is wrong")
    assert not no_revision.ok and "Revision" in no_revision.error
    empty_revision = parse_cnr("Critique: wrong\nRevision:   ")
    assert not empty_revision.ok and empty_revision.error == "the revision is empty"
    # text without the critique marker is kept as critique, not lost
    unmarked = parse_cnr("The answer is wrong.\nRevision: right")
    assert unmarked.ok and unmarked.critique == "The answer is wrong." and unmarked.revision == "right"


def test_prompts_are_shared_by_training_and_inference() -> None:
    conversation = [{"role": "user", "content": "2+2?"}]
    request = cnr_messages(conversation, "5")
    train = training_messages(conversation, "5", "Wrong.", "4")
    assert train[:-1] == request
    assert train[-1] == {"role": "assistant", "content": "Critique: Wrong.\nRevision: 4"}
    assert "Response to improve:\n5" in request[-1]["content"]
    few = cnr_messages(conversation, "5", few_shot=True)
    assert few[-1] == request[-1] and len(few) > len(request)
    assert [m["role"] for m in few[1:-1]] == ["user", "assistant"] * ((len(few) - 2) // 2)
    multi = cnr_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                          {"role": "user", "content": "2+2?"}], "5")
    assert "User: hi\n\nAssistant: hello\n\nUser: 2+2?" in multi[-1]["content"]


def test_labels_in_markdown_emphasis_headings_other_case_or_on_one_line() -> None:
    for text in ("**Critique:** Sydney is wrong.\n**Revision:** Canberra.",
                 "**Critique**: Sydney is wrong.\n**Revision**: Canberra.",
                 "## Critique\nSydney is wrong.\n## Revision\nCanberra.",
                 "CRITIQUE: Sydney is wrong.\nrevision: Canberra.",
                 "Critique: Sydney is wrong. Revision: Canberra."):
        parsed = parse_cnr(text)
        assert (parsed.ok, parsed.critique, parsed.revision) == (True, "Sydney is wrong.", "Canberra."), text
    # "revision:" inside a sentence of the critique is not a label
    parsed = parse_cnr("Critique: The answer needs revision: add the year.\nRevision: In 1913.")
    assert (parsed.critique, parsed.revision) == ("The answer needs revision: add the year.", "In 1913.")
    # emphasis that belongs to the revision stays
    assert parse_cnr("Critique: x\nRevision: **Canberra** is the capital.").revision == "**Canberra** is the capital."
    assert parse_cnr("**Critique:** **Nothing to fix.**").nothing_to_fix


def test_the_revision_ends_at_a_second_label_or_template_text() -> None:
    for tail in ("\nCritique: Nothing to fix.\nRevision: Canberra.", "\n**Revision:** Canberra again.",
                 "<|im_end|>\n<|im_start|>user\nThanks", "</s>", "\n<end_of_turn>", " [INST] more", "<think>x</think>"):
        text = "Critique: Sydney is wrong.\nRevision: The capital is Canberra." + tail
        parser, pieces = feed_all(chunked(text, list(range(0, len(text), 3))))
        parsed = parser.finish()
        assert parsed.revision == "The capital is Canberra.", tail
        assert parsed.overrun.strip() == tail.strip() and parser.done
        assert "".join(t for s, t in pieces if s == "revision").strip() == "The capital is Canberra."
    assert has_format_text("Fine.\n**Critique:** again") == "**Critique:**"
    assert has_format_text("A list:\n- Critique of pure reason") is None
