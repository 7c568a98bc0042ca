"""Turning session state and turn views into what the components show: chat messages (dicts in
Gradio's messages format), the refinement panel, vote labels, statistics rows. Pure functions.

Everything here is rendered by Gradio's Markdown with HTML sanitizing on: model output and user
text may contain markup, but never runs script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from db.stats import HeadToHead
from refine.acceptance import RULE_TEXT
from refine.cnr_format import FORMAT_VERSIONS
from refine.winrate import MIN_VOTES, WinRate, too_few_text, too_few_votes
from ui.diff import diff_html, edits_html, edits_summary
from ui.safety import public_message
from ui.session import ChatSession, Pair, VoteState
from ui.view import RoundView, TurnView

ChatMessage = dict[str, Any]

ERROR_HINTS = {
    "unavailable": "The model server could not be reached.",
    "timeout": "The model server took too long to answer.",
    "overloaded": "The model server is overloaded; try again in a moment.",
    "context_too_long": "The conversation is too long for the model's context window: "
                        "shorten the message or start a new chat.",
    "bad_request": "The model server refused the request.",
    "stream_broken": "The model server's answer broke off.",
}
STOP_NOTES = {
    "nothing_to_fix": "✋ Stopped early after round {k}: the critique found nothing left to fix.",
    "unchanged": "✋ Stopped after round {k}: the revision changed nothing, so the answer stands.",
    "rejected": "✋ Stopped after round {k}: its revision was not sound, so the answer stands.",
    "max_rounds": "✅ Done: {k} round(s) of critique and revision.",
    "cancelled": "⏹ Stopped by you.",
}
THINKING = "…"


def notice(text: str) -> ChatMessage:
    """A message from the app itself in the panel (e.g. why a prompt was not sent)."""
    return {"role": "assistant", "content": text}


def error_text(kind: str, message: str) -> str:
    """A backend failure as one clear sentence plus the details."""
    if kind == "cancelled":
        return "⏹ Stopped by you."
    hint = ERROR_HINTS.get(kind, "Something went wrong.")
    message = public_message(message)  # the page gets the reason, not the server's address
    return f"⚠️ **{hint}**" + (f" ({message})" if message else "")


def chat_messages(session: ChatSession, prompt: str | None = None, view: TurnView | None = None) -> list[ChatMessage]:
    """The chat: finished exchanges, then the turn in progress (its base answer streaming)."""
    messages: list[ChatMessage] = []
    for ex in session.exchanges:
        messages += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.shown or THINKING}]
    if prompt is not None:
        messages.append({"role": "user", "content": prompt})
        if view is not None:
            messages.append({"role": "assistant", "content": view.last_good() or THINKING})
    return messages


def _candidate_messages(r: RoundView) -> list[ChatMessage]:
    """The candidates of a round that sampled several, collapsed: each with what became of it."""
    if len(r.candidates) <= 1 and not any(c.verdicts for c in r.candidates):
        return []
    lines = []
    for i, c in enumerate(r.candidates):
        what = ("chosen" if i == r.candidate else "") or (
            "nothing to fix" if c.nothing_to_fix else
            f"rejected: {RULE_TEXT.get(c.rejection or '', c.rejection)}" if c.status == "rejected" else c.status)
        lines.append(f"**Candidate {i + 1}** ({what})\n\n{c.revision or c.critique or '_(empty)_'}")
    return [{"role": "assistant", "content": "\n\n---\n\n".join(lines),
             "metadata": {"title": f"{len(r.candidates)} candidates · round {r.index}", "status": "done"}}]


def _revision(r: RoundView, previous: str, show_changes: bool) -> str:
    """A revision's text: its changes against `previous` (the version it revised), or clean."""
    if not r.revision:
        return THINKING
    if not show_changes:
        return r.revision
    # a rewrite still being written: the old text after its end is not deleted (yet)
    open_end = r.phase == "revision" and r.cnr_format != FORMAT_VERSIONS["edits"]
    return diff_html(previous, r.revision, open_end=open_end)


def _round_messages(r: RoundView, previous: str, previous_name: str, show_changes: bool) -> list[ChatMessage]:
    """A round: its critique (collapsible), its edits (the `edits` format), its revision (shown
    as its changes against `previous`, named `previous_name`, when `show_changes`), or why it
    was not used."""
    title = f"Critique · round {r.index}" + (f" · {r.phase}" if r.phase in ("failed", "rejected") else "")
    if r.candidate and r.running:
        title += f" · candidate {r.candidate + 1}"
    meta: dict[str, Any] = {"title": title, "status": "pending" if r.phase == "critique" else "done"}
    if r.duration is not None:
        meta["duration"] = round(r.duration, 1)
    out: list[ChatMessage] = [{"role": "assistant", "content": r.critique or THINKING, "metadata": meta}]
    if r.edits and r.phase != "rejected":
        heading = f"**Edits · round {r.index}** ({edits_summary(r.edits)})"
        out.append({"role": "assistant", "content": f"{heading}\n\n{edits_html(r.edits)}"})
    changes = f" · changes to {previous_name}" if show_changes and r.revision else ""
    if r.phase == "complete" and r.nothing_to_fix:
        out.append({"role": "assistant", "content": f"**Revision {r.index}:** nothing to fix, the answer stays."})
    elif r.phase == "rejected":
        why = RULE_TEXT.get(r.rejection or "", r.rejection or "it was rejected")
        out.append({"role": "assistant", "content": f"↩️ **Revision {r.index} was not used:** {why}"
                    + (f" ({r.error})" if r.error else "") + ". The previous answer stands."})
        if r.revision:
            out.append({"role": "assistant", "content": r.revision,
                        "metadata": {"title": f"Rejected revision {r.index}", "status": "done"}})
    elif r.phase == "judging":
        out.append({"role": "assistant", "content": f"**Revision {r.index}** (the judge is comparing it with the "
                                                    f"current answer){changes}\n\n"
                                                    f"{_revision(r, previous, show_changes)}"})
    elif r.phase in ("revision", "complete"):
        out.append({"role": "assistant",
                    "content": f"**Revision {r.index}**{changes}\n\n{_revision(r, previous, show_changes)}"})
    elif r.phase == "failed":
        unreadable = (r.error or "").startswith("unparseable output")
        why = "the reviewer's output could not be read" if unreadable else "the reviewer model did not answer"
        out.append({"role": "assistant", "content": f"⚠️ **Round {r.index} failed:** {why}, so the answer was kept."})
        out.append({"role": "assistant", "content": r.error or "unknown error",
                    "metadata": {"title": f"Why round {r.index} failed", "status": "done"}})
    elif r.phase == "cancelled":
        out.append({"role": "assistant", "content": f"⏹ Round {r.index} was stopped. The previous answer stands."})
    return out + _candidate_messages(r)


def panel_messages(view: TurnView | None, *, show_changes: bool = True) -> list[ChatMessage]:
    """The refinement panel: the original answer (collapsed), each round's critique (a
    collapsible thought, pending while it streams), its edits, and its revision (with
    `show_changes`, as the words it inserted and deleted in the version it revised), then how
    refinement ended."""
    if view is None:
        return []
    if view.error is not None:
        return [{"role": "assistant", "content": error_text(view.error.kind, view.error.message)}]
    if not view.base_done:
        return [{"role": "assistant", "content": "Waiting for the answer…"}]
    out: list[ChatMessage] = []
    if view.thinking:
        out.append({"role": "assistant", "content": view.thinking,
                    "metadata": {"title": "Reasoning of the answering model", "status": "done"}})
    ending = {"length": " · cut off at the token limit", "looping": " · stopped: it repeated itself"}
    out.append({
        "role": "assistant", "content": view.base_text or "_(empty answer)_",
        "metadata": {"title": f"Original answer · {view.base_model}{ending.get(view.base_finish or '', '')}",
                     "status": "done"},
    })
    previous, previous_name = view.base_text, "the original answer"  # what the next round revises
    for r in view.rounds:
        out += _round_messages(r, previous, previous_name, show_changes)
        if r.phase == "complete" and not r.nothing_to_fix:
            previous, previous_name = r.revision, f"revision {r.index}"
    if view.stop_reason in STOP_NOTES:
        out.append({"role": "assistant", "content": STOP_NOTES[view.stop_reason].format(k=len(view.rounds))})
    if view.save_error:
        out.append({"role": "assistant", "content": f"⚠️ **This turn could not be saved:** {view.save_error}"})
    return out


def version_name(index: int, versions: dict[int, str]) -> str:
    """'the original answer', 'revision 2', 'revision 3 (final)'."""
    if index == 0:
        return "the original answer"
    return f"revision {index}" + (" (final)" if index == max(versions) else "")


def pair_label(pair: Pair, versions: dict[int, str]) -> str:
    a, b = (version_name(i, versions) for i in pair)
    return f"{a[0].upper()}{a[1:]} vs {b}"


def pair_value(pair: Pair) -> str:
    return f"{pair[0]}-{pair[1]}"


def parse_pair(value: str) -> Pair:
    a, _, b = value.partition("-")
    return int(a), int(b)


def reveal(state: VoteState) -> str:
    """After a vote: which version was on which side."""
    assert state.left is not None and state.right is not None
    choice = {"left": "left", "right": "right", "tie": "a tie", "both_bad": "both bad"}[state.voted or ""]
    return (f"Thanks, your vote (**{choice}**) is saved. Left was **{version_name(state.left, state.versions)}**, "
            f"right was **{version_name(state.right, state.versions)}**.")


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"


STATS_HEADERS = ["CnR model", "round", "win rate vs original", "95% CI", "wins", "ties", "losses", "both bad", "votes",
                 "turns"]
_RATE_HEADERS = ["round", "win rate vs original", "95% CI", "wins", "ties", "losses", "both bad", "votes", "turns"]


def ci_text(rate: WinRate) -> str:
    """The CI cell: the interval, or that a cell has too few votes for one (refine.winrate.MIN_VOTES)."""
    if too_few_votes(rate):
        return too_few_text(rate.n)
    return f"{_pct(rate.ci_low)} – {_pct(rate.ci_high)}"


def stats_rows(rates: list[WinRate]) -> list[list[Any]]:
    """Rows of a statistics table (ties count half; both-bad votes are left out of the rate)."""
    return [[r.round, _pct(r.rate), ci_text(r), r.wins, r.ties, r.losses,
             r.both_bad, r.n + r.both_bad, r.units] for r in rates]


def model_stats_rows(by_model: dict[str, list[WinRate]]) -> list[list[Any]]:
    """The statistics table's rows: each CnR model's rounds (the blind votes)."""
    return [[public_message(model), *row] for model, rates in by_model.items() for row in stats_rows(rates)]


def _votes(rates: list[WinRate]) -> int:
    return sum(r.n + r.both_bad for r in rates)


def stats_summary(blind: dict[str, list[WinRate]], not_blind: list[WinRate], head_to_head: Sequence[HeadToHead] = ()) -> str:
    """What the statistics rest on: the blind votes (the Arena; the headline) and, counted
    apart, the votes cast beside the Refinement panel, which names the versions."""
    blind_votes = sum(_votes(rates) for rates in blind.values())
    other_votes = _votes(not_blind)
    across = sum(h.rate.n + h.rate.both_bad for h in head_to_head)
    if not (blind_votes or other_votes or across):
        return "No votes yet: judge a few pairs in the Arena tab (blind votes), or vote beside an answer in the Chat tab."
    lines = [f"**{blind_votes}** blind vote(s) from the Arena comparing a revision with the original answer: the plot "
             "and the table." if blind_votes else
             "No blind votes comparing a revision with the original answer yet: judge a few pairs in the Arena tab."]
    if other_votes:
        lines.append(f"**{other_votes}** vote(s) cast beside the Refinement panel comparing a revision with the "
                     "original answer: not blind (the panel names the versions), so counted apart, below the table.")
    if across:
        lines.append(f"**{across}** blind vote(s) between two critique-and-revise models: below the table.")
    lines.append(f"A round gets a 95% confidence interval from {MIN_VOTES} votes on (wins, ties and losses); "
                 "with fewer, the table says there are too few votes.")
    return "\n\n".join(lines)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)])


def code_span(name: str) -> str:
    """A model name for the app's Markdown: without a server's address, in a code span."""
    return "`" + " ".join(public_message(name).replace("`", "'").split()) + "`"


def stats_details(not_blind: list[WinRate], head_to_head: Sequence[HeadToHead], outcomes: str = "") -> str:
    """Below the table: the votes that are not blind, the CnR models head to head (blind), and
    what became of the rounds."""
    parts = []
    if not_blind:
        parts.append("#### Not blind: votes beside the Refinement panel\n\nThe panel above these votes names the "
                     "versions, so they may lean towards the later one; they are not in the plot's blind lines or "
                     "the table above.\n\n" + markdown_table(_RATE_HEADERS, stats_rows(not_blind)))
    if head_to_head:
        rows = [[code_span(h.first), code_span(h.second), *stats_rows([h.rate])[0]] for h in head_to_head]
        parts.append("#### Critique-and-revise models head to head (blind)\n\nThe same answer revised by two "
                     "models, compared in the Arena: the first model's win rate against the second's, at the same "
                     "round (95% CI over prompts).\n\n"
                     + markdown_table(["first", "second", "round", "first's win rate", "95% CI", "wins", "ties",
                                       "losses", "both bad", "votes", "prompts"], rows))
    if outcomes:
        parts.append(f"#### What became of the rounds\n\n{outcomes}")
    return "\n\n".join(parts)
