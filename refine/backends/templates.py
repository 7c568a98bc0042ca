"""Applying a chat template client-side (the `local` and `tgi` backends), with one fallback:
a template that refuses a system message (Gemma's raises "System role not supported") gets the
conversation with the system prompt folded into the first user message."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from refine.backends.base import BadRequest, Message, fold_system

T = TypeVar("T")


def has_system(messages: list[Message]) -> bool:
    """True when the conversation holds a system message."""
    return any(m.get("role") == "system" for m in messages)


def render_chat(render: Callable[[list[Message]], T], messages: list[Message], *, template_of: str) -> T:
    """`render(messages)`; when the template raises its own error (jinja2 `TemplateError`, what
    `raise_exception` in a template raises) and there is a system message,
    `render(fold_system(messages))`.

    Raises BadRequest, one sentence naming `template_of` (the model or tokenizer) and quoting the
    template's message, when the template refuses the conversation either way.
    """
    from jinja2 import TemplateError

    try:
        return render(messages)
    except TemplateError as exc:
        refused = exc
    folded = has_system(messages)
    if folded:
        try:
            return render(fold_system(messages))
        except TemplateError as exc:
            refused = exc
    also = ", also with the system prompt folded into the first user message" if folded else ""
    raise BadRequest(
        f"the chat template of {template_of} refuses this conversation{also}: {_template_message(refused)}"
    ) from refused


def _template_message(exc: Exception) -> str:
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    return text or type(exc).__name__
