"""The judge prompt: the one place that says what the pairwise judge is shown and how it must
answer. Any change to the wording must bump PROMPT_VERSION (a test pins the text's hash), since
the version is written into every verdict row and verdicts of different prompts do not mix.
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


def judge_messages(conversation: list[Message], answer_a: str, answer_b: str) -> list[Message]:
    """The chat messages asking the judge to compare `answer_a` and `answer_b` for the conversation."""
    user = TEMPLATE.format(conversation=render_conversation(conversation), answer_a=answer_a.strip(),
                           answer_b=answer_b.strip())
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
