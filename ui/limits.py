"""Per-visitor limits, so that one visitor cannot take the app: turns per minute, turns at once,
other requests per minute, and a lockout after wrong admin tokens.

A visitor is a client address (Gradio's session id is new on every page load or API client, so
it bounds nothing): the peer address, or behind `proxy_hops` trusted proxies the address they
put in X-Forwarded-For. Addresses are kept in memory only, as keyed hashes, and forgotten once
their window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from refine.settings import Settings

Clock = Callable[[], float]


def client_address(headers: Any, peer: str | None, hops: int) -> str:
    """The visitor's address: with `hops` trusted proxies in front, the entry they appended to
    X-Forwarded-For (`hops` from the right: entries further left are whatever the client sent);
    else the peer address."""
    if hops > 0:
        forwarded = [a.strip() for a in (headers.get("x-forwarded-for") or "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-hops] if len(forwarded) >= hops else forwarded[0]
    return peer or "unknown"


class SlidingWindow:
    """At most `limit` events per `window` seconds for each key (0 = no limit)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Clock = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def hit(self, key: str) -> float:
        """Count one event for `key` and return 0, or return the seconds until it would be
        allowed (then nothing is counted)."""
        if self.limit <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            self._sweep(now)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(0.001, hits[0] + self.window - now)
            hits.append(now)
            return 0.0

    def _sweep(self, now: float) -> None:
        """Forget keys with no event in the window (bounded memory), at most once a window."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.window
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]


class Slots:
    """At most `limit` things at once for each key (0 = no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> bool:
        with self._lock:
            if self.limit > 0 and self._held.get(key, 0) >= self.limit:
                return False
            self._held[key] = self._held.get(key, 0) + 1
            return True

    def release(self, key: str) -> None:
        with self._lock:
            left = self._held.get(key, 0) - 1
            if left > 0:
                self._held[key] = left
            else:
                self._held.pop(key, None)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class _Failures:
    count: int
    last: float


class AdminGate:
    """Checks admin tokens without delaying anyone: a constant-time comparison, and a visitor
    who entered `max_failures` wrong tokens is locked out for `lockout_s` (even with the right
    one). Nothing is shared between visitors, so guesses never slow the admin down."""

    def __init__(self, token: str | None, max_failures: int, lockout_s: float, clock: Clock = time.monotonic) -> None:
        self._expected = digest(token) if token else None
        self.max_failures, self.lockout_s, self.clock = max_failures, lockout_s, clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def locked_for(self, key: str) -> float:
        """Seconds this visitor stays locked out (0 = not locked)."""
        now = self.clock()
        with self._lock:
            failures = self._failures.get(key)
            if failures is None:
                return 0.0
            if now - failures.last >= self.lockout_s:  # forgotten after a quiet lockout period
                del self._failures[key]
                return 0.0
            return failures.last + self.lockout_s - now if failures.count >= self.max_failures else 0.0

    def check(self, key: str, token: str | None) -> Literal["ok", "wrong", "locked"]:
        """Whether `token` is the admin token, for visitor `key`; "locked" without looking."""
        if self.locked_for(key):
            return "locked"
        ok = self._expected is not None and hmac.compare_digest(digest(token or ""), self._expected)
        with self._lock:
            if ok:
                self._failures.pop(key, None)
                return "ok"
            failures = self._failures.setdefault(key, _Failures(0, 0.0))
            failures.count, failures.last = failures.count + 1, self.clock()
            self._sweep()
            return "locked" if failures.count >= self.max_failures else "wrong"

    def failures_left(self, key: str) -> int:
        with self._lock:
            failures = self._failures.get(key)
            return self.max_failures - (failures.count if failures else 0)

    def _sweep(self) -> None:
        if len(self._failures) > 10_000:
            now = self.clock()
            for key in [k for k, f in self._failures.items() if now - f.last >= self.lockout_s]:
                del self._failures[key]


def wait_text(seconds: float) -> str:
    if seconds >= 90:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds)} s"


class Limits:
    """The limits of one app (see Settings: visitor_*, admin_*, proxy_hops)."""

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        hops = settings.proxy_hops
        if hops is None:
            from refine.space_backup import on_space

            hops = 1 if on_space() else 0
        self.hops = hops
        self._salt = secrets.token_bytes(16)  # addresses are kept as keyed hashes, per process
        self.turns = SlidingWindow(settings.visitor_turns_per_minute, clock=clock)
        self.requests = SlidingWindow(settings.visitor_requests_per_minute, clock=clock)
        self.running = Slots(settings.visitor_concurrent_turns)
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin = AdminGate(token, settings.admin_max_failures, 60 * settings.admin_lockout_minutes, clock=clock)

    def visitor(self, request: Any) -> str:
        """The visitor key of a gr.Request (or anything with `headers` and `client.host`)."""
        client = getattr(request, "client", None)
        peer = getattr(client, "host", None) if client is not None else None
        headers = getattr(request, "headers", None) or {}
        address = client_address(headers, peer, self.hops)
        return hashlib.blake2b(address.encode(), key=self._salt, digest_size=12).hexdigest()

    def request_refused(self, request: Any) -> str | None:
        """Count one cheap request of this visitor; the message to show when over the limit."""
        wait = self.requests.hit(self.visitor(request))
        if not wait:
            return None
        n = self.settings.visitor_requests_per_minute
        return f"⏳ Too many requests from your address (at most {n} a minute); try again in {wait_text(wait)}."

    def turn_refused(self, visitor: str) -> str | None:
        """Count one turn of this visitor; the message to show when over the limit."""
        wait = self.turns.hit(visitor)
        if not wait:
            return None
        n = self.settings.visitor_turns_per_minute
        return (f"⏳ You started {n} turns in the last minute, the most one visitor may; "
                f"try again in {wait_text(wait)}.")

    def concurrent_text(self) -> str:
        n = self.settings.visitor_concurrent_turns
        return (f"⏳ Another turn from your address is still running (at most {n} at once); "
                "wait for it to finish, or stop it, then send again.")
