"""What a round changed, as HTML for the refinement panel: a revision as the difference against
the version it revised (word by word, by difflib), and the edits of an `edits`-format round.

Model text is untrusted: every piece of it goes through ui.safety.html_text (escaped, line
breaks as `<br>`), so the only markup is this module's own (`div`, `ins`, `del`, `ul`, `li`,
`s`, `em`, `span`), and the HTML has no line break, so Markdown leaves it whole (see html_text).
The styles are ui.layout.CSS's.
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any

from ui.safety import html_text

# Words and punctuation marks, each with the spaces after it (compared without them), and line
# breaks: what a change is made of (a space alone is too common a token for difflib to match it
# quickly).
_TOKEN = re.compile(r"\w+[^\S\r\n]*|[^\w\s][^\S\r\n]*|\s+")
EXACT_TOKENS = 800  # a longer changed passage is matched with difflib's autojunk (fast, coarser)

Segment = tuple[bool, str, str]  # (changed, old, new text); unchanged ones differ at most in spacing


def _changes(old: str, new: str) -> list[Segment]:
    """Lines first (cheap, and most lines of a revision are kept or rewritten whole), compared
    without their line break (the last line has none), then the words of each changed passage."""
    lines_a, lines_b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    keys_a, keys_b = ([line.rstrip("\r\n") for line in lines] for lines in (lines_a, lines_b))
    out: list[Segment] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, keys_a, keys_b).get_opcodes():
        was, now = "".join(lines_a[i1:i2]), "".join(lines_b[j1:j2])
        if tag != "replace":
            out.append((tag != "equal", was, now))
            continue
        a, b = _TOKEN.findall(was), _TOKEN.findall(now)
        # compared without the spaces after them: "big" at the end matches "big " before more
        words_a, words_b = ([t if t.isspace() else t.rstrip() for t in tokens] for tokens in (a, b))
        matcher = difflib.SequenceMatcher(None, words_a, words_b, autojunk=max(len(a), len(b)) > EXACT_TOKENS)
        out += [(op != "equal", "".join(a[k1:k2]), "".join(b[m1:m2]))
                for op, k1, k2, m1, m2 in matcher.get_opcodes()]
    return out


def diff_segments(old: str, new: str, *, open_end: bool = False) -> list[Segment]:
    """`new` against `old` as segments, alternating unchanged and changed. Spaces alone between
    two changes join them (one readable change, not a word salad). With `open_end`
    (`new` is still being written), old text after the end of `new` is not shown as deleted."""
    segments: list[Segment] = []
    for changed, was, now in _changes(old, new):
        if segments and segments[-1][0] == changed:  # neighbours of one kind (from lines and words) join
            segments[-1] = (changed, segments[-1][1] + was, segments[-1][2] + now)
        else:
            segments.append((changed, was, now))
    merged: list[Segment] = []
    for i, segment in enumerate(segments):
        blank = not segment[0] and not segment[2].strip(" \t")  # a line break stays a boundary
        between_changes = blank and 0 < i < len(segments) - 1 and segments[i + 1][0]
        if merged and merged[-1][0] and (segment[0] or between_changes):
            _, was, now = merged.pop()
            merged.append((True, was + segment[1], now + segment[2]))
        else:
            merged.append(segment)
    if open_end and merged and merged[-1][0]:
        _, was, now = merged.pop()
        if now:
            merged.append((True, "", now))
    return _trimmed(merged)


def _shared_space(a: str, b: str, *, end: bool) -> int:
    """How many white-space characters `a` and `b` share at their end (or start)."""
    n = 0
    while n < min(len(a), len(b)):
        x, y = (a[-1 - n], b[-1 - n]) if end else (a[n], b[n])
        if x != y or not x.isspace():
            break
        n += 1
    return n


def _trimmed(segments: list[Segment]) -> list[Segment]:
    """White space a change keeps on both sides (e.g. the space after a replaced word) moved out
    of it, into the unchanged text around it."""
    out: list[Segment] = []

    def add(changed: bool, was: str, now: str) -> None:
        if not (was or now):
            return
        if out and not changed and not out[-1][0]:
            out[-1] = (False, out[-1][1] + was, out[-1][2] + now)
        else:
            out.append((changed, was, now))

    for changed, was, now in segments:
        if not changed:
            add(False, was, now)
            continue
        head = _shared_space(was, now, end=False)
        tail = _shared_space(was[head:], now[head:], end=True)
        add(False, now[:head], now[:head])
        add(True, was[head:len(was) - tail], now[head:len(now) - tail])
        add(False, now[len(now) - tail:], now[len(now) - tail:])
    return out


@lru_cache(maxsize=128)  # the panel is rendered many times a second while a turn streams
def diff_html(old: str, new: str, *, open_end: bool = False) -> str:
    """`new` with its insertions (`<ins>`) and deletions (`<del>`) against `old` marked."""
    parts = []
    for changed, was, now in diff_segments(old, new, open_end=open_end):
        if not changed:
            parts.append(html_text(now))
            continue
        if was:
            parts.append(f"<del>{html_text(was)}</del>")
        if now:
            parts.append(f"<ins>{html_text(now)}</ins>")
    return f'<div class="refine-diff">{"".join(parts)}</div>'


def _quoted(text: str) -> str:
    return f'«<span class="refine-quote">{html_text(text)}</span>»'


def edit_html(edit: dict[str, Any]) -> str:
    """One edit as a list item: what it does, struck out with its reason when it was dropped."""
    kind, span, text = edit.get("kind"), str(edit.get("span") or ""), str(edit.get("text") or "")
    if kind == "replace":
        what = f"replace {_quoted(span)} → {_quoted(text)}" if text.strip() else f"delete {_quoted(span)}"
    elif kind == "insert_after":
        what = f"insert after {_quoted(span)}: {_quoted(text)}"
    elif kind == "append":
        what = f"append {_quoted(text)}"
    else:
        what = f"{html_text(str(kind))} {_quoted(span)} → {_quoted(text)}"
    if edit.get("applied") is False:
        reason = html_text(str(edit.get("reason") or "not applied"))
        return f'<li class="refine-edit-dropped"><s>{what}</s> — <em>dropped: {reason}</em></li>'
    return f"<li>{what}</li>"


def edits_html(edits: list[dict[str, Any]]) -> str:
    """A round's edits as a list, in the order they were applied."""
    return f'<ul class="refine-edits">{"".join(edit_html(e) for e in edits)}</ul>'


def edits_summary(edits: list[dict[str, Any]]) -> str:
    """'2 applied, 1 dropped'."""
    dropped = sum(e.get("applied") is False for e in edits)
    return f"{len(edits) - dropped} applied" + (f", {dropped} dropped" if dropped else "")
