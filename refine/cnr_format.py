"""The Critique-and-Revise (CnR) format: the one place that knows how a CnR prompt looks,
how a feedback record becomes a training target, and how model output splits into a
critique and a revision — incrementally, as tokens stream in.

A CnR generation reads:

    Critique: <what is wrong or missing>
    Revision: <the improved response>

or, when the response is already good, only ``Critique: Nothing to fix.``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from refine.text import marker_prefix_len

FORMAT_VERSION = "cnr-v1"
CRITIQUE_MARKER = "Critique:"
REVISION_MARKER = "\nRevision:"
NOTHING_TO_FIX = "Nothing to fix."

SYSTEM_PROMPT = (
    "You are a careful reviewer. You point out what is wrong or missing in a response to a "
    "conversation, then rewrite the response to fix it."
)
INSTRUCTION = (
    f'Write "{CRITIQUE_MARKER}" followed by a short critique of the response, then on a new line '
    f'"{REVISION_MARKER.strip()}" followed by the complete improved response. If the response '
    f'needs no change, write only "{CRITIQUE_MARKER} {NOTHING_TO_FIX}"'
)

Message = dict[str, str]
Section = Literal["preamble", "critique", "revision"]

# Hand-written examples for driving an untuned instruct model (few-shot mode).
FEW_SHOT_EXAMPLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "A shop sells pens at 3 dollars each. How much do 4 pens cost?",
        "4 pens cost 3 + 4 = 7 dollars.",
        "The response adds the price and the count instead of multiplying them. "
        "4 pens at 3 dollars each cost 4 × 3 = 12 dollars.",
        "Each pen costs 3 dollars, so 4 pens cost 4 × 3 = 12 dollars.",
    ),
    (
        "What is the capital of Australia?",
        "The capital of Australia is Sydney.",
        "Sydney is the largest city, but the capital of Australia is Canberra.",
        "The capital of Australia is Canberra.",
    ),
)


def render_conversation(conversation: list[Message]) -> str:
    """The conversation as plain text: one `Role: text` block per message."""
    if len(conversation) == 1 and conversation[0]["role"] == "user":
        return conversation[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in conversation)


def cnr_user_message(conversation: list[Message], response: str) -> str:
    """The user turn that asks for a critique and revision of `response`."""
    label = "Prompt" if len(conversation) == 1 else "Conversation"
    return (
        f"{label}:\n{render_conversation(conversation)}\n\n"
        f"Response to improve:\n{response}\n\n{INSTRUCTION}"
    )


def cnr_target(critique: str, revision: str, response: str | None = None) -> str:
    """The model's part for a feedback record (the training target)."""
    critique = critique.strip()
    if is_nothing_to_fix(critique) and (response is None or normalize(revision) == normalize(response)):
        return f"{CRITIQUE_MARKER} {NOTHING_TO_FIX}"
    return f"{CRITIQUE_MARKER} {critique}{REVISION_MARKER} {revision.strip()}"


def cnr_messages(conversation: list[Message], response: str, *, few_shot: bool = False) -> list[Message]:
    """Chat messages of a CnR request; the model's chat template turns them into a prompt."""
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}]
    if few_shot:
        for prompt, bad, critique, revision in FEW_SHOT_EXAMPLES:
            messages.append({"role": "user", "content": cnr_user_message([{"role": "user", "content": prompt}], bad)})
            messages.append({"role": "assistant", "content": cnr_target(critique, revision)})
    messages.append({"role": "user", "content": cnr_user_message(conversation, response)})
    return messages


def training_messages(conversation: list[Message], response: str, critique: str, revision: str) -> list[Message]:
    """A complete training conversation: the CnR request plus the target answer."""
    return cnr_messages(conversation, response) + [
        {"role": "assistant", "content": cnr_target(critique, revision, response)}
    ]


_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Whitespace- and case-insensitive form used to decide whether a revision changed anything."""
    return _SPACE.sub(" ", text).strip().casefold()


def is_nothing_to_fix(critique: str) -> bool:
    """True when a critique says the response needs no change."""
    return normalize(critique).rstrip(".!").startswith(normalize(NOTHING_TO_FIX).rstrip("."))


@dataclass(frozen=True)
class ParsedCnR:
    """The outcome of one CnR generation."""

    critique: str
    revision: str
    ok: bool
    nothing_to_fix: bool = False
    error: str | None = None


class CnRStreamParser:
    """Splits a CnR generation into critique and revision as chunks arrive.

    `feed` returns the new (section, text) pieces; text that might be the start of a marker
    split across chunks is held back until the next chunk decides. `section` tells which
    part is being written. `finish` returns the ParsedCnR.
    """

    def __init__(self) -> None:
        self.section: Section = "preamble"
        self._pending = ""  # text not yet assigned to a section
        self._parts: dict[str, list[str]] = {"critique": [], "revision": []}
        self._raw: list[str] = []
        self._section_started = False  # leading white space of a section is dropped

    @property
    def raw(self) -> str:
        """Everything fed so far."""
        return "".join(self._raw)

    def feed(self, chunk: str) -> list[tuple[Section, str]]:
        """Consume a chunk; return the pieces of critique/revision text it completes."""
        self._raw.append(chunk)
        self._pending += chunk
        out: list[tuple[Section, str]] = []
        while True:
            if self.section == "preamble":
                stripped = self._pending.lstrip()
                if stripped.startswith(CRITIQUE_MARKER):
                    self._pending = stripped[len(CRITIQUE_MARKER):]
                    self.section = "critique"
                    continue
                if CRITIQUE_MARKER.startswith(stripped):
                    return out  # could still become the marker
                # No marker: treat the text as critique so nothing is lost.
                self.section = "critique"
                continue
            if not self._section_started:
                self._pending = self._pending.lstrip()
                if not self._pending:
                    return out
                self._section_started = True
            if self.section == "critique":
                index = self._pending.find(REVISION_MARKER)
                if index >= 0:
                    self._emit(out, "critique", self._pending[:index])
                    self._pending = self._pending[index + len(REVISION_MARKER):]
                    self.section = "revision"
                    self._section_started = False
                    continue
                keep = marker_prefix_len(self._pending, REVISION_MARKER)
                self._emit(out, "critique", self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep:]
                return out
            self._emit(out, "revision", self._pending)
            self._pending = ""
            return out

    def _emit(self, out: list[tuple[Section, str]], section: Section, text: str) -> None:
        if text:
            self._parts[section].append(text)
            out.append((section, text))

    def finish(self) -> ParsedCnR:
        """Flush held-back text and judge the whole generation."""
        if self._pending and self.section != "preamble":
            self._parts[self.section].append(self._pending)
        elif self._pending.strip():
            self._parts["critique"].append(self._pending)
        self._pending = ""
        critique = "".join(self._parts["critique"]).strip()
        revision = "".join(self._parts["revision"]).strip()
        if is_nothing_to_fix(critique):
            return ParsedCnR(critique, revision, ok=True, nothing_to_fix=True)
        if not critique:
            return ParsedCnR(critique, revision, ok=False, error="the output has no critique")
        if self.section != "revision":
            return ParsedCnR(critique, revision, ok=False, error=f"the output has no '{REVISION_MARKER.strip()}' part")
        if not revision:
            return ParsedCnR(critique, revision, ok=False, error="the revision is empty")
        return ParsedCnR(critique, revision, ok=True)


def parse_cnr(text: str) -> ParsedCnR:
    """Parse a complete CnR generation."""
    parser = CnRStreamParser()
    parser.feed(text)
    return parser.finish()
