"""The page stays safe whatever the model writes, in a real browser (Debian's chromium, headless,
driven by Playwright): a scripted model answers, thinks, critiques, revises and fails with hostile
Markdown and HTML (images, forms, inputs, buttons, iframes, objects, media, SVG, CSS `url()`),
and a second local HTTP server plays the remote host those point at. No request may reach it,
no form control from model text may exist in the page, the chat shows (and copies) the stored
text byte for byte (the Arena shows it the same way), a failed turn says why without the model
server's address."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.standin_servers import Recorded, Reply, StandinServer, json_reply
from tests.test_app_harness import (
    RunningApp,
    Script,
    ScriptedServer,
    prompt_of,
    response_to_improve,
    running_app,
    standin_settings,
    words,
)
from tests.test_browser_app import CHROMIUM, CHROMIUM_ARGS, send

pytestmark = pytest.mark.browser

ADMIN = "page-safety-admin"
CASE = Path(__file__).resolve().parent / "data" / "cases" / "chat-text-altered" / "answer.txt"
# The rendered text of every chat message (Markdown output), where nothing from the model may be live.
CONTENT = ", ".join(f"#{where} .message-wrap .md" for where in (
    "chat", "panel", "vote-left", "vote-right", "arena-prompt", "arena-left", "arena-right"))


def hostile(remote: str) -> str:
    """Markdown and HTML that would make a browser fetch from `remote` or submit to it."""
    return "\n\n".join([
        f"Look: ![pixel]({remote}/md.png) and ![ref][pic] and <img src=\"{remote}/raw.png\" alt=raw>",
        f"[pic]: {remote}/ref.png",
        f"<picture><source srcset=\"{remote}/source.png\"><img src=\"{remote}/picture.png\"></picture>",
        (f"<form action=\"{remote}/submit\" method=\"post\"><input name=\"q\" value=\"secret\">"
         f"<select name=s><option>1</option></select><textarea name=t>t</textarea>"
         f"<button id=\"evil-submit\" type=\"submit\">Go</button></form>"),
        f"<button id=\"lone-button\" formaction=\"{remote}/formaction\">Claim your prize</button>",
        f"<input type=\"image\" src=\"{remote}/input.png\"> <input type=\"text\" value=\"x\">",
        (f"<iframe src=\"{remote}/frame\"></iframe> <object data=\"{remote}/object\"></object> "
         f"<embed src=\"{remote}/embed\">"),
        (f"<video poster=\"{remote}/poster.png\" src=\"{remote}/video.mp4\" autoplay></video> "
         f"<audio src=\"{remote}/audio.mp3\" autoplay></audio>"),
        (f"<svg width=\"10\" height=\"10\"><image href=\"{remote}/svg.png\" width=\"10\" height=\"10\"/>"
         f"<filter id=\"f\"><feImage href=\"{remote}/feimage.png\"/></filter></svg>"),
        f"<div style=\"background-image:url({remote}/style.png)\">styled</div>",
        f"<table background=\"{remote}/table.png\"><tr><td>cell</td></tr></table>",
        f"<link rel=\"stylesheet\" href=\"{remote}/style.css\"> <body background=\"{remote}/body.png\">",
        "- [ ] a task list item",
    ])


class HostileScript(Script):
    """The harness's script with hostile text in every part a model writes: the base answer
    repeats the prompt (which carries the payload); "[think]" prefixes reasoning that carries it
    too; the critique carries it; "[evil-error]" answers a 400 whose message carries it;
    "[case]" answers with the chat-text-altered case's stored answer."""

    def __init__(self, payload: str) -> None:
        super().__init__(delay=0.0)
        self.payload = payload

    def pieces(self, body: dict[str, Any]) -> tuple[str, list[str]]:
        prompt, response = prompt_of(body), response_to_improve(body)
        if response is None and "[case]" in prompt:
            return "base", words(CASE.read_text(encoding="utf-8"))
        if response is None and "[think]" in prompt:
            return "base", words(f"<think>Thinking: {self.payload}</think>You said: {prompt}")
        if response is not None and "[fix]" not in prompt:
            k = response.count("(revised)") + 1
            return "cnr", words(f"Critique: Round {k} critique. {self.payload}\nRevision: {response} (revised)")
        return super().pieces(body)

    def reply(self, request: Recorded) -> Reply:
        if "[evil-error]" in prompt_of(request.json):
            return json_reply({"error": {"message": f"cannot serve this: {self.payload}", "type": "server_error",
                                         "code": 400}}, 400)
        return super().reply(request)


@pytest.fixture(scope="module")
def remote() -> Iterator[StandinServer]:
    """The 'remote host': records every request it gets (and answers 404)."""
    with StandinServer() as server:
        yield server


@pytest.fixture(scope="module")
def model(remote: StandinServer) -> Iterator[ScriptedServer]:
    with ScriptedServer(HostileScript(hostile(remote.url))) as server:
        yield server


@pytest.fixture(scope="module")
def app(model: ScriptedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    db_file = tmp_path_factory.mktemp("page-safety") / "refine.db"
    with running_app(standin_settings(model.url, db_file, rounds=1, admin_token=ADMIN)) as running:
        yield running


@pytest.fixture(scope="module")
def browser(app: RunningApp) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, app: RunningApp) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1100},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(app.url)
    page.wait_for_selector("#prompt textarea")
    yield page
    context.close()


def finish(page: Any, text: str) -> None:
    """Wait until the turn ended and the panel says how."""
    page.wait_for_selector("#send", state="visible", timeout=60_000)
    page.wait_for_function("(t) => document.querySelector('#panel').textContent.includes(t)", arg=text,
                           timeout=60_000)


def live_controls(page: Any) -> list[str]:
    """Elements in rendered message text that could fetch, embed or submit (Gradio's own
    code-block copy button aside)."""
    return page.evaluate("""(selector) => {
      const found = [];
      for (const root of document.querySelectorAll(selector)) {
        for (const el of root.querySelectorAll('form, input, button, select, textarea, iframe, object, embed, '
                                                + 'img, picture, source, video, audio, image, feImage, link, base')) {
          if (el.tagName === 'BUTTON' && el.classList.contains('copy_code_button')) continue;
          if (el.tagName === 'IMG' && !/^(https?:)/.test(el.getAttribute('src') || '')) continue;  // KaTeX, data:
          found.push(el.outerHTML.slice(0, 80));
        }
      }
      return found;
    }""", CONTENT)


def test_hostile_output_fetches_nothing_and_renders_no_form_control(
        page: Any, app: RunningApp, remote: StandinServer) -> None:
    remote.requests.clear()
    send(page, "[think] Please repeat: " + hostile(remote.url))
    finish(page, "Done:")
    page.wait_for_selector("#vote-box", state="visible")  # both vote sides show hostile versions
    page.locator("#panel").get_by_text("Reasoning of the answering model").click()  # open the reasoning
    page.click("#feedback-box")  # the feedback area opens with the answer in its edit box
    page.wait_for_timeout(1500)  # time for any fetch to happen

    assert [r.path for r in remote.requests] == []
    assert live_controls(page) == []
    assert page.evaluate("() => document.querySelectorAll('form').length") == 0
    for where in ("#chat", "#panel", "#vote-left", "#vote-right"):
        text = page.inner_text(where)
        assert f"{remote.url}/md.png" in text  # the image is a placeholder showing its address
        assert "Claim your prize" in text and "<button" in text  # a button shows as text
    assert "Thinking:" in page.inner_text("#panel")

    # The Arena shows this turn's prompt and versions (the only pair yet) the same safe way.
    page.get_by_role("tab", name="Arena").click()
    page.wait_for_selector("#arena-left-btn", state="visible")
    page.wait_for_timeout(1000)
    assert [r.path for r in remote.requests] == [] and live_controls(page) == []
    assert page.evaluate("() => document.querySelectorAll('form').length") == 0
    for where in ("#arena-prompt", "#arena-left", "#arena-right"):
        text = page.inner_text(where)
        assert f"{remote.url}/md.png" in text and "<button" in text


def test_the_page_sends_a_content_security_policy(app: RunningApp) -> None:
    import httpx

    headers = httpx.get(app.url).headers
    policy = headers["content-security-policy"]
    assert "img-src 'self' data: blob:;" in policy and "form-action 'self'" in policy
    assert "object-src 'none'" in policy and headers["referrer-policy"] == "same-origin"


def test_a_turn_that_failed_says_why_without_the_servers_address(
        page: Any, app: RunningApp, model: ScriptedServer, remote: StandinServer) -> None:
    remote.requests.clear()
    send(page, "Fail please [evil-error]")
    finish(page, "refused the request")
    chat = page.inner_text("#chat")
    assert "refused the request" in chat and not chat.rstrip().endswith("…")  # not "still running"
    address = model.url.removeprefix("http://")
    for where in ("#chat", "#panel"):
        assert address not in page.inner_text(where)
    page.wait_for_timeout(500)
    assert [r.path for r in remote.requests] == [] and live_controls(page) == []
    stored = app.rows("SELECT error FROM turns WHERE prompt = 'Fail please [evil-error]'")[0][0]
    assert address in stored  # the operator keeps the address (database and log)


def test_the_chat_shows_and_copies_the_stored_answer_byte_for_byte(page: Any, app: RunningApp) -> None:
    stored = CASE.read_text(encoding="utf-8")
    assert "\n    return a + b" in stored
    send(page, "[case] [fix] add two numbers")
    finish(page, "nothing left to fix")
    assert app.rows("SELECT answer FROM turns WHERE prompt = '[case] [fix] add two numbers'") == [(stored,)]
    page.locator("#chat .message-row.bot-row").last.hover()
    page.locator("#chat button[aria-label='Copy message']").last.click()  # the answer's copy button
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == stored


def test_a_code_block_keeps_its_indentation(page: Any, app: RunningApp) -> None:
    # An indented code block: Gradio's `inspect.cleandoc` of string messages took its indentation
    # away (every line after the first was indented), so it showed as a paragraph.
    send(page, "[fix] Code:\n\n    def add(a, b):\n        return a + b")
    finish(page, "nothing left to fix")
    blocks = page.evaluate("() => [...document.querySelectorAll('#chat .message-wrap pre code')]"
                           ".map(c => c.textContent)")
    assert len(blocks) == 2 and all(b == "def add(a, b):\n    return a + b\n" for b in blocks), blocks


@pytest.fixture
def image_app(tmp_path: Path) -> Iterator[tuple[RunningApp, StandinServer, StandinServer]]:
    """An app that allows the images of one host (REFINE_ALLOWED_IMAGE_HOSTS), with a second
    host whose images stay blocked."""
    with StandinServer() as allowed, StandinServer() as other:
        png = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                            "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
        allowed.on("GET", "/ok.png", Reply(200, {"Content-Type": "image/png"}, png))
        payload = f"![allowed]({allowed.url}/ok.png) ![other]({other.url}/no.png)"
        with ScriptedServer(HostileScript(payload)) as model:
            settings = standin_settings(model.url, tmp_path / "refine.db", rounds=1,
                                        allowed_image_hosts=allowed.url)
            with running_app(settings) as running:
                yield running, allowed, other


def test_allowed_image_hosts_load_and_others_do_not(image_app: Any, browser: Any) -> None:
    app, allowed, other = image_app
    context = browser.new_context()
    page = context.new_page()
    page.goto(app.url)
    page.wait_for_selector("#prompt textarea")
    send(page, f"[fix] ![allowed]({allowed.url}/ok.png) ![other]({other.url}/no.png)")
    finish(page, "nothing left to fix")
    page.wait_for_timeout(1000)
    assert {r.path for r in allowed.requests} == {"/ok.png"}
    assert other.requests == []
    context.close()


def test_exports_download_once_and_end_with_the_admins_page(browser: Any, app: RunningApp) -> None:
    import httpx

    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    page.goto(app.url)
    page.get_by_role("tab", name="Data").click()
    page.fill("#data-token input", "a wrong guess")
    page.click("#data-button")
    page.wait_for_function("() => document.querySelector('#data-status').textContent.includes('Wrong admin token')")
    page.fill("#data-token input", ADMIN)
    page.click("#data-button")
    page.wait_for_selector("#data-links a")
    links = {a.inner_text(): a.get_attribute("href") for a in page.query_selector_all("#data-links a")}
    assert {"votes.csv", "turns.csv", "preferences.jsonl"} <= set(links)
    with context.expect_event("download") as download:
        page.click("#data-links a:text-is('votes.csv')")
    assert Path(download.value.path()).read_text().startswith("id,")
    base = app.url.rstrip("/") + "/"
    assert httpx.get(base + links["votes.csv"]).status_code == 404  # downloaded once: gone
    assert app.ctx.exports.active() == 1
    page.close()  # the admin leaves: the session ends, and with it the export
    deadline = time.monotonic() + 10
    while app.ctx.exports.active() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert app.ctx.exports.active() == 0
    assert httpx.get(base + links["turns.csv"]).status_code == 404
    context.close()
