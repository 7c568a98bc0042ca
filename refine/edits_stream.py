"""The `edits` CnR format read as it streams: the critique as it is written, then each edit as
soon as it is complete (the next label has started), applied to the answer at once — so the
revision updates live, one edit at a time.

Same interface as refine.cnr_format.CnRStreamParser (`feed`, `flush`, `finish`, `section`,
`text`, `raw`, `done`), with ("edit", Edit) pieces in place of revision text; `text("revision")`
is the raw edits text written so far (what the loop watches for repetition).
"""

from __future__ import annotations

from refine.cnr_format import _CRITIQUE_START, _REVISION_END, ParsedCnR, Section, is_nothing_to_fix
from refine.edits import ALL_LABELS, Edit, apply_edit, edit_blocks, edits_from_blocks

# What ends the edits is what ends a rewrite's revision: a second critique or a revision label
# at the start of a line (the model starts another round, or switches format), or template text.
_EDITS_END = _REVISION_END
_LABEL_PREFIXES = tuple(f"{label}:".casefold() for label in ALL_LABELS)


def _may_be_label(line: str) -> bool:
    """Whether an unfinished last line could still become an edit label ("Repl", "**With")."""
    text = line.lstrip(" \t*").casefold()
    return bool(text) and any(p.startswith(text) or text.startswith(p) for p in _LABEL_PREFIXES)


class EditsStreamParser:
    """Splits an `edits` generation into the critique and the edits as chunks arrive, applying
    each complete edit to `answer` (the version being revised)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.revision = answer  # the answer with the edits so far applied
        self.section: Section = "preamble"
        self.edits: list[Edit] = []  # every complete edit, marked applied or dropped
        self._raw: list[str] = []
        self._critique_sent = 0
        self._overrun = ""

    @property
    def raw(self) -> str:
        """Everything fed so far."""
        return "".join(self._raw)

    @property
    def done(self) -> bool:
        """True once the edits have ended at a second label or template text."""
        return self.section == "done"

    def _body(self) -> tuple[str | None, bool]:
        """The text after the critique label (None while it may still be coming) and whether
        an end mark cut it."""
        raw = self.raw
        m = _CRITIQUE_START.match(raw, partial=True)
        if m is not None and m.partial:
            return None, False
        body = raw[m.end():] if m is not None else raw
        end = _EDITS_END.search("\n" + body, pos=1)
        if end is not None:
            self._overrun = body[end.start() - 1:]
            return body[: end.start() - 1], True
        return body, False

    def text(self, section: Section) -> str:
        """The critique so far ("critique"), or the raw edits text so far ("revision")."""
        body, _ = self._body()
        if body is None:
            return ""
        _, head, _ = edit_blocks(body)
        return head.strip() if section == "critique" else body[len(head):]

    def feed(self, chunk: str) -> list[tuple[Section | str, object]]:
        """Consume a chunk; return new ("critique", text) and ("edit", Edit) pieces."""
        self._raw.append(chunk)
        return [] if self.done else self._consume(final=False)

    def _consume(self, *, final: bool) -> list[tuple[Section | str, object]]:
        body, ended = self._body()
        if body is None:
            if not final:
                return []
            body = ""
        final = final or ended
        blocks, head, last_start = edit_blocks(body)
        out: list[tuple[Section | str, object]] = []
        critique = head.lstrip()
        if not blocks and not final:  # hold back a last line that may become a label
            cut = critique.rfind("\n") + 1
            if _may_be_label(critique[cut:]):
                critique = critique[:cut]
            critique = critique.rstrip() if cut == len(critique) else critique
        elif blocks or final:
            critique = critique.rstrip()
        if len(critique) > self._critique_sent:
            out.append(("critique", critique[self._critique_sent:]))
            self._critique_sent = len(critique)
        self.section = "critique" if not blocks else "revision"
        closed = blocks if final else blocks[:-1]
        for edit in edits_from_blocks(closed, final=final)[len(self.edits):]:
            self.revision, marked = apply_edit(self.revision, edit)
            self.edits.append(marked)
            out.append(("edit", marked))
        if ended:
            self.section = "done"
        return out

    def flush(self) -> list[tuple[Section | str, object]]:
        """At the end of the stream: the held-back critique and the last edit."""
        return [] if self.done else self._consume(final=True)

    def finish(self) -> ParsedCnR:
        """Flush, then judge the whole generation: ok with a critique and at least one edit (or
        "Nothing to fix."); the revision is the answer with every applicable edit applied."""
        self.flush()
        critique = self.text("critique") if self._critique_sent else ""
        common = dict(overrun=self._overrun, edits=tuple(self.edits))
        if is_nothing_to_fix(critique):
            return ParsedCnR(critique, self.answer, ok=True, nothing_to_fix=True, **common)
        if not critique:
            return ParsedCnR(critique, self.revision, ok=False, error="the output has no critique", **common)
        if not self.edits:
            return ParsedCnR(critique, self.revision, ok=False, error="the output has no edits", **common)
        return ParsedCnR(critique, self.revision, ok=True, **common)
