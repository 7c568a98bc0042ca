"""The token sliders stop at each model's context window: the operator's setting, a local
model's config, a TGI server's /info (asked once the app serves; again later if it did not
answer); unknown for other servers, where the settings' cap applies alone."""

from __future__ import annotations

from types import SimpleNamespace

from refine.backends.openai_compat import OpenAICompatBackend
from refine.backends.retry import RetryingBackend
from refine.backends.tgi import TGIBackend
from tests.standin_servers import json_reply, refused_url, tgi_server
from ui import model_limits
from ui.model_limits import ContextWindows, local_context, server_context


def local_backend(context: int) -> object:
    """What the local backend looks like from here: `.local.max_context` (its config's max_position_embeddings)."""
    return SimpleNamespace(local=SimpleNamespace(max_context=context))


async def test_a_tgi_servers_info_gives_its_context_window_through_the_retrying_wrapper() -> None:
    with tgi_server(max_total_tokens=8192) as server:
        backend = RetryingBackend(TGIBackend(server.url), retries=0)
        assert await server_context(backend) == 8192
        windows = ContextWindows({"base": backend, "cnr": local_backend(2048)}, {"base": None, "cnr": None})
        assert windows.get("base") is None and windows.get("cnr") == 2048  # the local one is known at once
        await windows.refresh()
        assert windows.get("base") == 8192
        await windows.refresh()
        assert len(server.requests_to("/info")) == 1  # asked once


async def test_the_setting_wins_and_unknown_windows_stay_unknown() -> None:
    assert local_context(RetryingBackend(local_backend(4096))) == 4096  # type: ignore[arg-type]
    openai = OpenAICompatBackend(refused_url(), model="m")
    windows = ContextWindows({"base": local_backend(4096), "cnr": openai}, {"base": 1000, "cnr": None})
    await windows.refresh()
    assert windows.get("base") == 1000 and windows.get("cnr") is None  # an OpenAI server has no /info
    await openai.aclose()


async def test_a_tgi_server_that_did_not_answer_is_asked_again_later(monkeypatch) -> None:
    with tgi_server() as server:
        server.on("GET", "/info", json_reply({"error": "loading", "error_type": "unavailable"}, 503),
                  json_reply({"max_total_tokens": 300}))
        windows = ContextWindows({"base": TGIBackend(server.url)}, {})
        await windows.refresh()
        assert windows.get("base") is None  # the settings' cap applies meanwhile
        await windows.refresh()
        assert len(server.requests_to("/info")) == 1  # not again before RETRY_S
        monkeypatch.setattr(model_limits, "RETRY_S", 0.0)
        windows._next_ask.clear()
        await windows.refresh()
        assert windows.get("base") == 300
