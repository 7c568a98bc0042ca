"""Tooltips of the app's buttons (Gradio's Button has no tooltip of its own): each element's
`title`, set on the page by a script that also sets it again whenever Gradio re-renders it."""

from __future__ import annotations

import json

from ui.context import REGENERATE_TEMPERATURE

TOOLTIPS: dict[str, str] = {
    "regenerate": (f"Answer your last message again, as a new turn. The new answer is sampled (temperature "
                   f"{REGENERATE_TEMPERATURE:g}, or yours when it is above 0), so it can differ from the last one; "
                   "at temperature 0 the model would write the same answer again."),
}


def tooltips_js(tooltips: dict[str, str] = TOOLTIPS) -> str:
    """A page script (the body of a `() => {...}` function) that gives each element id its tooltip."""
    return f"""
  const tips = {json.dumps(tooltips)};
  const apply = () => {{
    for (const [id, tip] of Object.entries(tips)) {{
      const el = document.getElementById(id);
      if (el && el.title !== tip) el.title = tip;
    }}
  }};
  new MutationObserver(apply).observe(document.body, {{subtree: true, childList: true}});
  apply();
"""
