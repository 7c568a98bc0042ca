"""A request the client gives up on is closed, so the server can stop working on it, and a read
timeout is not retried (the server may still be working on the prompt: sending it again made a
heavy prompt cost its server twice). Only failures where no work can be under way are retried:
no connection, 429, 503.

The stand-in here is a raw socket server that takes the request and then says nothing (a long
prefill), recording when it sees the client close the connection."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from refine.backends.base import BackendTimeout, BackendUnavailable, GenerationParams
from refine.backends.openai_compat import OpenAICompatBackend
from refine.backends.retry import RetryingBackend
from tests.standin_servers import drain, json_reply, openai_chunks, refused_url, sse_reply

MESSAGES = [{"role": "user", "content": "a very long prompt " * 50}]
PARAMS = GenerationParams(max_new_tokens=8)


@dataclass
class Silent:
    """Takes requests, optionally sends the response headers of an event stream, then sends
    nothing; `closed` holds, per request, the seconds until the client closed (None: never)."""

    headers_first: bool
    hold: float = 5.0
    arrived: list[float] = field(default_factory=list)
    closed: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            while len(body) < length:
                body += conn.recv(65536)
            start = time.monotonic()
            with self._lock:
                self.arrived.append(start)
                index = len(self.closed)
                self.closed.append(None)
            if self.headers_first:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
            conn.settimeout(self.hold)
            try:
                if conn.recv(1) == b"":  # the client closed: a server would stop generating now
                    self.closed[index] = time.monotonic() - start
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()


@pytest.fixture(params=[True, False], ids=["headers-then-silence", "silence-before-headers"])
def silent(request: pytest.FixtureRequest) -> Iterator[Silent]:
    server = Silent(headers_first=request.param)
    yield server
    server.close()


async def test_a_read_timeout_closes_the_request_and_is_not_retried(silent: Silent) -> None:
    backend = RetryingBackend(OpenAICompatBackend(silent.url, model="m", timeout=0.5, connect_timeout=2),
                              retries=2, base_delay=0.01, max_delay=0.05)
    started = time.monotonic()
    result = await drain(backend.stream(MESSAGES, PARAMS))
    waited = time.monotonic() - started
    await backend.aclose()
    assert type(result.error) is BackendTimeout and not result.deltas
    assert len(silent.arrived) == 1  # the heavy prompt was sent once
    await asyncio.sleep(0.2)  # the server thread notices the close
    closed = silent.closed[0]
    assert closed is not None and closed < 1.5, silent.closed  # closed at the timeout, not left open
    assert waited < 2.0


async def test_a_consumer_that_stops_closes_the_request(silent: Silent) -> None:
    """The user pressed Stop while the server was still on the prompt."""
    backend = OpenAICompatBackend(silent.url, model="m", timeout=30, connect_timeout=2)
    task = asyncio.create_task(drain(backend.stream(MESSAGES, PARAMS)))
    for _ in range(100):
        if silent.arrived:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await backend.aclose()
    await asyncio.sleep(0.2)
    assert silent.closed[0] is not None and silent.closed[0] < 1.5


async def test_only_connect_failures_429_and_503_are_retried() -> None:
    from tests.standin_servers import StandinServer

    path = "/v1/chat/completions"
    with StandinServer() as server:
        ok = sse_reply(openai_chunks(["fine"]))
        server.on("POST", path, json_reply({"error": {"message": "busy"}}, 429),
                  json_reply({"error": {"message": "loading"}}, 503), ok)
        backend = RetryingBackend(OpenAICompatBackend(server.url, model="m"), retries=3, base_delay=0.01,
                                  max_delay=0.02)
        assert (await drain(backend.stream(MESSAGES, PARAMS))).text == "fine"
        assert len(server.requests_to(path)) == 3

        server.requests.clear()
        server.on("POST", path, json_reply({"error": {"message": "internal error"}}, 500), ok)
        result = await drain(backend.stream(MESSAGES, PARAMS))
        assert type(result.error) is BackendUnavailable and len(server.requests_to(path)) == 1
        await backend.aclose()

    backend = RetryingBackend(OpenAICompatBackend(refused_url(), model="m"), retries=2, base_delay=0.01,
                              max_delay=0.02)
    result = await drain(backend.stream(MESSAGES, PARAMS))
    assert type(result.error) is BackendUnavailable and "gave up after 3 attempts" in result.error.message
