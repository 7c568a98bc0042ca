"""The "select" step: whether a candidate revision beats the current answer.

`JudgeSelector` asks the pairwise judge (refine.judging) in both orders; a candidate wins only
when both orders prefer it (a flip, a tie or an unparseable verdict is no win). This is the
edit-then-select pattern: sample revisions, keep one only when a judge prefers it. A selector is
only as good as its judge: the embedded 135M model is no meaningful judge (it answers "A" in both
orders), so point the judge at a strong model served by any backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from refine.backends.base import Backend, GenerationParams, Message


class Selector(Protocol):
    """Decides whether a candidate revision is better than the current answer."""

    @property
    def name(self) -> str:
        """A label stored with the verdicts (e.g. `judge:openai:gpt-4o-mini`)."""
        ...

    async def prefer(self, conversation: list[Message], current: str, candidate: str) -> tuple[bool, list[dict[str, Any]]]:
        """(True when `candidate` is better, the verdict of each order). Raises BackendError."""
        ...


@dataclass
class JudgeSelector:
    """The pairwise judge as a selector; `backend` is any Backend (see refine.judging.JudgeSpec)."""

    backend: Backend
    max_new_tokens: int = 32
    few_shot: bool = False

    @property
    def name(self) -> str:
        return f"judge:{self.backend.model_id}"

    async def prefer(self, conversation: list[Message], current: str, candidate: str) -> tuple[bool, list[dict[str, Any]]]:
        from refine.judging.judge import Pair, judge_pair

        pair = Pair(id="", round=0, versus="previous", conversation=conversation, baseline=current, revision=candidate)
        params = GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        outcome, orders = await judge_pair(self.backend, pair, params, few_shot=self.few_shot)
        return outcome == "win", orders


def build_selector(settings: Any, pool: Any) -> Selector | None:
    """The selector `settings.select` asks for (None for "none"), its judge backend from `pool`
    (a refine.backends.BackendPool). The embedded judge gets the few-shot judge prompt."""
    if settings.select != "judge":
        return None
    backend = pool.backend(settings.judge_backend, settings.judge_model, url=settings.judge_url,
                           api_key=settings.judge_api_key)
    return JudgeSelector(backend, few_shot=settings.judge_backend == "local" and not settings.judge_model)
