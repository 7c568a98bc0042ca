"""What the UI's event handlers work with: settings, the database engine, the two backends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import Engine

from db.recorder import EventRecorder
from db.store import hash_voter
from refine.backends import cnr_adapter, cnr_few_shot
from refine.backends.base import Backend, Message
from refine.loop import MAX_ROUNDS, LoopConfig
from refine.revise import loop_config
from refine.selection import Selector
from refine.settings import Settings
from ui.turns import ActiveTurns

MAX_TOKENS = 32768


@dataclass(frozen=True)
class Controls:
    """The per-turn settings a user picks in the UI."""

    rounds: int
    stop_early: bool
    temperature: float
    max_new_tokens: int
    cnr_max_new_tokens: int
    select: str = "none"

    def check(self) -> str | None:
        """Why these controls are invalid (a client can send anything), or None."""
        if not isinstance(self.rounds, int) or not 1 <= self.rounds <= MAX_ROUNDS:
            return f"Rounds must be between 1 and {MAX_ROUNDS}."
        if not 0.0 <= self.temperature <= 2.0:
            return "Temperature must be between 0 and 2."
        for tokens in (self.max_new_tokens, self.cnr_max_new_tokens):
            if not isinstance(tokens, int) or not 1 <= tokens <= MAX_TOKENS:
                return f"Max new tokens must be between 1 and {MAX_TOKENS}."
        if self.select not in ("none", "judge"):
            return "Select must be 'none' or 'judge'."
        return None


@dataclass
class AppContext:
    """Everything the handlers share; one per running app."""

    settings: Settings
    engine: Engine
    base: Backend
    cnr: Backend
    banner: str | None = None
    turns: ActiveTurns = field(default_factory=ActiveTurns)
    selector: Selector | None = None  # the judge a user may ask to select revisions

    def selector_for(self, controls: Controls) -> Selector | None:
        """The selector of one turn: the app's judge when the user picked 'judge'."""
        return self.selector if controls.select == "judge" else None

    @property
    def generation_limit(self) -> int:
        """Turns generated at once: 1 when a model runs in this process (it generates one
        at a time anyway, and the queue then shows people their place), else what the
        remote servers are configured to take."""
        s = self.settings
        return 1 if "local" in (s.base_backend, s.cnr_backend) else s.concurrency

    @property
    def models_line(self) -> str:
        mode = " (few-shot)" if cnr_few_shot(self.settings) else ""
        return f"**Base model:** `{self.base.model_id}` · **Critique-and-revise model:** `{self.cnr.model_id}`{mode}"

    def loop_config(self, controls: Controls) -> LoopConfig:
        """The loop settings of one turn: the defaults with the user's controls on top."""
        default = loop_config(self.settings)
        return replace(
            default, rounds=controls.rounds, stop_early=controls.stop_early,
            base_params=replace(default.base_params, max_new_tokens=controls.max_new_tokens,
                                temperature=controls.temperature),
            cnr_params=replace(default.cnr_params, max_new_tokens=controls.cnr_max_new_tokens,
                               temperature=controls.temperature),
        )

    def recorder(self, conversation: list[Message], conversation_id: int | None) -> EventRecorder:
        """A recorder for one turn (refuses an unstorable prompt with InvalidInput)."""
        return EventRecorder(self.engine, backend=self.settings.base_backend, messages=conversation,
                             model=self.base.model_id, conversation_id=conversation_id,
                             adapter=cnr_adapter(self.settings))

    def voter(self, session_hash: str) -> str:
        """The pseudonym stored with a session's votes and feedback."""
        salt = self.settings.voter_salt.get_secret_value() if self.settings.voter_salt else ""
        return hash_voter(session_hash, salt)
