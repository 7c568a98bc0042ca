"""Serving: generations are limited to what the backend takes while votes and statistics never
wait behind them; backend failures read clearly; privacy settings and secrets (page, config,
logs)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gradio_client import Client

from tests.standin_servers import refused_url
from tests.test_app_harness import (
    OUT_PANEL, RunningApp, Script, ScriptedServer, panel_text, running_app, standin_settings, wait_for,
)

SECRETS = {"base_api_key": "sk-base-secret-1", "admin_token": "admin-secret-2", "voter_salt": "salt-secret-3"}


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(Script(delay=0.01)) as standin:
        yield standin


@pytest.fixture(scope="module")
def logs() -> Iterator[Captured]:
    handler, root = Captured(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def app(server: ScriptedServer, logs: Captured, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    db_file = tmp_path_factory.mktemp("serving") / "refine.db"
    with running_app(standin_settings(server.url, db_file, **{**SECRETS, "concurrency": 1})) as running:
        yield running


def test_one_generation_at_a_time_but_votes_and_statistics_do_not_wait(app: RunningApp, server: ScriptedServer) -> None:
    voter = Client(app.url, verbose=False)
    voter.predict("Vote on this", api_name="/respond")
    first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
    job1 = first.submit("Slow one [slow]", api_name="/respond")
    wait_for(lambda: any("Slow one" in r.json["messages"][-1]["content"]
                         for r in server.requests_to("/v1/chat/completions")))
    job2 = second.submit("Queued one", api_name="/respond")
    time.sleep(0.3)
    started = time.monotonic()
    assert "vote" in voter.predict(api_name="/vote_right")[-1]
    summary = voter.predict(api_name="/statistics")[0]
    assert "1** vote(s)" in summary and time.monotonic() - started < 5  # not behind ~10 s of generation
    assert not job1.done()
    prompts = [r.json["messages"][-1]["content"] for r in server.requests_to("/v1/chat/completions")]
    assert "Queued one" not in prompts  # concurrency 1: the second turn waits in the queue
    first.predict(api_name="/stop")
    job1.result(timeout=30)
    assert "Done:" in panel_text(job2.result(timeout=30)[OUT_PANEL])


def test_backend_errors_are_clear_and_the_app_stays_up(app: RunningApp) -> None:
    c = Client(app.url, verbose=False)
    assert "overloaded" in panel_text(c.predict("Are you there? [busy]", api_name="/respond")[OUT_PANEL])
    assert "Done:" in panel_text(c.predict("And now?", api_name="/respond")[OUT_PANEL])


def test_an_unreachable_server_is_reported(tmp_path: Path) -> None:
    settings = standin_settings(refused_url(), tmp_path / "refine.db", connect_timeout=1)
    with running_app(settings) as down:
        final = Client(down.url, verbose=False).predict("Hello?", api_name="/respond")
        assert "could not be reached" in panel_text(final[OUT_PANEL])
        assert down.rows("SELECT error FROM turns")[0][0].startswith("unavailable")


def test_run_history_is_off_and_secrets_reach_neither_page_nor_logs(app: RunningApp, logs: Captured) -> None:
    Client(app.url, verbose=False).predict("Anything secret?", api_name="/respond")
    config = httpx.get(app.url + "config").json()
    assert config["run_history"] is False
    pages = httpx.get(app.url).text + httpx.get(app.url + "config").text + httpx.get(app.url + "gradio_api/info").text
    logged = "\n".join(logs.lines)
    assert logs.lines  # the app did log (at DEBUG, the HTTP libraries too)
    for secret in SECRETS.values():
        assert secret not in pages and secret not in logged
