"""Stand-in model servers for tests: real HTTP over a real socket on 127.0.0.1 (port 0), run in a
thread, answering with scripted replies that reproduce what TGI and OpenAI-compatible servers
send (see tests/data/specs: field names, `data: …\\n\\n` framing, keep-alive comments, TGI's last
event with `generated_text` + `details` and no [DONE], OpenAI chunks ending with `data: [DONE]`).

    with tgi_server() as server:
        server.on("POST", "/generate_stream", sse_reply(tgi_events(["Hel", "lo"])))
        ... TGIBackend(server.url) ...
        server.requests_to("/generate_stream")[0].json

`drain(backend.stream(...))` reads a stream and checks the backend contract on the way (text
deltas, then exactly one Finish last; none after an error).

Replies queue per route; the last one repeats. A streamed reply is a list of steps: bytes or
str written as one chunk of a chunked body, `Pause(seconds)`, or `Cut()` (drop the connection
without finishing the body). `check_openapi(instance, "StreamResponse")` validates a payload
against the TGI OpenAPI spec so the stand-ins cannot drift from it.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from refine.backends.base import BackendError, Finish, StreamItem

SPECS = Path(__file__).resolve().parent / "data" / "specs"  # copies of the reference specs (see its README)
TGI_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TGI_INFO: dict[str, Any] = {  # what TGI 3.x answers on /info (fields of the spec's `Info`)
    "model_id": TGI_MODEL,
    "model_sha": "12fd25f77366fa6b3b4b768ec3050bf629380bac",
    "model_pipeline_tag": "text-generation",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 8191,
    "max_total_tokens": 8192,
    "validation_workers": 2,
    "max_client_batch_size": 4,
    "router": "text-generation-router",
    "version": "3.3.6-dev0",
    "sha": "db931fcf42da018a3657580c64bf2720f167f9ab",
    "docker_label": "sha-db931fc",
}


@dataclass(frozen=True)
class Pause:
    """Wait this many seconds before the next step (cut short when the server stops)."""

    seconds: float


@dataclass(frozen=True)
class Cut:
    """Close the connection abruptly, mid-body."""


Step = bytes | str | Pause | Cut


@dataclass
class Reply:
    """One scripted answer: a fixed body (sent with Content-Length) or streamed steps (chunked)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    steps: list[Step] | None = None


@dataclass
class Recorded:
    """A request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def json_reply(obj: Any, status: int = 200) -> Reply:
    """A JSON answer, e.g. an error body."""
    return Reply(status, {"Content-Type": "application/json"}, json.dumps(obj).encode())


def text_reply(text: str, status: int, content_type: str = "text/html") -> Reply:
    """A non-JSON answer, e.g. a proxy's HTML error page."""
    return Reply(status, {"Content-Type": content_type}, text.encode())


def sse_reply(events: Iterable[dict[str, Any] | Step], status: int = 200) -> Reply:
    """A `text/event-stream` answer; each dict becomes one `data: {json}\\n\\n` event, other steps
    (raw text such as "data: [DONE]\\n\\n" or ":\\n\\n", Pause, Cut) pass through as they are."""
    steps: list[Step] = [sse_event(e) if isinstance(e, dict) else e for e in events]
    return Reply(status, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, steps=steps)


def sse_event(payload: dict[str, Any]) -> str:
    """One SSE data event, framed as TGI (axum) and vLLM send it."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


KEEP_ALIVE = ":\n\n"  # axum's default keep-alive comment, as TGI sends it


def tgi_events(
    tokens: list[str],
    *,
    eos: str | None = "<|im_end|>",
    input_length: int = 30,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """TGI's `/generate_stream` events for these token texts: one per token, the last carrying
    `generated_text` and `details`. With `eos`, a last special token ends the answer
    (finish_reason eos_token); without, the answer stops at the length limit."""
    pieces = [(t, False) for t in tokens] + ([(eos, True)] if eos else [])
    events = []
    for index, (text, special) in enumerate(pieces, start=1):
        last = index == len(pieces)
        events.append(
            {
                "index": index,
                "token": {"id": 1000 + index, "text": text, "logprob": -0.25, "special": special},
                "generated_text": "".join(tokens) if last else None,
                "details": {
                    "finish_reason": "eos_token" if eos else "length",
                    "generated_tokens": len(pieces),
                    "seed": seed,
                    "input_length": input_length,
                }
                if last
                else None,
            }
        )
    return events


def tgi_error(message: str, error_type: str) -> dict[str, str]:
    """TGI's error body / error event (`ErrorResponse`)."""
    return {"error": message, "error_type": error_type}


def openai_chunks(
    pieces: list[str], *, model: str = "meta-llama/Llama-3.1-8B-Instruct", finish_reason: str | None = "stop"
) -> list[dict[str, Any] | str]:
    """A chat-completions stream as TGI's Messages API records it (see
    specs/tgi-snapshots/test_chat_hfhub_usage.json): one chunk per token, a last chunk with the
    finish reason, then `data: [DONE]`."""
    contents = [*pieces, ""]
    chunks: list[dict[str, Any] | str] = []
    for i, content in enumerate(contents):
        chunks.append(
            {
                "choices": [
                    {
                        "delta": {"content": content, "role": "assistant", "tool_calls": None},
                        "finish_reason": finish_reason if i == len(contents) - 1 else None,
                        "index": 0,
                        "logprobs": None,
                    }
                ],
                "created": 1741266005,
                "id": "",
                "model": model,
                "object": "chat.completion.chunk",
                "system_fingerprint": "3.1.2-dev0-native",
                "usage": None,
            }
        )
    return [*chunks, "data: [DONE]\n\n"]


@dataclass
class Drained:
    """What one stream gave: its text deltas, its Finish, or the error it raised."""

    deltas: list[str]
    finish: Finish | None
    error: BackendError | None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


async def drain(stream: AsyncIterator[StreamItem]) -> Drained:
    """Read a backend stream to its end, checking the contract on the way: text deltas, then
    exactly one Finish as the last item when it ends normally, and none when it fails."""
    deltas: list[str] = []
    finish: Finish | None = None
    try:
        async with aclosing(stream) as items:
            async for item in items:
                assert finish is None, f"{item!r} came after the Finish {finish!r}"
                if isinstance(item, Finish):
                    finish = item
                else:
                    assert isinstance(item, str), f"{item!r} is neither text nor a Finish"
                    deltas.append(item)
    except BackendError as err:
        assert finish is None, "a stream that failed also sent a Finish"
        return Drained(deltas, None, err)
    assert finish is not None, "the stream ended without a Finish"
    return Drained(deltas, finish, None)


class StandinServer:
    """A scripted HTTP/1.1 server on 127.0.0.1, in a background thread."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._routes: dict[tuple[str, str], list[Reply]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def on(self, method: str, path: str, *replies: Reply) -> StandinServer:
        """Answer `method path` with these replies in turn; the last one repeats."""
        with self._lock:
            self._routes[(method.upper(), path)] = list(replies)
        return self

    def requests_to(self, path: str) -> list[Recorded]:
        """The requests received for `path`, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def start(self) -> StandinServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def next_reply(self, request: Recorded) -> Reply:
        """The reply to a request (records it first); override to script replies per request."""
        with self._lock:
            self.requests.append(request)
            queue = self._routes.get((request.method, request.path.split("?")[0]))
            if not queue:
                return json_reply({"error": f"no route {request.method} {request.path}"}, 404)
            return queue.pop(0) if len(queue) > 1 else queue[0]


class _QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default backlog of 5 makes concurrent clients wait for SYN retries

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # clients hanging up are expected here
            super().handle_error(request, client_address)


def _handler_for(server: StandinServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server.next_reply(Recorded(self.command, self.path, headers, body))
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True

        do_GET = do_POST = _serve

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.steps is None:
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for step in reply.steps:
                if isinstance(step, Pause):
                    if server._stopping.wait(step.seconds):
                        raise ConnectionResetError("stand-in stopping")
                elif isinstance(step, Cut):
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    raise ConnectionResetError("cut by the script")
                else:
                    data = step.encode() if isinstance(step, str) else step
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def tgi_server(**info: Any) -> StandinServer:
    """A stand-in TGI with `/info` (TGI_INFO updated by `info`) and a healthy `/health`;
    script `/generate_stream` with `.on(...)`."""
    server = StandinServer()
    server.on("GET", "/info", json_reply({**TGI_INFO, **info}))
    server.on("GET", "/health", Reply(200))
    return server


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- OpenAPI (3.0) subset validation, so stand-in payloads are checked against the TGI spec ----

_spec_cache: dict[str, Any] = {}


def openapi_schemas() -> dict[str, Any]:
    """The `components.schemas` of specs/tgi-openapi.json."""
    if not _spec_cache:
        _spec_cache.update(json.loads((SPECS / "tgi-openapi.json").read_text())["components"]["schemas"])
    return _spec_cache


def check_openapi(
    instance: Any, schema: str | dict[str, Any], *, strict: bool = True, where: str = "$"
) -> None:
    """Raise AssertionError where `instance` breaks the named schema. Understands the keywords the
    TGI spec uses ($ref, allOf, oneOf, type, nullable, required, properties, items, enum, minimum,
    maximum, maxItems). `strict` also refuses properties the schema does not declare."""
    spec = openapi_schemas()[schema] if isinstance(schema, str) else schema
    if "$ref" in spec:
        return check_openapi(instance, spec["$ref"].rsplit("/", 1)[-1], strict=strict, where=where)
    if instance is None:
        typed = spec.get("type") or spec.get("allOf") or spec.get("oneOf")
        assert spec.get("nullable") or not typed, f"{where}: null is not allowed"
        return None
    for sub in spec.get("allOf", []):
        check_openapi(instance, sub, strict=False, where=where)
    if "oneOf" in spec:
        matches = 0
        for sub in spec["oneOf"]:
            try:
                check_openapi(instance, sub, strict=False, where=where)
                matches += 1
            except AssertionError:
                pass
        assert matches == 1, f"{where}: matches {matches} of oneOf, not exactly 1"
    kind = spec.get("type")
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    if kind:
        ok = isinstance(instance, types[kind]) and not (
            kind in ("integer", "number") and isinstance(instance, bool)
        )
        assert ok, f"{where}: {instance!r} is not {kind}"
    if "enum" in spec:
        assert instance in spec["enum"], f"{where}: {instance!r} not in {spec['enum']}"
    if "minimum" in spec and isinstance(instance, (int, float)):
        assert instance >= spec["minimum"], f"{where}: {instance} < {spec['minimum']}"
    if "maximum" in spec and isinstance(instance, (int, float)):
        assert instance <= spec["maximum"], f"{where}: {instance} > {spec['maximum']}"
    if kind == "array":
        assert len(instance) <= spec.get("maxItems", len(instance)), f"{where}: too many items"
        for i, item in enumerate(instance):
            check_openapi(item, spec.get("items", {}), strict=strict, where=f"{where}[{i}]")
    if kind == "object" or "properties" in spec or "allOf" in spec:
        for name in spec.get("required", []):
            assert name in instance, f"{where}: missing required {name!r}"
        props = spec.get("properties", {})
        for name, value in instance.items():
            if name in props:
                check_openapi(value, props[name], strict=strict, where=f"{where}.{name}")
            else:  # parts (allOf/oneOf) checked their own properties above
                assert not strict or name in _declared(spec), f"{where}: {name!r} is not in the schema"
    return None


def _declared(spec: dict[str, Any]) -> set[str]:
    """Property names a schema declares, itself or through its allOf/oneOf parts."""
    if "$ref" in spec:
        return _declared(openapi_schemas()[spec["$ref"].rsplit("/", 1)[-1]])
    names = set(spec.get("properties", {}))
    for sub in [*spec.get("allOf", []), *spec.get("oneOf", [])]:
        names |= _declared(sub)
    return names
