"""The judge prompt: the one place that says what the pairwise judge is shown and how it must
answer. Any change to the wording must bump PROMPT_VERSION (a test pins the text's hash), since
the version is written into every verdict row and verdicts of different prompts do not mix.

Few-shot mode puts two worked comparisons (one answered `Verdict: B`, one `Verdict: A`) before
the real one, for small models that do not follow the format from the instruction alone (the
embedded 135M model answers with prose otherwise); its version is PROMPT_VERSION + "+few-shot".
"""

from __future__ import annotations

from refine.backends.base import Message
from refine.cnr_format import render_conversation

PROMPT_VERSION = "pairwise-v1"

SYSTEM_PROMPT = "You are an impartial judge. You compare two answers to the same request and say which is better."

TEMPLATE = """Compare two answers to the request below. Decide which answer serves the user better: \
correct, helpful, clear and complete. Ignore which answer comes first. Do not prefer an answer \
for being longer.

[Request]
{conversation}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Reply with exactly one line and nothing else:
Verdict: A
if Answer A is better,
Verdict: B
if Answer B is better, or
Verdict: tie
if they are equally good or equally bad."""


FEW_SHOT_EXAMPLES: tuple[tuple[str, str, str, str], ...] = (  # (request, answer A, answer B, reply)
    ("What is 2 + 3?", "2 + 3 = 6.", "2 + 3 = 5.", "Verdict: B"),
    ("Name the capital of France.", "The capital of France is Paris.", "France is a country in Europe.", "Verdict: A"),
)


def prompt_version(few_shot: bool = False) -> str:
    """The version written into verdict rows: PROMPT_VERSION, marked when few-shot."""
    return PROMPT_VERSION + ("+few-shot" if few_shot else "")


def _user(conversation: list[Message], answer_a: str, answer_b: str) -> Message:
    text = TEMPLATE.format(conversation=render_conversation(conversation), answer_a=answer_a.strip(),
                           answer_b=answer_b.strip())
    return {"role": "user", "content": text}


def judge_messages(conversation: list[Message], answer_a: str, answer_b: str, *,
                   few_shot: bool = False) -> list[Message]:
    """The chat messages asking the judge to compare `answer_a` and `answer_b` for the
    conversation (after the worked examples when `few_shot`)."""
    examples: list[Message] = []
    if few_shot:
        for request, a, b, reply in FEW_SHOT_EXAMPLES:
            examples += [_user([{"role": "user", "content": request}], a, b), {"role": "assistant", "content": reply}]
    return [{"role": "system", "content": SYSTEM_PROMPT}, *examples, _user(conversation, answer_a, answer_b)]
