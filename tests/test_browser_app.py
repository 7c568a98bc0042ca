"""The app in a real browser (Debian's chromium, driven by Playwright, headless): a user types a
prompt, watches round 1's critique appear before its revision, votes, and sees the vote counted
in the Statistics tab; model output and user text carrying HTML/script stay inert; in the Arena,
a visitor judges a pair from a stored `revise` run blind and learns which was which after; an
empty Send changes nothing; the vote sides start at the top and keep line breaks; the token
sliders stop at the models' context windows; the progress line moves through the phases; a
waiting visitor sees their message and place in line; the conversation continues from the
original answer when the visitor chooses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_app_harness import RunningApp, Script, ScriptedServer, running_app, standin_settings

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Records when each text first shows up in the panel (a MutationObserver sees every change).
WATCH_PANEL = """(keys) => {
  window.__seen = {};
  new MutationObserver(() => {
    const panel = document.querySelector('#panel');
    if (!panel) return;
    const text = panel.textContent;
    for (const key of keys) if (text.includes(key) && !(key in window.__seen)) window.__seen[key] = performance.now();
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
PAYLOAD = ('<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
           '<a id="js-link" href="javascript:window.__pwned=3">click</a> [md link](javascript:window.__pwned=4) '
           '<svg onload="window.__pwned=5"></svg> <iframe srcdoc="<script>parent.__pwned=6</script>"></iframe>')


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with ScriptedServer(Script(delay=0.03)) as server:
        db_file = tmp_path_factory.mktemp("browser-app") / "refine.db"
        with running_app(standin_settings(server.url, db_file)) as running:
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
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(app.url)
    page.wait_for_selector("#prompt textarea")
    yield page
    context.close()


def send(page: Any, prompt: str) -> None:
    page.fill("#prompt textarea", prompt)
    page.press("#prompt textarea", "Enter")


def wait_turn_end(page: Any, timeout: float = 60_000) -> None:
    page.wait_for_selector("#send", state="visible", timeout=timeout)
    page.wait_for_function("() => document.querySelector('#panel').textContent.includes('Done:') || "
                           "document.querySelector('#panel').textContent.includes('⚠')", timeout=timeout)


def stats_summary(page: Any, expect: str) -> str:
    """Open the Statistics tab (which refreshes it) and wait for the summary to say `expect`."""
    page.get_by_role("tab", name="Statistics").click()
    page.wait_for_function("(expect) => document.querySelector('#stats-summary').textContent.includes(expect)",
                           arg=expect)
    return page.inner_text("#stats-summary")


def test_prompt_critique_before_revision_vote_and_statistics(page: Any, app: RunningApp, tmp_path: Path) -> None:
    stats_summary(page, "No votes yet")
    page.get_by_role("tab", name="Chat").click()
    page.evaluate(WATCH_PANEL, ["Round 1 critique", "Revision 1", "Round 2 critique", "Revision 2"])
    send(page, "What is the capital of France?")
    page.wait_for_selector("#stop", state="visible")
    wait_turn_end(page)
    seen = page.evaluate("window.__seen")
    assert seen["Round 1 critique"] < seen["Revision 1"] < seen["Round 2 critique"] < seen["Revision 2"]
    assert "(revised) (revised)" in page.inner_text("#chat")

    page.wait_for_selector("#vote-box", state="visible")
    page.click("#vote-left-btn")
    page.wait_for_function("() => document.querySelector('#vote-reveal').textContent.includes('Left was')")
    page.wait_for_selector("#vote-left-btn", state="hidden")  # one vote per comparison
    page.screenshot(path=str(tmp_path / "finished.png"), full_page=True)

    assert app.rows("SELECT COUNT(*) FROM votes WHERE 0 IN (left_round, right_round)")[0][0] == 1
    stats_summary(page, "1 vote(s)")
    page.wait_for_selector("#stats-plot img")
    page.screenshot(path=str(tmp_path / "statistics.png"), full_page=True)
    assert (tmp_path / "finished.png").stat().st_size > 10_000


def test_html_and_script_in_prompts_and_model_output_stay_inert(page: Any, app: RunningApp) -> None:
    send(page, PAYLOAD)
    wait_turn_end(page)
    page.wait_for_selector("#vote-box", state="visible")  # the payload is on the vote sides too
    for link in page.query_selector_all("#chat a, #panel a, #vote-left a, #vote-right a"):
        link.click(no_wait_after=True, force=True)
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    dangerous = page.evaluate("""() => {
      const roots = ['#chat', '#panel', '#vote-left', '#vote-right'].map(s => document.querySelector(s));
      let found = [];
      for (const root of roots) for (const el of root.querySelectorAll('*')) {
        if (['SCRIPT', 'IFRAME'].includes(el.tagName)) found.push(el.tagName);
        for (const attr of el.attributes) {
          const value = attr.value.trim().toLowerCase();
          if (attr.name.startsWith('on') || value.startsWith('javascript:')) found.push(attr.name);
        }
      }
      return found;
    }""")
    assert dangerous == []
    assert "You said:" in page.inner_text("#chat")  # the text itself is shown


def test_stop_ends_the_turn_and_the_buttons_come_back(page: Any, app: RunningApp) -> None:
    send(page, "Take your time [slow]")
    page.wait_for_selector("#stop", state="visible")
    assert page.is_disabled("#regenerate") and page.is_disabled("#new-chat")
    page.wait_for_function("() => document.querySelector('#panel').textContent.includes('Round 1')", timeout=30_000)
    page.click("#stop")
    page.wait_for_function("() => document.querySelector('#panel').textContent.includes('Stopped by you')")
    page.wait_for_selector("#send", state="visible")
    assert page.is_enabled("#regenerate") and page.input_value("#prompt textarea") == ""
    assert app.rows("SELECT r.status FROM rounds r JOIN turns t ON t.id = r.turn_id "
                    "WHERE t.prompt = 'Take your time [slow]'") == [("cancelled",)]


@pytest.fixture(scope="module")
def edits_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app with REFINE_CNR_FORMAT=edits (the stand-in answers with a critique and edits)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with ScriptedServer(Script(delay=0.01)) as server:
        db_file = tmp_path_factory.mktemp("browser-edits") / "refine.db"
        with running_app(standin_settings(server.url, db_file, cnr_format="edits")) as running:
            yield running


# What the panel shows of the revisions and edits: marked words, list items, dropped items.
PANEL_CHANGES = """() => {
  const panel = document.querySelector('#panel');
  const texts = (sel) => [...panel.querySelectorAll(sel)].map(e => e.textContent);
  const ins = panel.querySelector('.refine-diff ins');
  return {ins: texts('.refine-diff ins'), del: texts('.refine-diff del'), edits: texts('.refine-edits li'),
          dropped: texts('.refine-edits .refine-edit-dropped s'),
          insBackground: ins ? getComputedStyle(ins).backgroundColor : null,
          scripts: panel.querySelectorAll('script, img').length};
}"""


def test_an_edits_turn_shows_its_edits_and_changes_and_the_toggle_gives_clean_text(
        browser: Any, edits_app: RunningApp) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(edits_app.url)
    page.wait_for_selector("#prompt textarea")
    send(page, "Where is Paris? <img src=x onerror=\"window.__pwned=1\"> <script>window.__pwned=2</script>")
    wait_turn_end(page)
    shown = page.evaluate(PANEL_CHANGES)
    assert shown["del"] == ["said"] and shown["ins"] == ["asked", "(revised)", "(revised)"], shown
    assert shown["insBackground"] not in (None, "rgba(0, 0, 0, 0)")  # the app's CSS marks them
    assert shown["edits"][0] == "replace «You said:» → «You asked:»" and len(shown["edits"]) == 4
    assert shown["dropped"] == ["replace «You said:» → «You asked:»"]
    assert "dropped: not found" in page.inner_text("#panel .refine-edit-dropped")
    assert shown["scripts"] == 0 and '<img src=x onerror="window.__pwned=1">' in page.inner_text("#panel .refine-diff")

    page.locator("#show-changes input").click()  # off: each revision as its clean text
    page.wait_for_function("() => !document.querySelector('#panel .refine-diff')")
    clean = page.evaluate(PANEL_CHANGES)
    assert clean["ins"] == clean["del"] == [] and len(clean["edits"]) == 4  # the edits stay listed
    assert "Revision 2\n\nYou asked: Where is Paris?" in page.inner_text("#panel")
    page.locator("#show-changes input").click()  # on again
    page.wait_for_selector("#panel .refine-diff ins")
    assert page.evaluate(PANEL_CHANGES)["ins"] == shown["ins"]
    assert page.evaluate("window.__pwned") is None
    context.close()


@pytest.fixture(scope="module")
def arena_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app on a database filled by `python -m refine revise --db` (nothing chatted)."""
    from tests.test_app_arena import revise_into_database

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with ScriptedServer(Script(delay=0)) as server:
        db_file = revise_into_database(server.url, tmp_path_factory.mktemp("browser-arena"))
        with running_app(standin_settings(server.url, db_file)) as running:
            yield running


def test_an_arena_vote_on_a_stored_revise_run_is_blind_and_revealed_after(
        browser: Any, arena_app: RunningApp, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(arena_app.url)
    page.get_by_role("tab", name="Arena").click()  # opening the tab draws a pair
    page.wait_for_selector("#arena-left-btn", state="visible")
    page.wait_for_function("() => document.querySelector('#arena-right').textContent.includes('You said:')")
    tab = page.inner_text("#arena-tab")
    assert page.inner_text("#arena-reveal").strip() == ""  # no names yet: not which version, not which model
    assert "standin" not in tab and not any(f"revision {k}" in tab.lower() for k in (1, 2))
    assert "You said:" in page.inner_text("#arena-left") and page.inner_text("#arena-prompt").strip()
    page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)

    page.click("#arena-right-btn")
    page.wait_for_function("() => document.querySelector('#arena-reveal').textContent.includes('B was')")
    page.wait_for_selector("#arena-right-btn", state="hidden")  # one vote per pair
    reveal = page.inner_text("#arena-reveal")
    assert "B is better" in reveal and "A was" in reveal
    assert arena_app.rows("SELECT blind, choice FROM votes") == [(1, "right")]

    page.click("#arena-next")  # the next pair, the buttons back, the reveal gone
    page.wait_for_selector("#arena-right-btn", state="visible")
    page.wait_for_function("() => !document.querySelector('#arena-reveal').textContent.includes('B was')")
    page.get_by_role("tab", name="Statistics").click()
    page.wait_for_function("() => document.querySelector('#stats-summary').textContent.includes('blind')")
    context.close()


def test_an_empty_send_changes_nothing(page: Any, app: RunningApp) -> None:
    send(page, "Keep this turn")
    wait_turn_end(page)
    page.wait_for_selector("#vote-box", state="visible")
    page.wait_for_timeout(1500)  # the turn's last updates (which reset the form for the new turn) land first
    page.click("#feedback-box")  # open the feedback form and start writing
    page.fill("#feedback-critique textarea", "a draft critique")
    page.wait_for_timeout(500)
    assert page.input_value("#feedback-critique textarea") == "a draft critique"
    panel, turns = page.inner_text("#panel"), app.rows("SELECT COUNT(*) FROM turns")
    for action in ("#send", "enter"):
        page.fill("#prompt textarea", "   ")
        page.press("#prompt textarea", "Enter") if action == "enter" else page.click("#send")
        page.wait_for_timeout(500)
        assert page.inner_text("#panel") == panel  # the last turn's Refinement panel stays
        assert page.input_value("#feedback-critique textarea") == "a draft critique"  # the form too
        assert page.is_visible("#vote-box") and page.is_visible("#send") and not page.is_visible("#stop")
    assert app.rows("SELECT COUNT(*) FROM turns") == turns


def test_the_vote_sides_start_at_the_top_keep_line_breaks_and_regenerate_says_it_samples(
        page: Any, app: RunningApp) -> None:
    send(page, "First line\nsecond line [lines]")  # each revision adds three lines: the sides differ in height
    wait_turn_end(page)
    page.wait_for_selector("#vote-box", state="visible")
    page.wait_for_function("() => document.querySelector('#vote-left').textContent.includes('You said')")
    boxes = page.evaluate("""() => ['#vote-left', '#vote-right'].map(s => {
      const box = document.querySelector(s).getBoundingClientRect();
      const text = document.querySelector(s + ' .message-row').getBoundingClientRect();
      return {top: box.top, height: box.height, textTop: text.top};
    })""")
    left, right = boxes
    assert left["top"] == right["top"] and left["textTop"] == right["textTop"], boxes  # no gap above either
    assert left["height"] == right["height"], boxes  # the shorter side fills its column
    sides = {page.inner_text("#vote-left"), page.inner_text("#vote-right")}
    original = next(t for t in sides if "Added" not in t)
    final = next(t for t in sides if "Added" in t)
    assert original.splitlines()[:2] == ["You said: First line", "second line [lines]"]
    assert [line for line in final.splitlines() if line.startswith("Added")] == [
        "Added line one", "Added line two", "Added line three (revised)"]  # round 2 appended its mark
    title = page.get_attribute("#regenerate", "title")
    assert "sampled" in title and "temperature 0.7" in title


def test_the_token_sliders_stop_at_the_models_context_windows(browser: Any, tmp_path: Path) -> None:
    """A TGI base model's window comes from its /info once a page is served; the CnR model's
    (an OpenAI-compatible server, which has no /info) from REFINE_CNR_CONTEXT."""
    from tests.standin_servers import tgi_server

    with tgi_server(max_total_tokens=300) as tgi, ScriptedServer(Script(delay=0)) as openai:
        settings = standin_settings(openai.url, tmp_path / "refine.db", base_backend="tgi", base_url=tgi.url,
                                    cnr_backend="openai", cnr_url=openai.url, cnr_context=200,
                                    max_new_tokens=512, cnr_max_new_tokens=768)
        with running_app(settings) as running:
            context = browser.new_context(viewport={"width": 1400, "height": 1100})
            page = context.new_page()
            page.goto(running.url)
            page.get_by_text("Refinement settings").click()
            page.wait_for_function("() => document.querySelector('#max-new-tokens input[type=range]')?.max === '300'")
            limits = page.evaluate("""() => ['#max-new-tokens', '#cnr-max-new-tokens'].map(s => {
              const range = document.querySelector(s + ' input[type=range]');
              return [range.max, range.value];
            })""")
            assert limits == [["300", "300"], ["200", "200"]]  # the settings' 512 and 768 capped too
            assert running.ctx.max_new_tokens("base") == 300  # the handler checks the same limit
            context.close()


# Records each new text of the progress line under the chat.
WATCH_PROGRESS = """() => {
  window.__progress = [];
  new MutationObserver(() => {
    const el = document.querySelector('#progress [data-testid=markdown]');  // not Gradio's (hidden) status text
    const text = el ? el.innerText.trim() : '';
    if (text && window.__progress[window.__progress.length - 1] !== text) window.__progress.push(text);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_the_progress_line_moves_through_the_phases(page: Any) -> None:
    page.evaluate(WATCH_PROGRESS)
    send(page, "Show me your progress please")
    wait_turn_end(page)
    page.wait_for_function("() => document.querySelector('#progress [data-testid=markdown]').textContent.includes('Done in')")
    seen = page.evaluate("window.__progress")
    phases = []
    for text in seen:
        phase = text.split(" · ")[0]
        if phase not in phases:
            phases.append(phase)
    assert phases[:5] == ["✍️ Writing the answer", "🔍 Critique 1 of 2", "✏️ Revision 1 of 2", "🔍 Critique 2 of 2",
                          "✏️ Revision 2 of 2"], seen
    assert all(" so far" in text for text in seen[:-1]), seen  # each with the time it has taken
    assert seen[-1].startswith("Done in 0:0") and "tokens/s" in seen[-1], seen


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app generating one turn at a time (as with a model in its own process)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with ScriptedServer(Script(delay=0.03)) as server:
        db_file = tmp_path_factory.mktemp("browser-line") / "refine.db"
        with running_app(standin_settings(server.url, db_file, concurrency=1)) as running:
            yield running


def test_a_waiting_visitor_sees_their_message_and_their_place_in_line(browser: Any,
                                                                       one_at_a_time: RunningApp) -> None:
    first, second = (browser.new_context(viewport={"width": 1400, "height": 1100}) for _ in range(2))
    pages = []
    for context in (first, second):
        page = context.new_page()
        page.goto(one_at_a_time.url)
        page.wait_for_selector("#prompt textarea")
        pages.append(page)
    busy, waiting = pages
    send(busy, "Take your time [slow]")
    busy.wait_for_function("() => document.querySelector('#progress [data-testid=markdown]').textContent.includes('Writing the answer')")
    send(waiting, "My question waits")
    waiting.wait_for_function("() => document.querySelector('#progress [data-testid=markdown]').textContent.includes('in line')")
    place = waiting.inner_text("#progress [data-testid=markdown]")
    assert "Your message is 1st in line: 1 turn is being answered" in place, place
    chat = waiting.inner_text("#chat")
    assert "My question waits" in chat and "1st in line" in chat  # the message stays on screen meanwhile
    waiting.wait_for_function("() => /Waiting 0:0[2-9]/.test(document.querySelector('#progress [data-testid=markdown]').textContent)")
    assert one_at_a_time.rows("SELECT COUNT(*) FROM turns WHERE prompt = 'My question waits'") == [(0,)]

    busy.click("#stop")  # the first turn ends: the waiting one starts at once
    waiting.wait_for_function("() => document.querySelector('#progress [data-testid=markdown]').textContent.includes('Writing the answer')"
                              " || document.querySelector('#progress [data-testid=markdown]').textContent.includes('Critique')")
    wait_turn_end(waiting)
    assert "You said: My question waits" in waiting.inner_text("#chat")
    for context in (first, second):
        context.close()


def test_the_visitor_continues_from_the_original_answer(page: Any, app: RunningApp) -> None:
    import json

    send(page, "Keep the original one")
    wait_turn_end(page)
    page.wait_for_selector("#continue-from", state="visible")
    assert page.input_value("#continue-from input") == "Revision 2 (latest)"  # by default, the latest accepted
    assert page.inner_text("#chat").strip().endswith("You said: Keep the original one (revised) (revised)")
    page.click("#continue-from input")
    page.get_by_role("option", name="Original answer").click()
    page.wait_for_function("() => document.querySelector('#chat').innerText.trim()"
                           ".endsWith('You said: Keep the original one')")
    send(page, "What next?")
    page.wait_for_function("() => document.querySelector('#chat').innerText.includes('You said: What next?')")
    wait_turn_end(page)
    stored = json.loads(app.rows("SELECT messages FROM turns WHERE prompt = 'What next?'")[0][0])
    assert [m["content"] for m in stored] == ["Keep the original one", "You said: Keep the original one",
                                              "What next?"]  # the next turn continued from the original
    chat = page.inner_text("#chat")
    assert "You said: Keep the original one\n" in chat + "\n" and "(revised) (revised)\n\nWhat next?" not in chat
