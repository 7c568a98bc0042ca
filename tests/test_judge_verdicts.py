"""Judge verdicts: strict-format parsing (valid, tolerated decoration, garbage), the outcome of
each presentation order, combining both orders, and the versioned judge prompt."""

from __future__ import annotations

import hashlib
import json

import pytest

from refine.judging.cli import judge_spec
from refine.judging.prompt import PROMPT_VERSION, judge_messages, prompt_version
from refine.judging.verdicts import combine, order_outcome, parse_verdict


@pytest.mark.parametrize("text, verdict", [
    ("Verdict: A", "A"),
    ("Verdict: B", "B"),
    ("Verdict: tie", "tie"),
    ("verdict: TIE", "tie"),
    ("  Verdict:B  \n", "B"),
    ("**Verdict: A**", "A"),
    ("**Verdict:** B.", "B"),
    ("Verdict: [A]", "A"),
    ("Verdict: Answer B", "B"),
    ("`Verdict: tie`", "tie"),
    ("Answer B covers the question fully.\nVerdict: B", "B"),
    ("Verdict: A\nVerdict: A", "A"),  # repeated, agreeing
    ("<think>Maybe Verdict: B? No.</think>\nVerdict: A", "A"),  # a reasoning model's thoughts are ignored
    ("## Verdict: B", "B"),  # Markdown heading
    ("### **Verdict:** tie", "tie"),
    ("> Verdict: A", "A"),  # quoted
    ("__VERDICT__: a", "A"),
])
def test_valid_verdicts(text: str, verdict: str) -> None:
    parsed = parse_verdict(text)
    assert parsed.verdict == verdict and parsed.error is None


@pytest.mark.parametrize("text, error", [
    ("", "no 'Verdict"),
    ("A", "no 'Verdict"),  # the bare letter is not the format: never guessed
    ("Answer A is better.", "no 'Verdict"),
    ("Verdict: A is better", "no 'Verdict"),
    ("Verdict: C", "no 'Verdict"),
    ("Verdict: A or B", "no 'Verdict"),
    ("The verdict: A", "no 'Verdict"),
    ("Verdict: A\nVerdict: B", "conflicting"),
    ("<think>Verdict: A</think>", "no 'Verdict"),
    ("<think>unfinished thoughts … Verdict: A", "no 'Verdict"),
    ("\x00\ufffd garbage ))) Verdict", "no 'Verdict"),
])
def test_garbage_is_unparseable_not_guessed(text: str, error: str) -> None:
    parsed = parse_verdict(text)
    assert parsed.verdict is None and error in parsed.error


def test_order_outcome_follows_the_revision_side() -> None:
    assert order_outcome("B", "B") == "win" and order_outcome("A", "B") == "loss"
    assert order_outcome("A", "A") == "win" and order_outcome("B", "A") == "loss"
    assert order_outcome("tie", "A") == "tie" and order_outcome(None, "A") == "unparseable"


@pytest.mark.parametrize("first, second, outcome", [
    ("win", "win", "win"), ("loss", "loss", "loss"), ("tie", "tie", "tie"),
    ("win", "loss", "inconsistent"),  # the verdict flipped with the order (position bias)
    ("loss", "win", "inconsistent"),
    ("win", "tie", "inconsistent"),
    ("win", "unparseable", "unparseable"), ("unparseable", "tie", "unparseable"),
])
def test_both_orders_combined(first: str, second: str, outcome: str) -> None:
    assert combine(first, second) == outcome


def test_same_letter_in_both_orders_is_inconsistent() -> None:
    # A judge that always answers "A" prefers whatever is shown first: that is position bias.
    first = order_outcome(parse_verdict("Verdict: A").verdict, "B")
    second = order_outcome(parse_verdict("Verdict: A").verdict, "A")
    assert combine(first, second) == "inconsistent"


def test_prompt_shows_both_answers_and_asks_for_the_strict_format() -> None:
    messages = judge_messages([{"role": "user", "content": "Name a colour."}], "Red.", "Blue, like the sky.")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Name a colour." in user and user.index("Red.") < user.index("Blue, like the sky.")
    assert "Verdict: A" in user and "Verdict: B" in user and "Verdict: tie" in user


def test_prompt_text_is_pinned_to_its_version() -> None:
    """Changing the judge prompt (or how a conversation is rendered into it) must bump
    PROMPT_VERSION: verdicts of different prompts are not comparable. Update both together."""
    chat = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]
    digests = [hashlib.sha256(str(judge_messages(chat, "a", "b", few_shot=f)).encode()).hexdigest() for f in (0, 1)]
    assert (PROMPT_VERSION, digests) == ("pairwise-v1", [
        "331cfc669f3df51c66251abffdf88895fedd72c94a865b086641bababa88f9f3",
        "b81fc027caec2db60f28db84f45fc941ecab666db504433eb67bb0e386002605"])
    assert json.dumps(judge_messages(chat, "a", "b"))  # plain JSON-able chat messages


def test_few_shot_mode_shows_worked_examples_and_has_its_own_version() -> None:
    messages = judge_messages([{"role": "user", "content": "Name a colour."}], "Red.", "Blue.", few_shot=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [messages[2]["content"], messages[4]["content"]] == ["Verdict: B", "Verdict: A"]
    assert messages[1]["content"].replace("What is 2 + 3?", "X") != messages[5]["content"]
    assert "Name a colour." in messages[5]["content"]
    assert (prompt_version(), prompt_version(True)) == ("pairwise-v1", "pairwise-v1+few-shot")


@pytest.mark.parametrize("backend, model, url, given, few_shot", [
    ("local", "", None, None, True),  # the embedded 135M model: few-shot by default
    ("local", "some/folder", None, None, False),
    ("openai", "gpt", "http://x", None, False),
    ("openai", "gpt", "http://x", True, True),
    ("local", "", None, False, False),
])
def test_few_shot_by_default_only_for_the_embedded_judge(backend, model, url, given, few_shot) -> None:
    assert judge_spec(backend, model, url, 32, given).few_shot is few_shot
