"""The Critique-and-Revise (CnR) format: the one place that knows how a CnR prompt looks,
how a feedback record becomes a training target, and how model output splits into a
critique and a revision — incrementally, as tokens stream in.

Two formats. `rewrite` (the research's, for large models) reads:

    Critique: <what is wrong or missing>
    Revision: <the improved response>

`edits` (for small models, which cannot regenerate a long answer faithfully) reads:

    Critique: <what is wrong or missing>
    Replace: <an exact passage of the response>
    With: <its replacement>

with more edits as refine.edits describes. Either way, when the response is already good,
only ``Critique: Nothing to fix.``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import regex

CnRFormat = Literal["rewrite", "edits"]
# The version of each format's prompt and target text; an adapter records the one it was trained
# on, and the loop refuses an adapter whose format or version this code does not know.
FORMAT_VERSIONS: dict[str, str] = {"rewrite": "cnr-v1", "edits": "edits-v1"}
FORMAT_VERSION = FORMAT_VERSIONS["rewrite"]
CRITIQUE_MARKER = "Critique:"
REVISION_MARKER = "\nRevision:"
NOTHING_TO_FIX = "Nothing to fix."
# Sent as stop strings with every CnR request (at most 4: OpenAI's limit): a second round the
# model starts by itself, and the next chat turn of ChatML and Llama 3 templates. The parser
# ends a revision at these and the other labels and template text anyway (servers that ignore
# stop strings, or a label in another form).
CNR_STOP_STRINGS: tuple[str, ...] = ("\nCritique:", "\n**Critique", "<|im_start|>", "<|eot_id|>")

SYSTEM_PROMPT = (
    "You are a careful reviewer. You point out what is wrong or missing in a response to a "
    "conversation, then rewrite the response to fix it."
)
INSTRUCTION = (
    f'Write "{CRITIQUE_MARKER}" followed by a short critique of the response, then on a new line '
    f'"{REVISION_MARKER.strip()}" followed by the complete improved response. If the response '
    f'needs no change, write only "{CRITIQUE_MARKER} {NOTHING_TO_FIX}"'
)

EDITS_SYSTEM_PROMPT = (
    "You are a careful reviewer. You point out what is wrong or missing in a response to a "
    "conversation, then propose small edits that fix it."
)
EDITS_INSTRUCTION = (
    f'Write "{CRITIQUE_MARKER}" followed by a short critique of the response. Then give each change as '
    '"Replace:" with an exact passage of the response and, on the next line, "With:" with its replacement; '
    '"After:" with an exact passage and "Insert:" with text to add after it; or "Append:" with a paragraph to '
    f'add at the end. If the response needs no change, write only "{CRITIQUE_MARKER} {NOTHING_TO_FIX}"'
)

Message = dict[str, str]
Section = Literal["preamble", "critique", "revision", "done"]

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


def cnr_user_message(conversation: list[Message], response: str, fmt: CnRFormat = "rewrite") -> str:
    """The user turn that asks for a critique and revision (or edits) of `response`."""
    label = "Prompt" if len(conversation) == 1 else "Conversation"
    instruction = EDITS_INSTRUCTION if fmt == "edits" else INSTRUCTION
    return (
        f"{label}:\n{render_conversation(conversation)}\n\n"
        f"Response to improve:\n{response}\n\n{instruction}"
    )


def cnr_target(critique: str, revision: str, response: str | None = None, *, fmt: CnRFormat = "rewrite",
               edits: list[Any] | None = None) -> str:
    """The model's part for a feedback record (the training target). In the `edits` format the
    edits (refine.edits.Edit) are given, or derived from `response` and `revision`."""
    critique = critique.strip()
    if is_nothing_to_fix(critique) and (response is None or normalize(revision) == normalize(response)):
        return f"{CRITIQUE_MARKER} {NOTHING_TO_FIX}"
    if fmt == "edits":
        from refine.edits import derive_edits, render_edits

        if edits is None:
            if response is None:
                raise ValueError("the edits format needs the response (or the edits)")
            edits = derive_edits(response, revision)
        return f"{CRITIQUE_MARKER} {critique}\n{render_edits(edits)}"
    return f"{CRITIQUE_MARKER} {critique}{REVISION_MARKER} {revision.strip()}"


def cnr_messages(conversation: list[Message], response: str, *, few_shot: bool = False,
                 fmt: CnRFormat = "rewrite") -> list[Message]:
    """Chat messages of a CnR request in format `fmt`; the model's chat template turns them into a prompt."""
    system = EDITS_SYSTEM_PROMPT if fmt == "edits" else SYSTEM_PROMPT
    messages: list[Message] = [{"role": "system", "content": system}]
    if few_shot:
        for prompt, bad, critique, revision in FEW_SHOT_EXAMPLES:
            messages.append({"role": "user", "content": cnr_user_message([{"role": "user", "content": prompt}], bad, fmt)})
            messages.append({"role": "assistant", "content": cnr_target(critique, revision, bad, fmt=fmt)})
    messages.append({"role": "user", "content": cnr_user_message(conversation, response, fmt)})
    return messages


def training_messages(conversation: list[Message], response: str, critique: str, revision: str) -> list[Message]:
    """A complete training conversation: the CnR request plus the target answer."""
    return cnr_messages(conversation, response) + [
        {"role": "assistant", "content": cnr_target(critique, revision, response)}
    ]


_SPACE = re.compile(r"\s+")


_EMPHASIS_CHARS = re.compile(r"[*_`#]+")


def normalize(text: str) -> str:
    """Whitespace- and case-insensitive form used to decide whether a revision changed anything."""
    return _SPACE.sub(" ", text).strip().casefold()


def is_nothing_to_fix(critique: str) -> bool:
    """True when a critique says the response needs no change."""
    plain = normalize(_EMPHASIS_CHARS.sub("", critique)).rstrip(".!")
    return plain.startswith(normalize(NOTHING_TO_FIX).rstrip("."))


# Labels as models write them: `Critique:`, `**Critique:**`, `**Critique**:`, `## Critique:`, any
# case at the start of a line; mid-line only after the end of a sentence and capitalised
# ("… is wrong. Revision: …"), so that "needs revision: …" inside a critique is not a label.
_EMPHASIS = r"(?P<em>\*\*|__|\*|_)"
_LABEL = (
    r"(?:\#{1,6}[ \t]*)?(?:"
    + _EMPHASIS + r"[ \t]*(?:%(w)s)[ \t]*(?:(?P=em)[ \t]*:|:[ \t]*(?P=em))"  # **Critique:** / **Critique**:
    + r"|(?:%(w)s)[ \t]*:"  # Critique:
    + r")|(?:\#{1,6}[ \t]*(?:%(w)s)|" + _EMPHASIS + r"(?:%(w)s)(?P=em))[ \t]*(?=\n)"  # "## Critique" alone on a line
)
_LINE_START = r"(?:\n|(?<=\A\n))[ \t]*"  # the parser searches with the previous character as context
_SENTENCE_END = r"(?<=[.!?)\]\"'])[ \t]+"
_CRITIQUE_WORDS = r"(?i:critique|feedback)"
_REVISION_WORDS = r"(?i:revision|revised response|improved response)"
_CRITIQUE_START = regex.compile(r"\A\s*(?:" + _LABEL % {"w": _CRITIQUE_WORDS} + ")")
_REVISION_START = regex.compile(
    _LINE_START + "(?:" + _LABEL % {"w": _REVISION_WORDS} + ")|" + _SENTENCE_END + "(?:" + _LABEL % {"w": "Revision|REVISION"} + ")"
)
# Chat-template control text (ChatML, Llama 3, Gemma, Mistral, Phi, Zephyr) and reasoning tags.
TEMPLATE_TEXT = regex.compile(
    r"<\|[A-Za-z_]{2,30}\|>|</s>|<s>|<(?:start|end)_of_turn>|\[/?INST\]|</?think>", regex.IGNORECASE
)
# What ends a revision: a second label at the start of a line (the model starts another round or
# repeats itself), or template text (the model runs on into the next turn).
_REVISION_END = regex.compile(
    _LINE_START + "(?:" + _LABEL % {"w": _CRITIQUE_WORDS + "|" + _REVISION_WORDS} + ")|" + TEMPLATE_TEXT.pattern,
    regex.IGNORECASE,
)


def has_format_text(text: str) -> str | None:
    """The first CnR label at the start of a line or piece of chat-template/reasoning markup in
    `text`, or None: such text is never part of an answer."""
    m = _REVISION_END.search("\n" + text)
    return m.group().strip() if m else None


@dataclass(frozen=True)
class ParsedCnR:
    """The outcome of one CnR generation. `overrun` is the text after the revision's end (a
    second label or template text), dropped from the revision."""

    critique: str
    revision: str
    ok: bool
    nothing_to_fix: bool = False
    error: str | None = None
    overrun: str = ""
    edits: tuple[Any, ...] = ()  # the `edits` format: every edit (refine.edits.Edit), applied or dropped


class CnRStreamParser:
    """Splits a CnR generation into critique and revision as chunks arrive.

    `feed` returns the new (section, text) pieces; text that might be the start of a label split
    across chunks is held back until the next chunk decides. `section` tells which part is being
    written ("done" once the revision has ended at a second label or template text: the rest is
    kept in `raw` and `overrun` only). `finish` returns the ParsedCnR.
    """

    def __init__(self) -> None:
        self.section: Section = "preamble"
        self._pending = ""  # text not yet assigned to a section
        self._parts: dict[str, list[str]] = {"critique": [], "revision": []}
        self._raw: list[str] = []
        self._overrun: list[str] = []
        self._section_started = False  # leading white space of a section is dropped
        self._context = "\n"  # the character before the pending text (labels start lines)

    @property
    def raw(self) -> str:
        """Everything fed so far."""
        return "".join(self._raw)

    def text(self, section: Section) -> str:
        """The text of `section` ("critique" or "revision") so far."""
        return "".join(self._parts.get(section, ()))

    @property
    def done(self) -> bool:
        """True once the revision has ended: the rest of the generation is not needed."""
        return self.section == "done"

    def feed(self, chunk: str) -> list[tuple[Section, str]]:
        """Consume a chunk; return the pieces of critique/revision text it completes."""
        self._raw.append(chunk)
        if self.section == "done":
            self._overrun.append(chunk)
            return []
        self._pending += chunk
        return self._consume(final=False)

    def _consume(self, *, final: bool) -> list[tuple[Section, str]]:
        """Assign pending text to sections. Until `final`, a label that may still grow (it ends
        where the text ends, or the text ends in its first characters) is held back."""
        out: list[tuple[Section, str]] = []
        while True:
            if self.section == "preamble":
                m = _CRITIQUE_START.match(self._pending, partial=not final)
                if m is not None and not m.partial and (final or m.end() < len(self._pending)):
                    self._pending = self._pending[m.end():]
                    self.section = "critique"
                    continue
                if not final and (m is not None or not self._pending.strip()):
                    return out  # could still become the label
                # No label: treat the text as critique so nothing is lost.
                self.section = "critique"
                continue
            if not self._section_started:
                self._pending = self._pending.lstrip()
                if not self._pending:
                    return out
                self._section_started = True
            boundary = _REVISION_START if self.section == "critique" else _REVISION_END
            text = self._context + self._pending
            m = boundary.search(text, pos=1, partial=not final)
            start, end = (m.start() - 1, m.end() - 1) if m is not None else (0, 0)
            if m is not None and not m.partial and (final or end < len(self._pending)):
                self._emit(out, self.section, self._pending[:start])
                if self.section == "critique":
                    self._pending = self._pending[end:]
                    self.section = "revision"
                    self._section_started = False
                    self._context = "\n"
                    continue
                self._overrun.append(self._pending[start:])
                self._pending = ""
                self.section = "done"
                return out
            keep = len(self._pending) - start if m is not None and not final else 0
            self._emit(out, self.section, self._pending[: len(self._pending) - keep])
            self._pending = self._pending[len(self._pending) - keep:]
            return out

    def _emit(self, out: list[tuple[Section, str]], section: Section, text: str) -> None:
        if text:
            self._parts[section].append(text)
            out.append((section, text))
            self._context = text[-1]

    def flush(self) -> list[tuple[Section, str]]:
        """At the end of the stream: the held-back text, as pieces like `feed`'s."""
        return [] if self.section == "done" else self._consume(final=True)

    def finish(self) -> ParsedCnR:
        """Flush held-back text and judge the whole generation."""
        self.flush()
        critique = "".join(self._parts["critique"]).strip()
        revision = "".join(self._parts["revision"]).strip()
        overrun = "".join(self._overrun)
        wrote_revision = self.section in ("revision", "done")
        if is_nothing_to_fix(critique):
            return ParsedCnR(critique, revision, ok=True, nothing_to_fix=True, overrun=overrun)
        if not critique:
            return ParsedCnR(critique, revision, ok=False, error="the output has no critique", overrun=overrun)
        if not wrote_revision:
            return ParsedCnR(critique, revision, ok=False, error=f"the output has no '{REVISION_MARKER.strip()}' part",
                             overrun=overrun)
        if not revision:
            return ParsedCnR(critique, revision, ok=False, error="the revision is empty", overrun=overrun)
        return ParsedCnR(critique, revision, ok=True, overrun=overrun)


def parse_cnr(text: str) -> ParsedCnR:
    """Parse a complete CnR generation."""
    parser = CnRStreamParser()
    parser.feed(text)
    return parser.finish()
