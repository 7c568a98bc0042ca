"""Per-browser-session state kept by Gradio (gr.State): the chat so far and the blind vote on
the last turn. Immutable values; every change makes a new one."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from itertools import combinations

from refine.backends.base import Message
from refine.cnr_format import normalize
from ui.view import TurnView


@dataclass(frozen=True)
class Exchange:
    """One finished turn: the prompt, what the chat shows, and what later turns see as the
    answer (the final revision; None when the base answer failed, so later turns skip it);
    for the last turn, `view`: the turn as the refinement panel shows it (to render it again,
    e.g. when Show changes is switched)."""

    prompt: str
    shown: str
    answer: str | None
    view: TurnView | None = field(default=None, compare=False, repr=False)
    chosen: int | None = None  # the version later turns continue from (0 = the original answer), once picked


@dataclass(frozen=True)
class ChatSession:
    """A conversation: its database id (once its first turn is stored) and its exchanges."""

    conversation_id: int | None = None
    exchanges: tuple[Exchange, ...] = ()

    def conversation(self, prompt: str) -> list[Message]:
        """The messages the models see for a new prompt."""
        messages: list[Message] = []
        for ex in self.exchanges:
            if ex.answer is not None:
                messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.answer}]
        return [*messages, {"role": "user", "content": prompt}]

    def after(self, prompt: str, view: TurnView, conversation_id: int | None,
              failure: str | None = None) -> ChatSession:
        """The session once a turn on `prompt` ended as `view` shows; `failure` is what the chat
        shows for an answer that failed before any text (why it failed)."""
        ok = view.base_done and view.error is None
        answer = (view.final if view.final is not None else view.last_good()) if ok else None
        shown = answer if answer is not None else (view.base_text or failure or "")
        exchange = Exchange(prompt=prompt, shown=shown, answer=answer, view=view)
        earlier = tuple(replace(ex, view=None) if ex.view is not None else ex for ex in self.exchanges)
        return ChatSession(conversation_id=conversation_id, exchanges=(*earlier, exchange))

    def continue_from(self, index: int) -> ChatSession:
        """The session continuing from version `index` of the last turn's answer (0 = the
        original, k = accepted revision k): the chat shows it and later turns see it. Unchanged
        when the last turn has no such version."""
        last = self.exchanges[-1] if self.exchanges else None
        versions = last.view.versions() if last is not None and last.view is not None else {}
        if last is None or last.answer is None or index not in versions:
            return self
        chosen = replace(last, shown=versions[index], answer=versions[index], chosen=index)
        return replace(self, exchanges=(*self.exchanges[:-1], chosen))

    @property
    def last_view(self) -> TurnView | None:
        """The last finished turn, as the refinement panel shows it (None before the first)."""
        return self.exchanges[-1].view if self.exchanges else None

    def without_last(self) -> tuple[ChatSession, str | None]:
        """The session without its last exchange, and that exchange's prompt (for regenerate)."""
        if not self.exchanges:
            return self, None
        return replace(self, exchanges=self.exchanges[:-1]), self.exchanges[-1].prompt


Pair = tuple[int, int]  # two version indices, low first (0 = the original answer, k = revision k)


@dataclass(frozen=True)
class VoteState:
    """The comparable versions of the last turn, the comparison on screen (`left`/`right` =
    which version is on which side) and the votes this session cast, by pair."""

    turn_id: int | None = None
    versions: dict[int, str] = field(default_factory=dict)
    left: int | None = None
    right: int | None = None
    votes: dict[Pair, str] = field(default_factory=dict)

    @property
    def pair(self) -> Pair | None:
        if self.left is None or self.right is None:
            return None
        return (min(self.left, self.right), max(self.left, self.right))

    @property
    def voted(self) -> str | None:
        """The choice cast on the comparison on screen, if any."""
        return self.votes.get(self.pair) if self.pair else None


def comparable_pairs(versions: dict[int, str]) -> list[Pair]:
    """Pairs of versions whose texts differ (comparing identical texts says nothing), the
    original-vs-latest pair first."""
    pairs = [(a, b) for a, b in combinations(sorted(versions), 2) if normalize(versions[a]) != normalize(versions[b])]
    return sorted(pairs, key=lambda p: (p[0], -p[1]))


def for_turn(turn_id: int | None, view: TurnView) -> VoteState:
    """The vote state of a finished turn (empty when the turn was not stored)."""
    return VoteState(turn_id=turn_id, versions=view.versions()) if turn_id is not None else VoteState()


def show(state: VoteState, pair: Pair, rng: random.Random | None = None) -> VoteState:
    """Put `pair` on screen, each version on a random side."""
    a, b = pair
    if (rng or random).random() < 0.5:
        a, b = b, a
    return replace(state, left=a, right=b)


def with_vote(state: VoteState, choice: str) -> VoteState:
    """The state after voting `choice` on the comparison on screen."""
    assert state.pair is not None
    return replace(state, votes={**state.votes, state.pair: choice})


def vote_key(voter: str, turn_id: int, pair: Pair) -> str:
    """The idempotency key of one voter's vote on one comparison (one vote per comparison)."""
    return f"v1:{voter[:40]}:{turn_id}:{pair[0]}-{pair[1]}"
