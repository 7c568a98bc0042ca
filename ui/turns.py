"""A turn running in the background: engine events folded into a TurnView and written to the
database as they complete, while the UI reads coalesced snapshots and may stop it any time.

The run is a task of its own, so a Gradio handler that is cancelled (the user left, or pressed
Stop) never cuts a database write short: stopping cancels the generation, and the part in
progress is then recorded as cancelled with its partial text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from db.recorder import EventRecorder
from refine.events import BaseDelta, BaseDone, CritiqueDelta, ErrorEvent, Event, RevisionDelta, RoundDone
from ui.safety import public_message
from ui.view import TurnView

log = logging.getLogger(__name__)


def _stored(event: Event) -> bool:
    """Whether the recorder writes something for this event."""
    return isinstance(event, BaseDone | RoundDone) or (isinstance(event, ErrorEvent) and event.stage == "base")


class TurnRun:
    """Runs one turn's events (e.g. `refine_turn(...)`) into a TurnView and the recorder;
    `cnr_format` is the format version its rounds are generated in (recorded with a round that
    is cut off before the loop reports it)."""

    def __init__(self, events: AsyncIterator[Event], recorder: EventRecorder | None,
                 cnr_format: str | None = None) -> None:
        self.view = TurnView(cnr_format=cnr_format)
        self.show_changes = True  # how the page streaming the turn shows revisions (its Show changes toggle)
        self._recorder = recorder
        self._changed = asyncio.Event()
        self._urgent = asyncio.Event()  # a change worth showing at once (see _is_urgent)
        self._writes: asyncio.Queue[Event | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_all())
        self._task = asyncio.create_task(self._run(events))
        self._task.add_done_callback(self._ended)

    def _apply(self, event: Event) -> None:
        if isinstance(event, ErrorEvent) and event.kind != "cancelled":  # the page gets it without addresses
            log.warning("%s failed (%s): %s", "the answer" if event.stage == "base" else f"round {event.round}",
                        event.kind, event.message)
        if self._is_urgent(event):
            self._urgent.set()
        self.view.apply(event)
        if _stored(event):
            self._writes.put_nowait(event)
        self._changed.set()

    def _is_urgent(self, event: Event) -> bool:
        """Everything but more text for a part already showing text: a new part (answer,
        critique, revision) appears at once, its following tokens may be batched. An edit (the
        `edits` format) is a whole change, not more text: each shows at once."""
        view = self.view
        if isinstance(event, BaseDelta):
            return not view.base_text
        if isinstance(event, CritiqueDelta):
            return not (view.rounds and view.rounds[-1].critique)
        if isinstance(event, RevisionDelta):
            return not (view.rounds and view.rounds[-1].revision)
        return True  # EditApplied included

    async def _run(self, events: AsyncIterator[Event]) -> None:
        try:
            async for event in events:
                self._apply(event)
        except asyncio.CancelledError:
            self._interrupt("cancelled", "stopped by the user")
        except Exception as exc:  # a bug or an unexpected failure: end the turn, keep the app up
            log.exception("turn failed")
            self._interrupt("error", f"internal error ({type(exc).__name__})")
        finally:
            self._writes.put_nowait(None)

    def _interrupt(self, kind: Literal["cancelled", "error"], message: str) -> None:
        for event in self.view.interruption(kind, message):
            self._apply(event)

    def _ended(self, task: asyncio.Task) -> None:
        if task.cancelled():  # cancelled before it started, so _run never ran: close the turn here
            self._interrupt("cancelled", "stopped by the user")
            self._writes.put_nowait(None)

    async def _write_all(self) -> None:
        """Write events one after another (the turn before its rounds), off the event loop; the
        turn is finished once the last one is written."""
        while (event := await self._writes.get()) is not None:
            if self._recorder is None:
                continue
            try:
                await asyncio.to_thread(self._recorder.feed, event)
            except Exception as exc:
                log.warning("could not store a %s event: %s", event.type, exc)
                self.view.save_error = self.view.save_error or public_message(str(exc))
        self.view.turn_id = self._recorder.turn_id if self._recorder else None
        self.view.finished = True
        self._changed.set()

    async def snapshots(self, min_interval: Callable[[], float] = lambda: 0.0,
                        tick: float | None = None) -> AsyncIterator[TurnView]:
        """The view after each batch of changes, until the turn is finished and written. A
        slow reader gets fewer, bigger steps (nothing queues up behind it); more tokens for a
        part already on screen wait until `min_interval()` seconds after the previous step, so
        a fast stream costs the UI a bounded number of updates per second. With `tick`, the
        view also comes every `tick` seconds without a change (for a clock on the page)."""
        last = -math.inf
        while True:
            if tick is None:
                await self._changed.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), tick)
            pause = last + min_interval() - time.monotonic()
            if pause > 0 and self._changed.is_set() and not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._urgent.wait()
            self._changed.clear()
            self._urgent.clear()
            last = time.monotonic()
            yield self.view
            if self.view.finished:
                return

    def show(self, changes: bool) -> None:
        """Show revisions as their changes (or clean) from the next snapshot on, which comes at once."""
        self.show_changes = changes
        self._urgent.set()
        self._changed.set()

    async def stop(self) -> None:
        """Cancel the generation and wait until what it produced is written."""
        self._task.cancel()
        await asyncio.shield(self._writer)

    @property
    def done(self) -> bool:
        """Whether the turn ended and everything it produced was written."""
        return self._writer.done()


class ActiveTurns:
    """The running turn of each session (a session runs one turn at a time), the sessions whose
    turn waits in line, and the sessions that pressed Stop while their turn was still waiting."""

    MIN_INTERVAL_S = 0.04  # a turn's stream updates the page at most ~25 times a second...
    UPDATES_PER_S = 200.0  # ...and all turns together about this often (each update costs the server)

    def __init__(self) -> None:
        self._runs: dict[str, TurnRun] = {}
        self._waiting: set[str] = set()  # sessions whose turn waits in line (ui.waiting)
        self._stop_asked: set[str] = set()

    def begin(self, session: str, run: TurnRun) -> None:
        self._runs[session] = run

    def end(self, session: str, run: TurnRun) -> None:
        """Forget the session's turn `run` and any stop pressed around its end."""
        if self._runs.get(session) is run:
            del self._runs[session]
        self._stop_asked.discard(session)

    def running(self, session: str) -> bool:
        """Whether the session has a turn running or waiting in line."""
        return session in self._runs or session in self._waiting

    def waiting(self, session: str, waits: bool) -> None:
        """Mark the session's turn as waiting in line (or no longer)."""
        if waits:
            self._waiting.add(session)
        else:
            self._waiting.discard(session)

    def run(self, session: str) -> TurnRun | None:
        """The session's running turn, if any."""
        return self._runs.get(session)

    def interval(self) -> float:
        """Seconds between two stream updates of one turn, with this many turns running."""
        return max(self.MIN_INTERVAL_S, len(self._runs) / self.UPDATES_PER_S)

    def take_stop(self, session: str) -> bool:
        """True (once) when Stop was pressed before this session's turn started."""
        if session in self._stop_asked:
            self._stop_asked.discard(session)
            return True
        return False

    async def stop(self, session: str) -> TurnRun | None:
        """Stop the session's running turn and return it; with none running yet, remember the
        stop for the turn about to start."""
        run = self._runs.get(session)
        if run is None:
            self._stop_asked.add(session)
            return None
        await run.stop()
        return run
