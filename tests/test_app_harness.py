"""What the app tests and bench/ui_stream.py share: a scripted OpenAI-compatible stand-in (a thin
wrapper over tests/standin_servers.py that computes each reply from the request, so concurrent
sessions each get their own answers) and the app launched on a free port.

The script: the base model answers "You said: <prompt>" token by token; the CnR model answers
"Critique: Round k critique. Revision: <the response> (revised)" — so every round changes the
answer and round k's revision carries k "(revised)" marks. In the `edits` format (a request
asking for edits) it answers "Critique: Round k critique.", then "Replace: You said:" "With: You
asked:" (applied in round 1, dropped as not found after) and "Append: (revised)". Words in the
prompt steer it:
  [cut]        the base answer's stream breaks off after a few tokens
  [cut-round]  round 1's stream breaks off after a few tokens
  [slow]       0.2 s between tokens (time to press Stop)
  [fix]        the critique says "Nothing to fix." (refinement stops early)
  [busy]       the server answers 429 (overloaded), as vLLM/TGI do when full
  [lines]      round 1's revision adds three lines (versions of different heights)
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refine.cnr_format import EDITS_INSTRUCTION, INSTRUCTION
from tests.standin_servers import (
    Cut, Pause, Recorded, Reply, StandinServer, json_reply, openai_chunks, sse_event, sse_reply,
)

CHAT_PATH = "/v1/chat/completions"
RESPONSE_MARK = "Response to improve:\n"
# Positions of the outputs of /respond and /regenerate as gradio_client returns them (states
# are not part of the API).
OUT_CHAT, OUT_PANEL, OUT_PROGRESS = 0, 1, 2


def words(text: str) -> list[str]:
    """Text split into streamed pieces: each word with the space before it."""
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]]


def response_to_improve(body: dict[str, Any]) -> str | None:
    """The response a CnR request asks to improve (None for a base-model request)."""
    last = body["messages"][-1]["content"]
    if RESPONSE_MARK not in last:
        return None
    response = last.split(RESPONSE_MARK, 1)[1]
    for instruction in (INSTRUCTION, EDITS_INSTRUCTION):
        response = response.removesuffix("\n\n" + instruction)
    return response


def asks_for_edits(body: dict[str, Any]) -> bool:
    """Whether a CnR request asks for the `edits` format."""
    return body["messages"][-1]["content"].endswith(EDITS_INSTRUCTION)


def prompt_of(body: dict[str, Any]) -> str:
    """The user's prompt inside a base or CnR request."""
    return body["messages"][-1]["content"]


@dataclass
class Script:
    """The stand-in's behaviour: `delay` seconds between tokens; `emitted` records, per request,
    {role, prompt, times} (perf_counter time each token was sent) for the benchmark."""

    delay: float = 0.01
    pad_words: int = 0  # extra words appended to every base answer (longer streams)
    emitted: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pieces(self, body: dict[str, Any]) -> tuple[str, list[str]]:
        response = response_to_improve(body)
        prompt = prompt_of(body)
        if response is None:
            text = f"You said: {prompt}" + "".join(f" w{i}" for i in range(self.pad_words))
            return "base", words(text)
        k = response.count("(revised)") + 1
        if "[fix]" in prompt:
            return "cnr", words("Critique: Nothing to fix.")
        if asks_for_edits(body):
            return "cnr", words(f"Critique: Round {k} critique of the answer.\nReplace: You said:\nWith: You asked:"
                                "\nAppend: (revised)")
        added = "\nAdded line one\nAdded line two\nAdded line three" if "[lines]" in prompt and k == 1 else ""
        return "cnr", words(f"Critique: Round {k} critique of the answer.\nRevision: {response} (revised){added}")

    def reply(self, request: Recorded) -> Reply:
        body = request.json
        role, pieces = self.pieces(body)
        text = prompt_of(body)
        delay = 0.2 if "[slow]" in text else self.delay
        if "[busy]" in text:
            return json_reply({"error": "Model is overloaded", "error_type": "overloaded"}, 429)
        cut = ("[cut]" in text and role == "base") or ("[cut-round]" in text and role == "cnr")
        # Reply's steps are iterated as they are sent: a generator records true send times.
        headers = sse_reply([]).headers
        steps = self._steps(role, text, pieces, delay, cut)
        return Reply(200, headers, steps=steps)  # type: ignore[arg-type]

    def _steps(self, role: str, prompt: str, pieces: list[str], delay: float, cut: bool) -> Iterator[Any]:
        """The SSE steps, generated as they are sent (so their send times can be recorded)."""
        chunks = openai_chunks(pieces, model="standin")
        times = []
        for i, chunk in enumerate(chunks[: len(pieces)]):
            if cut and i == 3:
                yield Cut()
                return
            if i and delay:
                yield Pause(delay)
            yield sse_event(chunk) if isinstance(chunk, dict) else chunk
            times.append(time.perf_counter())
        with self.lock:  # before the stream ends, so a client that saw the end finds the record
            self.emitted.append({"role": role, "prompt": prompt, "times": times})
        yield from (sse_event(c) if isinstance(c, dict) else c for c in chunks[len(pieces):])


class ScriptedServer(StandinServer):
    """A stand-in OpenAI-compatible server whose chat replies come from a Script."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    def next_reply(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path.split("?")[0] == CHAT_PATH:
            with self._lock:
                self.requests.append(request)
            return self.script.reply(request)
        return super().next_reply(request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every client of a test comes from 127.0.0.1, i.e. is one visitor: the per-visitor limits are
# off unless a test sets them (tests/test_app_limits.py does).
NO_VISITOR_LIMITS = dict(visitor_turns_per_minute=0, visitor_concurrent_turns=0, visitor_requests_per_minute=0)


def standin_settings(url: str, db_file: Path, **overrides: Any) -> dict[str, Any]:
    """Settings for an app whose base and CnR models are both the stand-in at `url`."""
    return {**dict(base_backend="openai", base_url=url, cnr_backend="openai", base_model="standin",
                   database_url=f"sqlite:///{db_file}", rounds=2, retries=0, timeout=10, concurrency=8,
                   **NO_VISITOR_LIMITS),
            **overrides}


@dataclass
class RunningApp:
    url: str
    db_file: Path
    ctx: Any

    def rows(self, sql: str, *params: Any) -> list[tuple]:
        """Query the app's real SQLite file (a separate connection, as an operator would)."""
        with sqlite3.connect(self.db_file) as connection:
            return connection.execute(sql, params).fetchall()


@contextmanager
def running_app(settings: dict[str, Any]) -> Iterator[RunningApp]:
    """`python app.py` in this process with these settings (no environment), on a free port."""
    import app
    from refine.settings import Settings
    from ui import launch

    demo, ctx = app.build(Settings(_env_file=None, **settings))
    launch(demo, ctx, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield RunningApp(url=demo.local_url, db_file=Path(ctx.engine.url.database), ctx=ctx)
    finally:
        demo.close()
        ctx.exports.close()
        ctx.engine.dispose()


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message as gradio_client returns it."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def panel_text(panel: list[dict[str, Any]]) -> str:
    return "\n".join(f"{(m.get('metadata') or {}).get('title', '')}|{message_text(m)}" for m in panel)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_script_improves_the_response_it_is_given() -> None:
    """The script reads the response out of a real CnR prompt and revises it."""
    from refine.cnr_format import cnr_messages

    script = Script()
    body = {"messages": cnr_messages([{"role": "user", "content": "hi"}], "You said: hi (revised)")}
    role, pieces = script.pieces(body)
    assert role == "cnr"
    assert "".join(pieces).endswith("Revision: You said: hi (revised) (revised)")
    assert "Round 2 critique" in "".join(pieces)
