"""Edits: the `edits` CnR format's changes to an answer — quoting an exact span and giving its
replacement — as data, as text a model writes, applied deterministically, and derived from an
answer and its revised version.

A small model cannot regenerate a 300-word answer faithfully, but it can point at a passage
and propose a local change. The text form, one label per line start:

    Replace: <exact span of the answer>
    With: <its replacement; empty deletes the span>
    After: <exact span of the answer>
    Insert: <text inserted after the span, separated by a space>
    Append: <a paragraph added at the end of the answer>

Edits apply in order, each to the text the previous ones left. An edit whose span is missing
or occurs more than once is dropped and recorded with the reason; the others still apply.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

EditKind = Literal["replace", "insert_after", "append"]
EDIT_KINDS: tuple[EditKind, ...] = ("replace", "insert_after", "append")
# (label of the span line, label of the text line) per kind; append has no span.
LABELS: dict[EditKind, tuple[str | None, str]] = {
    "replace": ("Replace", "With"),
    "insert_after": ("After", "Insert"),
    "append": (None, "Append"),
}
SPAN_LABELS = {span: kind for kind, (span, _) in LABELS.items() if span}
TEXT_LABELS = {text: kind for kind, (_, text) in LABELS.items()}
ALL_LABELS = tuple(SPAN_LABELS) + tuple(TEXT_LABELS)
# A label at the start of a line, as models write them (plain or bold, any case).
LABEL_LINE = re.compile(
    r"^[ \t]*(?:\*\*)?(?P<label>" + "|".join(ALL_LABELS) + r")(?:\*\*)?[ \t]*:(?:\*\*)?[ \t]?",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTES = (('"', '"'), ("“", "”"), ("'", "'"), ("`", "`"))


@dataclass(frozen=True)
class Edit:
    """One change: `kind`, the quoted `span` of the current answer ("" for append) and the new
    `text`. `applied` is None until applied; then True, or False with `reason` saying why it
    was dropped ("not found", "ambiguous: N matches", "incomplete")."""

    kind: EditKind
    span: str
    text: str
    applied: bool | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The edit as a JSON object (the `edits` field of a feedback record)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Edit:
        """An edit from its JSON object; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("an edit must be an object with kind, span and text")
        kind = data.get("kind")
        if kind not in EDIT_KINDS:
            raise ValueError(f"edit kind must be one of {', '.join(EDIT_KINDS)}, got {kind!r}")
        span, text = data.get("span", ""), data.get("text", "")
        if not isinstance(span, str) or not isinstance(text, str):
            raise ValueError("an edit's span and text must be strings")
        if kind != "append" and not span.strip():
            raise ValueError(f"a {kind} edit needs a non-empty span")
        if kind != "replace" and not text.strip():
            raise ValueError(f"an {kind} edit needs a non-empty text")
        return cls(kind, span, text)


def render_edits(edits: list[Edit]) -> str:
    """The edits as the model writes them (one label per line start)."""
    lines: list[str] = []
    for edit in edits:
        span_label, text_label = LABELS[edit.kind]
        if span_label:
            lines.append(f"{span_label}: {edit.span.strip()}")
        lines.append(f"{text_label}: {edit.text.strip()}".rstrip())
    return "\n".join(lines)


def _unquote(value: str) -> str:
    for left, right in _QUOTES:
        if len(value) >= 2 and value.startswith(left) and value.endswith(right):
            return value[1:-1]
    return value


Block = tuple[str, str]  # (label, content) of one labelled block


def edit_blocks(text: str) -> tuple[list[Block], str, int | None]:
    """The labelled blocks of `text` (label capitalised, content stripped), the text before the
    first label, and where the last block's label starts (None without labels)."""
    matches = list(LABEL_LINE.finditer(text))
    if not matches:
        return [], text, None
    blocks = [
        (m.group("label").capitalize(), text[m.end(): nxt.start() if nxt else len(text)].strip())
        for m, nxt in zip(matches, [*matches[1:], None])
    ]
    return blocks, text[: matches[0].start()], matches[-1].start()


def edits_from_blocks(blocks: list[Block], *, final: bool = True) -> list[Edit]:
    """The edits the blocks spell, in order. Until `final`, a span still waiting for its text
    line is left out (it may yet be completed); when final it is kept, marked incomplete."""
    edits: list[Edit] = []
    pending: tuple[EditKind, str] | None = None
    for label, content in blocks:
        if label in SPAN_LABELS:
            if pending is not None:
                edits.append(Edit(pending[0], pending[1], "", applied=False, reason="incomplete"))
            pending = (SPAN_LABELS[label], _unquote(content))
            continue
        kind = TEXT_LABELS[label]
        if kind == "append":
            if pending is not None:
                edits.append(Edit(pending[0], pending[1], "", applied=False, reason="incomplete"))
                pending = None
            edits.append(Edit("append", "", content) if content else
                         Edit("append", "", "", applied=False, reason="incomplete"))
            continue
        if pending is None or pending[0] != kind or not pending[1]:
            edits.append(Edit(kind, pending[1] if pending else "", content, applied=False, reason="incomplete"))
        elif kind == "insert_after" and not content:
            edits.append(Edit(kind, pending[1], "", applied=False, reason="incomplete"))
        else:
            edits.append(Edit(kind, pending[1], _unquote(content) if content.startswith('"') else content))
        pending = None
    if pending is not None and final:
        edits.append(Edit(pending[0], pending[1], "", applied=False, reason="incomplete"))
    return edits


def parse_edits(text: str) -> tuple[list[Edit], str]:
    """The edits in `text` (everything from the first edit label on), and the text before the
    first label. An incomplete edit (a span without its text line, or an empty span) is kept,
    marked `applied=False, reason="incomplete"`."""
    blocks, head, _ = edit_blocks(text)
    return edits_from_blocks(blocks), head


def _locate(text: str, span: str) -> tuple[int, int] | str:
    """(start, end) of the one occurrence of `span` in `text`, matched exactly or, failing that,
    with any run of white space matching any other; else the reason it cannot be used."""
    count = text.count(span)
    if count == 1:
        start = text.index(span)
        return start, start + len(span)
    if count == 0:
        words = span.split()
        if words:
            pattern = re.compile(r"\s+".join(re.escape(w) for w in words))
            found = list(pattern.finditer(text))
            if len(found) == 1:
                return found[0].start(), found[0].end()
            count = len(found)
    return "not found" if count == 0 else f"ambiguous: {count} matches"


def apply_edit(text: str, edit: Edit) -> tuple[str, Edit]:
    """`text` with `edit` applied, and the edit marked applied or dropped (text unchanged)."""
    if edit.applied is False:
        return text, edit
    if edit.kind == "append":
        return f"{text.rstrip()}\n\n{edit.text.strip()}", replace(edit, applied=True)
    where = _locate(text, edit.span)
    if isinstance(where, str):
        return text, replace(edit, applied=False, reason=where)
    start, end = where
    before, after = text[:start], text[end:]
    if edit.kind == "replace":
        new = edit.text.strip()
        if not new and before.endswith(" ") and (after.startswith((" ", ",", ".", ";", ":", "!", "?")) or not after):
            before = before[:-1]  # a deleted span does not leave a double space
        elif not new and (not before or before.endswith("\n")):
            after = after.lstrip(" \t")  # nor a line starting with a space
        return before + new + after, replace(edit, applied=True)
    insert = edit.text.strip()
    glue = "" if insert[:1] in ",.;:!?)" else " "
    if after.startswith(" ") and glue:
        return f"{before}{text[start:end]} {insert}{after}", replace(edit, applied=True)
    return f"{before}{text[start:end]}{glue}{insert}{after}", replace(edit, applied=True)


def apply_edits(text: str, edits: list[Edit]) -> tuple[str, list[Edit]]:
    """`text` with `edits` applied in order; every edit returned marked applied or dropped."""
    done: list[Edit] = []
    for edit in edits:
        text, marked = apply_edit(text, edit)
        done.append(marked)
    return text, done


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
MIN_SPAN_WORDS = 3  # a quoted span has at least this many words where the answer allows
MERGE_GAP = 3  # changes separated by at most this many unchanged tokens become one edit


def _word_bounds(tokens: list[str], start: int, end: int) -> tuple[int, int]:
    """Widen tokens[start:end] to whole words: it starts after white space (or at the start)
    and ends before white space (or at the end), so a span never begins or ends mid-word."""
    while start > 0 and not tokens[start - 1].isspace():
        start -= 1
    while end < len(tokens) and not tokens[end].isspace() and (end == start or not tokens[end - 1].isspace()):
        end += 1
    return start, end


def _grow_unique(tokens: list[str], start: int, end: int) -> tuple[int, int]:
    """Widen tokens[start:end] by whole tokens on both sides until its text occurs once in the
    whole text and has at least MIN_SPAN_WORDS words (or covers everything)."""
    whole = "".join(tokens)
    while True:
        start, end = _word_bounds(tokens, start, end)
        span = "".join(tokens[start:end]).strip()
        if span and len(span.split()) >= MIN_SPAN_WORDS and whole.count(span) == 1:
            return start, end
        if start == 0 and end == len(tokens):
            return start, end
        if start > 0:
            start -= 1
        if end < len(tokens):
            end += 1


def derive_edits(response: str, revision: str) -> list[Edit]:
    """Edits turning `response` into `revision`, from a word-level diff (difflib): nearby changes
    merge into one edit, each span widened until it is unique. Checked by applying them: when the
    result differs from `revision` beyond white space, one edit replacing the whole changed region
    (or the whole response) is returned instead. [] when the two are equal up to white space."""
    if " ".join(response.split()) == " ".join(revision.split()):
        return []
    a, b = _TOKEN.findall(response), _TOKEN.findall(revision)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    groups: list[list[int]] = []  # [a_start, a_end, b_start, b_end]
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if groups and i1 - groups[-1][1] <= MERGE_GAP:
            groups[-1][1], groups[-1][3] = i2, j2
        else:
            groups.append([i1, i2, j1, j2])
    edits: list[Edit] = []
    for i1, i2, j1, j2 in groups:
        if i1 == len(a) and j1 < len(b) and "\n" in "".join(b[j1:j2])[:3]:
            edits.append(Edit("append", "", "".join(b[j1:j2]).strip()))
            continue
        s, e = _grow_unique(a, i1, i2)
        # the same context on the revision's side: the tokens added on the left and right
        left, right = a[s:i1], a[i2:e]
        new = "".join(left + b[j1:j2] + right)
        edits.append(Edit("replace", "".join(a[s:e]).strip(), new.strip()))
    edits = [_as_insert(e) for e in edits]
    if _reproduces(response, revision, edits):
        return edits
    s, e = _grow_unique(a, groups[0][0], groups[-1][1])
    whole = [Edit("replace", "".join(a[s:e]).strip(),
                  "".join(a[s:groups[0][0]] + b[groups[0][2]:groups[-1][3]] + a[groups[-1][1]:e]).strip())]
    if _reproduces(response, revision, whole):
        return whole
    return [Edit("replace", response.strip(), revision.strip())]


def _as_insert(edit: Edit) -> Edit:
    """A replace edit that only adds text after its span, as the shorter insert form."""
    if edit.kind == "replace" and edit.text.startswith(edit.span + " ") and len(edit.span) < len(edit.text):
        return Edit("insert_after", edit.span, edit.text[len(edit.span):].strip())
    return edit


def _reproduces(response: str, revision: str, edits: list[Edit]) -> bool:
    result, marked = apply_edits(response, edits)
    return all(e.applied for e in marked) and result.split() == revision.split()
