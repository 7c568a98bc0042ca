"""The per-visitor limits (turns per minute, turns at once, tokens and rounds a visitor may ask
for, other requests per minute, the admin-token lockout), the upload cap, export links tied to
the admin's session, and errors without the model server's address: the parts on their own,
then the app over its API. Each client names its visitor with X-Forwarded-For (the app trusts
one proxy here), as clients behind a Space's proxy do."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from pydantic import ValidationError

from refine.settings import Settings
from tests.test_app_harness import (
    OUT_PANEL,
    RunningApp,
    Script,
    ScriptedServer,
    panel_text,
    running_app,
    standin_settings,
    wait_for,
)
from ui.context import Controls
from ui.exports import ExportStore
from ui.limits import AdminGate, SlidingWindow, Slots, client_address
from ui.safety import content_security_policy, exact, public_message, shown_as_text

ADMIN = "the-admin-token-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the parts --------------------------------------------------------------------------------


def test_sliding_window_counts_per_key_and_says_how_long_to_wait() -> None:
    clock = Clock()
    window = SlidingWindow(3, 60.0, clock=clock)
    assert [window.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert window.hit("a") == pytest.approx(60.0)
    assert window.hit("b") == 0.0  # another visitor is not affected
    clock.now += 30
    assert window.hit("a") == pytest.approx(30.0)
    clock.now += 30.5
    assert window.hit("a") == 0.0
    assert SlidingWindow(0).hit("a") == 0.0  # 0 = no limit


def test_slots_hold_at_most_the_limit_per_key() -> None:
    slots = Slots(1)
    assert slots.acquire("a") and not slots.acquire("a") and slots.acquire("b")
    slots.release("a")
    assert slots.acquire("a")


def test_admin_gate_locks_out_one_visitor_after_wrong_tokens_only() -> None:
    clock = Clock()
    gate = AdminGate(ADMIN, max_failures=3, lockout_s=600, clock=clock)
    assert [gate.check("guesser", f"guess{i}") for i in range(3)] == ["wrong", "wrong", "locked"]
    assert gate.check("guesser", ADMIN) == "locked"  # even the right token, while locked out
    assert gate.check("admin", ADMIN) == "ok"  # the admin elsewhere is not affected
    assert gate.check("admin", "") == "wrong" and gate.check("admin", None) == "wrong"
    clock.now += 601
    assert gate.check("guesser", ADMIN) == "ok"
    assert AdminGate(None, 3, 600).check("x", "") == "wrong"  # no token configured: nothing unlocks


def test_client_address_trusts_only_the_proxies_entries() -> None:
    headers = {"x-forwarded-for": "6.6.6.6, 203.0.113.7"}  # the client wrote the first entry
    assert client_address(headers, "10.0.0.1", hops=1) == "203.0.113.7"
    assert client_address(headers, "10.0.0.1", hops=2) == "6.6.6.6"
    assert client_address(headers, "10.0.0.1", hops=0) == "10.0.0.1"
    assert client_address({}, "10.0.0.1", hops=1) == "10.0.0.1"


def test_controls_are_checked_against_the_visitor_limits() -> None:
    assert Controls(2, True, 0.0, 64, 64).check(max_rounds=2, max_tokens=64) is None
    assert "between 1 and 2" in Controls(3, True, 0.0, 64, 64).check(max_rounds=2, max_tokens=64)
    assert "between 1 and 64" in Controls(2, True, 0.0, 65, 64).check(max_rounds=2, max_tokens=64)
    assert "between 1 and 32" in Controls(2, True, 0.0, 64, 64).check(2, 64, cnr_max_tokens=32)
    assert Controls(2, True, "hot", 64, 64).check(2, 64)  # type: ignore[arg-type]  # a client sent a string


@pytest.mark.parametrize(("message", "kept"), [
    ("OpenAI-compatible server at http://10.0.0.5:8080/v1 answered HTTP 503: loading", "server answered HTTP 503"),
    ("cannot connect to TGI at https://tgi.internal:8443: [Errno 111] Connection refused", "Connection refused"),
    ("could not connect to TGI at http://[fd00::5]:80 within 10 s", "within 10 s"),
    ("the connection to x was cut: ('10.0.0.5', 8080) reset", "was cut"),
    ("upstream tgi-0.tgi.svc.cluster.local:80 failed", "failed"),
    ("connection to server at \"10.1.2.3\", port 5432 failed", "port 5432 failed"),
])
def test_public_messages_keep_the_reason_but_not_the_address(message: str, kept: str) -> None:
    public = public_message(message)
    assert kept in public
    for address in ("10.0.0.5", "8080", "tgi.internal", "fd00", "cluster.local", "10.1.2.3"):
        assert address not in public


def test_public_messages_leave_ordinary_text_alone() -> None:
    text = "Round 1 failed at 12:30: the revision is 3.5 times longer (HTTP 400)"
    assert public_message(text) == text


def test_image_hosts_setting_shapes_tags_and_policy() -> None:
    plain = Settings(_env_file=None)
    assert "img" in shown_as_text(plain) and "form" in shown_as_text(plain)
    assert "img-src 'self' data: blob:;" in content_security_policy(plain)
    allowed = Settings(_env_file=None, allowed_image_hosts="https://upload.wikimedia.org, *.example.org")
    assert "img" not in shown_as_text(allowed) and "form" in shown_as_text(allowed)
    assert "img-src 'self' data: blob: https://upload.wikimedia.org *.example.org;" in content_security_policy(allowed)
    with pytest.raises(ValidationError, match="is not a host such as"):
        Settings(_env_file=None, allowed_image_hosts="https://x.org; script-src *")


def test_exact_messages_keep_their_text_as_it_is() -> None:
    text = "def add(a, b):\n    return a + b"
    (message,) = exact([{"role": "assistant", "content": text, "metadata": {"title": "t"}}])
    assert message == {"role": "assistant", "content": [{"type": "text", "text": text}], "metadata": {"title": "t"}}
    import gradio as gr

    shown = gr.Chatbot().postprocess(exact([{"role": "assistant", "content": text}])).root[0].content[0]
    assert shown.text == text  # a plain string would come back as "def add(a, b):\nreturn a + b"


def test_export_store_serves_each_file_once_and_deletes_what_it_wrote(tmp_path: Path) -> None:
    def export(name: str) -> tuple[Path, list[Path]]:
        folder = tmp_path / name
        folder.mkdir()
        files = [folder / "a.csv", folder / "b.csv"]
        for f in files:
            f.write_text("x")
        return folder, files

    store = ExportStore(ttl_s=60)
    folder, files = export("one")
    grant = store.publish("session-1", folder, files)
    assert set(grant.links()) == {"a.csv", "b.csv"}
    path = store.take(grant.key, "a.csv")
    assert path == files[0] and store.take(grant.key, "a.csv") is None  # once
    store.served(grant.key, path)
    assert not files[0].exists() and folder.exists()
    store.served(grant.key, store.take(grant.key, "b.csv"))  # type: ignore[arg-type]
    assert not folder.exists() and store.active() == 0  # all downloaded: all gone

    folder, files = export("two")
    grant = store.publish("session-2", folder, files)
    folder3, files3 = export("three")
    store.publish("session-2", folder3, files3)  # the next export ends the previous one
    assert not folder.exists() and store.take(grant.key, "a.csv") is None
    store.revoke_session("session-2")  # the page was closed
    assert not folder3.exists() and store.active() == 0

    short = ExportStore(ttl_s=0.2)
    folder, files = export("four")
    grant = short.publish("s", folder, files)
    time.sleep(0.5)
    assert short.take(grant.key, "a.csv") is None and not folder.exists()  # expired: deleted


# --- the app ----------------------------------------------------------------------------------

LIMITS = {"visitor_turns_per_minute": 3, "visitor_concurrent_turns": 1, "visitor_requests_per_minute": 8,
          "visitor_max_new_tokens": 64, "visitor_max_rounds": 2, "admin_max_failures": 3, "proxy_hops": 1,
          "admin_token": ADMIN, "export_ttl_minutes": 0.05}


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(Script(delay=0.01)) as standin:
        yield standin


@pytest.fixture
def app(server: ScriptedServer, tmp_path: Path) -> Iterator[RunningApp]:
    with running_app(standin_settings(server.url, tmp_path / "refine.db", **LIMITS)) as running:
        yield running


def visitor(app: RunningApp, address: str) -> Client:
    """A client whose (trusted) proxy says it comes from `address`."""
    return Client(app.url, verbose=False, headers={"X-Forwarded-For": address})


def turn(c: Client, prompt: str, **controls: Any) -> str:
    return panel_text(c.predict(prompt, api_name="/respond", **controls)[OUT_PANEL])


def model_requests(server: ScriptedServer, prompt: str) -> int:
    return sum(prompt in r.json["messages"][-1]["content"] for r in server.requests_to("/v1/chat/completions"))


def test_turns_per_minute_and_at_once_per_visitor(app: RunningApp, server: ScriptedServer) -> None:
    alice = visitor(app, "203.0.113.1")
    job = alice.submit("Alice slow [slow]", api_name="/respond")
    wait_for(lambda: model_requests(server, "Alice slow") > 0, timeout=20)
    other_tab = visitor(app, "203.0.113.1")  # the same visitor, another session
    assert "still running" in turn(other_tab, "Alice again")
    assert model_requests(server, "Alice again") == 0
    assert "Done:" in turn(visitor(app, "203.0.113.2"), "Bob meanwhile")  # another visitor is not held up
    alice.predict(api_name="/stop")
    job.result(timeout=30)

    assert "Done:" in turn(other_tab, "Alice 2") and "Done:" in turn(alice, "Alice 3")
    refused = turn(alice, "Alice 4")  # her 4th turn within a minute (the limit is 3)
    assert "3 turns in the last minute" in refused and "try again in" in refused
    assert model_requests(server, "Alice 4") == 0


def test_tokens_and_rounds_beyond_the_visitor_limits_are_refused(app: RunningApp, server: ScriptedServer) -> None:
    c = visitor(app, "203.0.113.3")
    # The sliders' ranges are the limits, and Gradio refuses values outside them (Controls.check,
    # tested above, checks again in the handler).
    with pytest.raises(AppError, match="greater than maximum value 64"):
        turn(c, "Too long please", max_new_tokens=32768)
    with pytest.raises(AppError, match="greater than maximum value 64"):
        turn(c, "Too long please", cnr_max_new_tokens=65)
    with pytest.raises(AppError, match="greater than maximum value 2"):
        turn(c, "Too many rounds", rounds=10)
    assert model_requests(server, "Too long please") == model_requests(server, "Too many rounds") == 0
    assert "Done: 2 round(s)" in turn(c, "Within the limits", rounds=2, max_new_tokens=64, cnr_max_new_tokens=64)
    config = httpx.get(app.url + "config").json()
    sliders = {c["props"].get("label"): c["props"] for c in config["components"] if c.get("type") == "slider"}
    assert sliders["Rounds"]["maximum"] == 2 and sliders["Max new tokens · answer"]["maximum"] == 64
    assert sliders["Max new tokens · answer"]["value"] <= 64


def test_cheap_requests_are_limited_per_visitor(app: RunningApp) -> None:
    c = visitor(app, "203.0.113.4")
    for _ in range(8):
        assert "Too many" not in str(c.predict(api_name="/new_chat"))
    assert "Too many requests" in panel_text(c.predict(api_name="/new_chat")[1])  # said in the panel
    assert "Too many requests" in c.predict(api_name="/statistics")[0]
    assert "vote" in visitor(app, "203.0.113.5").predict(api_name="/statistics")[0]  # others still get them


def test_parallel_statistics_cost_one_computation(app: RunningApp) -> None:
    from ui.stats_tab import StatsEvents

    calls = []
    original = StatsEvents.refresh

    def counted(self: StatsEvents) -> dict[Any, Any]:
        calls.append(time.monotonic())
        time.sleep(0.3)
        return original(self)

    StatsEvents.refresh = counted  # type: ignore[method-assign]
    try:
        results: list[str] = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            visitor(app, f"198.51.100.{i}").predict(api_name="/statistics")[0])) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        StatsEvents.refresh = original  # type: ignore[method-assign]
    assert len(results) == 12 and all("vote" in r for r in results)
    assert len(calls) == 1


def test_wrong_admin_tokens_lock_out_the_guesser_and_never_delay_the_admin(app: RunningApp) -> None:
    guesser, admin = visitor(app, "192.0.2.66"), visitor(app, "192.0.2.1")
    started = time.monotonic()
    answers = [guesser.predict(f"guess-{i}", api_name="/export")[0] for i in range(3)]
    assert time.monotonic() - started < 5  # no delay per guess
    assert "Wrong admin token" in answers[0] and "🔒" in answers[2]
    assert "🔒" in guesser.predict(ADMIN, api_name="/export")[0]  # locked out, right token or not

    # Guesses from many addresses at once do not hold the admin up.
    def guess(i: int) -> None:
        visitor(app, f"192.0.2.{100 + i}").predict("wrong", api_name="/export")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    started = time.monotonic()
    status, links = admin.predict(ADMIN, api_name="/export")
    took = time.monotonic() - started
    for t in threads:
        t.join(60)
    assert "files ready" in status and "refine-export/" in links and took < 5


def test_export_links_work_once_then_expire(app: RunningApp) -> None:
    import re

    admin = visitor(app, "192.0.2.1")
    _, links = admin.predict(ADMIN, api_name="/export")
    urls = dict(re.findall(r"\[([^\]]+)\]\(([^)]+)\)", links))
    assert httpx.get(app.url + urls["votes.csv"]).status_code == 200
    assert httpx.get(app.url + urls["votes.csv"]).status_code == 404
    folder = next(iter(app.ctx.exports._grants.values())).folder
    assert folder.exists()
    time.sleep(3.5)  # REFINE_EXPORT_TTL_MINUTES = 0.05 (3 s)
    assert httpx.get(app.url + urls["turns.csv"]).status_code == 404
    assert not folder.exists()


def test_queued_events_cannot_skip_the_queue_over_plain_http(app: RunningApp) -> None:
    """POST /gradio_api/run/<name> runs an event directly; for a queued one that would skip the
    queue and its concurrency limit (Gradio's api_open, now off)."""
    answer = httpx.post(app.url + "gradio_api/run/statistics", json={"data": []})
    assert answer.status_code == 404 and "join the queue" in answer.text
    assert httpx.post(app.url + "gradio_api/run/new_chat", json={"data": []}).status_code == 200  # not queued


def test_uploads_and_large_bodies_are_refused(app: RunningApp) -> None:
    big = b"x" * (3 * 1024 * 1024)
    answer = httpx.post(app.url + "gradio_api/upload", files={"files": ("big.bin", big)})
    assert answer.status_code == 413
    medium = b"x" * (1536 * 1024)  # under the request cap, over Gradio's max_file_size
    answer = httpx.post(app.url + "gradio_api/upload", files={"files": ("medium.bin", medium)})
    assert answer.status_code == 413


def test_errors_reach_the_page_without_the_servers_address(app: RunningApp, server: ScriptedServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    final = visitor(app, "203.0.113.9").predict("Are you there? [busy]", api_name="/respond")
    address = server.url.removeprefix("http://")
    assert "overloaded" in panel_text(final[OUT_PANEL]) and address not in panel_text(final[OUT_PANEL])
    assert "overloaded" in str(final[0]) and address not in str(final[0])  # the chat says it failed, and why
    assert any(address in r.getMessage() for r in caplog.records)  # the operator gets the address
