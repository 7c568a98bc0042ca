"""The line of turns waiting for the model: at most `slots` turns generate at once, the others
wait in the order they came and know their place, in plain words, while they wait (Gradio's own
queue only shows a "queue: 1/1" counter and none of the visitor's message).

The app's turn handler enters the line as soon as it starts (Gradio lets every turn's handler
start: the generation limit is this line's), shows the visitor's message and place, and starts
generating when it leaves the line with a slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ui.progress import about, clock


@dataclass(frozen=True)
class Place:
    """Where a waiting turn is: `ahead` turns wait before it, `running` turns are generating."""

    ahead: int
    running: int


class Ticket:
    """One turn's place in the line."""


class WaitingLine:
    """First come, first served: `slots` turns at once, at most `max_waiting` waiting."""

    RECENT = 10  # turns whose durations make the typical one

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots, self.max_waiting = slots, max_waiting
        self.running = 0
        self._waiting: deque[Ticket] = deque()
        self._changed = asyncio.Event()
        self._durations: deque[float] = deque(maxlen=self.RECENT)

    def join(self) -> Ticket | None:
        """A place at the end of the line; None when the line is full."""
        if len(self._waiting) >= self.max_waiting:
            return None
        ticket = Ticket()
        self._waiting.append(ticket)
        return ticket

    def place(self, ticket: Ticket) -> Place:
        return Place(ahead=self._waiting.index(ticket), running=self.running)

    def _take(self, ticket: Ticket) -> bool:
        """Give the ticket a slot if it is first in line and a slot is free."""
        if self._waiting and self._waiting[0] is ticket and self.running < self.slots:
            self._waiting.popleft()
            self.running += 1
            self._notify()
            return True
        return False

    async def wait(self, ticket: Ticket, tick: float = 1.0) -> AsyncIterator[Place]:
        """The ticket's place while it waits: at once, on each change and every `tick` seconds;
        ends once the ticket holds a slot (give it back with `release`). Leaving the loop early
        (a stop, a cancelled handler) takes the ticket out of the line only through `leave`."""
        while not self._take(ticket):
            yield self.place(ticket)
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), tick)
            except TimeoutError:
                pass

    def leave(self, ticket: Ticket) -> None:
        """Take a waiting ticket out of the line (a stop, or the visitor left)."""
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._notify()

    def release(self, duration: float | None = None) -> None:
        """Give a slot back; `duration`: how long that turn took (for `typical`)."""
        self.running -= 1
        if duration is not None:
            self._durations.append(duration)
        self._notify()

    def typical(self) -> float | None:
        """How long a turn took lately (the mean of the last RECENT), None before the first."""
        return sum(self._durations) / len(self._durations) if self._durations else None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st…"""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def waiting_text(place: Place, slots: int, typical: float | None, waited: float) -> str:
    """A waiting turn's place in plain words, with the wait to expect when turns took
    `typical` seconds lately (the turns ahead and the running ones, `slots` at once)."""
    answering = ("1 turn is being answered" if place.running == 1 else f"{place.running} turns are being answered")
    before = "" if place.ahead == 0 else (" and 1 more waits before yours" if place.ahead == 1
                                          else f" and {place.ahead} more wait before yours")
    text = (f"⏳ Your message is {ordinal(place.ahead + 1)} in line: {answering}{before}. "
            f"Waiting {clock(waited)}")
    if typical is not None:
        wait = (place.ahead + 1) * typical / max(1, slots)  # at most: the running turns are partly done
        text += f"; a turn takes {about(typical)} here lately, so yours starts within {about(wait)}"
    return text + "."
