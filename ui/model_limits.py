"""How many tokens each model takes at once (its context window), to cap the token sliders: the
operator's setting (REFINE_BASE_CONTEXT / REFINE_CNR_CONTEXT), else a local model's config
(`max_position_embeddings`), else a TGI server's `/info` (`max_total_tokens`, asked once the
app serves); unknown otherwise (an OpenAI-compatible server checks its own), and the settings'
caps apply alone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

RETRY_S = 60.0  # a server that did not answer /info is asked again after this long (at the next page load)
INFO_TIMEOUT_S = 5.0


def _layers(backend: object) -> Iterator[object]:
    """The backend and the ones it wraps (e.g. RetryingBackend's `inner`)."""
    for _ in range(4):
        yield backend
        backend = getattr(backend, "inner", None)
        if backend is None:
            return


def local_context(backend: object) -> int | None:
    """A local model's context window (its config's max_position_embeddings), else None."""
    for layer in _layers(backend):
        context = getattr(getattr(layer, "local", None), "max_context", None)
        if isinstance(context, int) and context > 0:
            return context
    return None


async def server_context(backend: object, timeout: float = INFO_TIMEOUT_S) -> int | None:
    """The context window a TGI server reports in `/info` (`max_total_tokens`: prompt and new
    tokens together), else None (another kind of server, or no answer in `timeout` seconds)."""
    for layer in _layers(backend):
        info = getattr(layer, "info", None)
        if not callable(info):
            continue
        try:
            data: Any = await asyncio.wait_for(info(), timeout)
        except Exception as exc:  # noqa: BLE001 - unreachable, slow or odd: the settings' cap applies
            log.warning("could not read the model server's token limits (%s); the settings' cap applies", exc)
            return None
        total = data.get("max_total_tokens") if isinstance(data, dict) else None
        return total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None
    return None


class ContextWindows:
    """The context window of each role's model ('base', 'cnr'), as far as it is known."""

    def __init__(self, backends: Mapping[str, object], settings: Mapping[str, int | None]) -> None:
        """`settings`: the operator's context window per role (None = find it out)."""
        self._backends = dict(backends)
        self._known: dict[str, int | None] = {
            role: settings.get(role) or local_context(backend) for role, backend in backends.items()}
        self._next_ask: dict[str, float] = {}
        self._lock = asyncio.Lock()

    def get(self, role: str) -> int | None:
        return self._known.get(role)

    async def refresh(self) -> None:
        """Ask the servers whose context window is unknown (each at most every RETRY_S seconds)."""
        async with self._lock:
            for role, backend in self._backends.items():
                if self._known[role] is not None or time.monotonic() < self._next_ask.get(role, 0.0):
                    continue
                self._next_ask[role] = time.monotonic() + RETRY_S
                self._known[role] = await server_context(backend)
