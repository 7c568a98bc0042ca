"""What keeps the page safe to open whatever a model or a visitor writes: no remote fetch, no
form, no script; text shown as it was stored; errors without internal addresses.

How Gradio 6.31 renders a Chatbot message: marked turns the Markdown into HTML, `allow_tags`
then escapes the listed tags (`<form` becomes the text `&lt;form`, so the tag shows as text),
and a sanitizer drops script, event handlers, `javascript:` URLs and iframes. That sanitizer
keeps forms, inputs, buttons, images, video, audio and `style` attributes, so a model could
make the page fetch a tracking pixel or submit a form off-site. Two layers close that:

- SHOWN_AS_TEXT, passed as the Chatbots' `allow_tags`: every tag that can fetch, embed, submit
  or restyle the page is escaped and shows as text (a Markdown image shows as its `<img src=…>`
  text, so its address is visible but never loaded). The message's source is not changed, so
  the copy button still copies the stored text byte for byte.
- A Content-Security-Policy header on every response (`PageGuard`): images only from the app
  itself (or the hosts in REFINE_ALLOWED_IMAGE_HOSTS), no media, objects or frames from
  elsewhere, forms submit nowhere else. It also covers what the tag list cannot: CSS `url()`
  in a `style` attribute, SVG images, Mermaid labels.

`button` and `svg` cannot be in that list: Gradio's own code-block copy button is a `<button>`
with an `<svg>` icon, written into the same HTML before `allow_tags` applies. A button does
nothing by itself (no form can exist, no fetch), and INERT_BUTTONS, run on the page, replaces
every button of model or visitor text with its text as soon as it appears. SVG stays (the
sanitizer keeps no script, `use`, `foreignObject` or style element in it; its `<image>` is in
the list, and the policy blocks any remote fetch it could still make).

Plain `gr.Markdown` has no `allow_tags`, so model text is only ever shown in Chatbots (the vote
sides too); Markdown components show the app's own text.

The panel's revisions as changes and its edit lists (ui/diff.py) are the app's own HTML around
model text escaped by `html_text`: there the model's text is never Markdown or markup at all.
"""

from __future__ import annotations

import html
import re
from typing import Any

from refine.settings import Settings

# Tags escaped to text in model and visitor text. Not the ones Markdown itself or Gradio's code
# blocks produce (p, a, em, code, pre, lists, tables, headings, blockquote, hr, br, del, div,
# span, button, svg, path), except `img` (an image) and `input` (a task-list checkbox then shows
# as text: a small price for never an input).
SHOWN_AS_TEXT: tuple[str, ...] = (
    # forms and their controls (buttons: see INERT_BUTTONS)
    "form", "input", "select", "option", "optgroup", "textarea", "datalist", "keygen", "output",
    "fieldset", "legend", "label", "isindex",
    # embedded content and media (each can fetch)
    "iframe", "frame", "frameset", "object", "embed", "applet", "param", "portal", "fencedframe",
    "video", "audio", "track", "bgsound", "canvas", "map", "area",
    # SVG's image elements (they fetch) and MathML (it can carry links)
    "image", "feimage", "math",
    # the document and its metadata, styles, scripts
    "html", "head", "body", "base", "link", "meta", "style", "script", "noscript", "template", "slot",
    "title", "xmp", "plaintext", "noembed", "noframes", "marquee", "dialog",
)
IMAGE_TAGS: tuple[str, ...] = ("img", "picture", "source")


def shown_as_text(settings: Settings) -> list[str]:
    """The Chatbots' `allow_tags`: SHOWN_AS_TEXT, plus the image tags unless image hosts are
    allowed (then images load from those hosts only, by the Content-Security-Policy)."""
    return [*SHOWN_AS_TEXT, *(() if settings.image_hosts else IMAGE_TAGS)]


def content_security_policy(settings: Settings) -> str:
    """The policy of every page: what a page may load or submit besides the app itself."""
    images = " ".join(("'self'", "data:", "blob:", *settings.image_hosts))
    return "; ".join((
        f"img-src {images}",
        "media-src 'self' data: blob:",
        "object-src 'none'",
        "frame-src 'self'",
        "form-action 'self'",
        "base-uri 'self'",
    ))


# Run on the page (launch(js=...)): a button inside rendered chat text that is not Gradio's own
# code-block copy button becomes its text. Buttons neither fetch nor submit (no form can render),
# so replacing them right after they appear leaves no window for harm.
INERT_BUTTONS = """() => {
  const own = (b) => b.classList.contains('copy_code_button') && b.parentElement
    && b.parentElement.classList.contains('code_wrap');
  const inert = () => {
    for (const b of document.querySelectorAll('.message-wrap .md button')) {
      if (!own(b)) b.replaceWith(document.createTextNode(b.outerHTML));
    }
  };
  new MutationObserver(inert).observe(document.body, {subtree: true, childList: true});
  inert();
}"""

SECURITY_HEADERS = {
    "referrer-policy": "same-origin",  # a link in an answer does not tell its site where it was clicked
    "x-content-type-options": "nosniff",
}


def exact(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages whose text Gradio shows as it is: a plain string content goes through
    `inspect.cleandoc` in Gradio's Chatbot (code loses its indentation, on the page and in the
    copy button), a `{"type": "text"}` part does not."""
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m.get("content"), str) else m
            for m in messages]


def html_text(text: str) -> str:
    """Untrusted text as HTML that shows it literally: `&`, `<`, `>` and quotes escaped (so no
    tag, entity or attribute of it is live), line breaks as `<br>`. The result has no line
    break at all, so inside a Markdown HTML block (which a blank line would end) it stays HTML
    and none of it is read as Markdown. For the app's own markup around model text (ui/diff.py)."""
    return html.escape(text, quote=True).replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


HIDDEN = "(address hidden)"
_URL = r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+"
_AT_URL = re.compile(r"\s+at\s+" + _URL)  # "TGI at http://10.0.0.5:8080" (how the backends name a server)
_ANY_URL = re.compile(_URL)
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.])")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\](?::\d{1,5})?")
_ADDRESS_PAIR = re.compile(r"\(\s*'[^']*'\s*,\s*\d{1,5}\s*\)")  # Python's ('10.0.0.5', 8080)
_HOST_PORT = re.compile(r"(?<![\w.-])(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):\d{2,5}(?![\w.])")


def public_message(text: str) -> str:
    """An error message fit for the page: the model server's address (URLs, IP addresses,
    host:port) taken out; the reason stays. The full message goes to the log and the database."""
    text = _AT_URL.sub("", text)
    text = _ADDRESS_PAIR.sub(HIDDEN, text)
    text = _ANY_URL.sub(HIDDEN, text)
    text = _IPV6.sub(HIDDEN, text)
    text = _IPV4.sub(HIDDEN, text)
    return _HOST_PORT.sub(HIDDEN, text)
