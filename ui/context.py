"""What the UI's event handlers work with: settings, the database engine, the two backends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy import Engine

from db.recorder import EventRecorder
from db.store import hash_voter
from refine.backends import cnr_adapter, cnr_few_shot, cnr_format
from refine.backends.base import Backend, Message
from refine.loop import MAX_ROUNDS, LoopConfig
from refine.revise import embedded_cnr, loop_config
from refine.selection import Selector
from refine.settings import Settings
from ui.exports import ExportStore
from ui.limits import Limits
from ui.model_limits import ContextWindows
from ui.safety import public_message
from ui.turns import ActiveTurns
from ui.waiting import WaitingLine

MAX_TOKENS = 32768
REGENERATE_TEMPERATURE = 0.7  # Regenerate samples the answer at this temperature when the setting is 0 (greedy)


FORMAT_NAMES = {"rewrite": "critique + rewritten answer", "edits": "critique + edits of the answer"}


@dataclass(frozen=True)
class Controls:
    """The per-turn settings a user picks in the UI."""

    rounds: int
    stop_early: bool
    temperature: float
    max_new_tokens: int
    cnr_max_new_tokens: int
    select: str = "none"
    answer_temperature: float | None = None  # the base answer's, when not `temperature` (Regenerate)

    def regenerated(self) -> Controls:
        """The controls of a regenerated answer: sampled, so that it can differ from the last
        one (greedy decoding would give the same answer again): the user's temperature when it
        is above 0, else REGENERATE_TEMPERATURE. The critique and revision keep `temperature`."""
        return replace(self, answer_temperature=self.temperature if self.temperature > 0 else REGENERATE_TEMPERATURE)

    def check(self, max_rounds: int = MAX_ROUNDS, max_tokens: int = MAX_TOKENS,
              cnr_max_tokens: int | None = None) -> str | None:
        """Why these controls are invalid (a client can send anything), or None. The limits are
        the app's (see AppContext.max_rounds / max_new_tokens), not just what the sliders allow."""
        if not isinstance(self.rounds, int) or not 1 <= self.rounds <= max_rounds:
            return f"Rounds must be between 1 and {max_rounds}."
        if not isinstance(self.temperature, int | float) or not 0.0 <= self.temperature <= 2.0:
            return "Temperature must be between 0 and 2."
        cnr_most = cnr_max_tokens or max_tokens
        for tokens, most in ((self.max_new_tokens, max_tokens), (self.cnr_max_new_tokens, cnr_most)):
            if not isinstance(tokens, int) or not 1 <= tokens <= most:
                return f"Max new tokens must be between 1 and {most}."
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
    limits: Limits = field(init=False)
    exports: ExportStore = field(init=False)
    contexts: ContextWindows = field(init=False)  # each model's context window, where known
    line: WaitingLine = field(init=False)  # turns generate `generation_limit` at once, the others wait in line
    votes_stored: int = 0  # votes this process stored (the statistics' cache sees them at once)

    def __post_init__(self) -> None:
        self.limits = Limits(self.settings)
        self.exports = ExportStore(ttl_s=60 * self.settings.export_ttl_minutes)
        self.line = WaitingLine(self.generation_limit, max_waiting=self.settings.queue_size)
        self.contexts = ContextWindows({"base": self.base, "cnr": self.cnr},
                                       {"base": self.settings.base_context, "cnr": self.settings.cnr_context})

    @property
    def max_rounds(self) -> int:
        """The most rounds a visitor may ask for."""
        return min(MAX_ROUNDS, self.settings.visitor_max_rounds)

    def max_new_tokens(self, role: str = "base") -> int:
        """The most new tokens a visitor may ask for: the visitor limit, within the model's
        context window where it is known (ui.model_limits: the setting, a local model's config,
        a TGI server's /info; other servers check their own)."""
        context = self.contexts.get(role)
        return min(MAX_TOKENS, self.settings.visitor_max_new_tokens, *([context] if context else []))

    def selector_for(self, controls: Controls) -> Selector | None:
        """The selector of one turn: the app's judge when the user picked 'judge'."""
        return self.selector if controls.select == "judge" else None

    @property
    def generation_limit(self) -> int:
        """Turns generated at once: 1 when a model runs in this process (it generates one
        at a time anyway; the others wait in `line`, which tells people their place), else
        what the remote servers are configured to take."""
        s = self.settings
        return 1 if "local" in (s.base_backend, s.cnr_backend) else s.concurrency

    @property
    def models_line(self) -> str:
        """Which models, adapter and CnR format are in use — and, on the embedded default, what
        to expect of a 135M-parameter model on a CPU."""
        mode = " (few-shot)" if cnr_few_shot(self.settings) else ""
        base, cnr = public_message(self.base.model_id), public_message(self.cnr.model_id)
        adapter = cnr_adapter(self.settings)
        fmt = cnr_format(self.settings)
        line = (f"**Base model:** `{base}` · **Critique-and-revise model:** `{cnr}`{mode}"
                + (f" · **Adapter:** `{Path(adapter).name}`" if adapter else "")
                + f" · **Format:** {FORMAT_NAMES[fmt]}")
        if embedded_cnr(self.settings):
            line += ("\n\n*This demo runs a 135M-parameter model on a CPU: a turn takes a while, and its "
                     "critiques are often wrong. A revision replaces the answer only when it passes the "
                     "acceptance checks; otherwise the answer is kept and the panel says why.*")
        return line

    def loop_config(self, controls: Controls) -> LoopConfig:
        """The loop settings of one turn: the defaults with the user's controls on top."""
        default = loop_config(self.settings)
        return replace(
            default, rounds=controls.rounds, stop_early=controls.stop_early,
            base_params=replace(default.base_params, max_new_tokens=controls.max_new_tokens,
                                temperature=controls.temperature if controls.answer_temperature is None
                                else controls.answer_temperature),
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
