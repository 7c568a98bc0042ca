"""Keeping a model's reasoning apart from its answer, as text streams in.

Reasoning models write their thoughts in a `<think>…</think>` block before the answer (Qwen3,
DeepSeek-R1 and their distillations), or a server sends them apart (`reasoning_content`), which
the backends pass on inside the same tags (see refine.backends.base.THINK_OPEN). Either way the
reasoning is never part of the answer: it is not shown as the answer, not stored as it, not
handed to the CnR model to revise and not parsed for CnR markers.
"""

from __future__ import annotations

from typing import Literal

from refine.backends.base import THINK_CLOSE, THINK_OPEN
from refine.text import marker_prefix_len

Part = Literal["thinking", "answer"]


class ThinkingSplitter:
    """Splits a stream into reasoning (a leading `<think>` block) and answer text.

    `feed(chunk)` returns the new (part, text) pieces; a tag split across chunks is held back
    until the next chunk decides. Only a block at the start of the text (after white space) is
    reasoning: a `<think>` later in an answer is answer text (e.g. an answer about the tags).
    """

    def __init__(self) -> None:
        self.state: Literal["start", "thinking", "answer"] = "start"
        self._pending = ""
        self.thinking_parts: list[str] = []
        self.answer_parts: list[str] = []

    @property
    def thinking(self) -> str:
        """The reasoning so far, stripped."""
        return "".join(self.thinking_parts).strip()

    @property
    def answer(self) -> str:
        """The answer so far, without the reasoning block or the white space after it."""
        return "".join(self.answer_parts)

    @property
    def unfinished_thinking(self) -> bool:
        """True while a reasoning block is open (at the end of a stream: it was never closed)."""
        return self.state == "thinking"

    def feed(self, chunk: str) -> list[tuple[Part, str]]:
        """Consume a chunk; return the (part, text) pieces it completes."""
        self._pending += chunk
        out: list[tuple[Part, str]] = []
        while self._pending:
            if self.state == "start":
                stripped = self._pending.lstrip()
                if stripped.startswith(THINK_OPEN):
                    self._pending = stripped[len(THINK_OPEN):]
                    self.state = "thinking"
                    continue
                if not stripped or THINK_OPEN.startswith(stripped):
                    break  # still undecided
                self.state = "answer"
                continue
            if self.state == "thinking":
                index = self._pending.find(THINK_CLOSE)
                if index >= 0:
                    self._emit(out, "thinking", self._pending[:index])
                    self._pending = self._pending[index + len(THINK_CLOSE):].lstrip()
                    self.state = "answer"
                    continue
                keep = marker_prefix_len(self._pending, THINK_CLOSE)
                self._emit(out, "thinking", self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep:]
                break
            self._emit(out, "answer", self._pending)
            self._pending = ""
        return out

    def finish(self) -> list[tuple[Part, str]]:
        """Flush what was held back at the end of the stream."""
        out: list[tuple[Part, str]] = []
        if self._pending:
            part: Part = "thinking" if self.state == "thinking" else "answer"
            if part == "answer" and self.state == "start":
                self._pending = self._pending.strip()
            self._emit(out, part, self._pending)
            self._pending = ""
        return out

    def _emit(self, out: list[tuple[Part, str]], part: Part, text: str) -> None:
        if text:
            (self.thinking_parts if part == "thinking" else self.answer_parts).append(text)
            out.append((part, text))


def split_thinking(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a complete text."""
    splitter = ThinkingSplitter()
    splitter.feed(text)
    splitter.finish()
    return splitter.thinking, splitter.answer
