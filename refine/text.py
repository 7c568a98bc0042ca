"""Small text helpers for streams."""

from __future__ import annotations


def marker_prefix_len(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`: the part of a
    stream to hold back because the next chunk may complete the marker."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class StopStringFilter:
    """Cuts a stream of deltas at the first stop string, never emitting any part of it."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, delta: str) -> str:
        """Add a delta; return the text now safe to emit (sets `stopped` at a stop string)."""
        self.text += delta
        hits = [self.text.find(s, max(0, self.emitted - len(s))) for s in self.stops]
        hits = [h for h in hits if h >= 0]
        if hits:
            self.stopped = True
            return self._take(min(hits))
        hold = max((marker_prefix_len(self.text, s) for s in self.stops), default=0)
        return self._take(len(self.text) - hold)

    def flush(self) -> str:
        """The held-back text at the end of a stream that never stopped."""
        return "" if self.stopped else self._take(len(self.text))

    def _take(self, end: int) -> str:
        piece = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece
