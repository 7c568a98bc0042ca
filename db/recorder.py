"""Persist a refinement turn by feeding it the engine's events (shared by the CLI and the UI)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from db.store import chat_messages, record_round, record_turn
from refine.events import BaseDone, ErrorEvent, Event, RoundDone


class EventRecorder:
    """Stores one turn as its events arrive: the turn at BaseDone (or at a base-stage
    ErrorEvent, with the partial answer and the error), each round at its RoundDone.
    Other events are ignored. `turn_id` is set once the turn is stored."""

    def __init__(self, engine: Engine, *, backend: str, prompt: str | None = None,
                 messages: Sequence[dict[str, str]] | None = None, model: str = "",
                 conversation_id: int | None = None, adapter: str | None = None) -> None:
        self.engine = engine
        self.backend = backend
        self.chat = chat_messages(prompt, messages)  # refuse a bad prompt before any generation
        self.model = model
        self.conversation_id = conversation_id
        self.adapter = adapter
        self.turn_id: int | None = None

    def _turn(self, **fields: object) -> None:
        if self.turn_id is not None:
            raise RuntimeError("this recorder already stored its turn")
        self.turn_id = record_turn(self.engine, messages=self.chat, backend=self.backend,
                                   conversation_id=self.conversation_id, **fields)

    def feed(self, event: Event) -> None:
        """Store what `event` completes, if anything."""
        if isinstance(event, BaseDone):
            self._turn(answer=event.text, model=event.model, given=event.given, timing=event.timing,
                       finish_reason=event.finish_reason, thinking=event.thinking)
        elif isinstance(event, ErrorEvent) and event.stage == "base":
            self._turn(answer=event.partial, model=self.model, error=f"{event.kind}: {event.message}")
        elif isinstance(event, RoundDone):
            if self.turn_id is None:
                raise RuntimeError("RoundDone before the turn was stored (no BaseDone)")
            record_round(self.engine, self.turn_id, event, adapter=self.adapter)
