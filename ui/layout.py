"""The components of the app and where they sit (no event wiring here)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from refine.winrate import MIN_VOTES
from ui.arena import ArenaLayout, build_arena
from ui.context import REGENERATE_TEMPERATURE, AppContext
from ui.render import STATS_HEADERS
from ui.safety import public_message, shown_as_text
from ui.session import ChatSession, VoteState

INTRO = (
    "# Refine\n"
    "Ask something: the base model answers, then a small *critique-and-revise* model writes what is "
    "wrong with the answer and revises it, round after round. Then tell us which version is better."
)
CSS = """
#vote-left, #vote-right { min-height: 6em; }
/* The two sides of a comparison start at the top: the label above each side keeps its height, the
   side fills the rest of its column (no gap above the shorter one). */
.refine-side-label { flex-grow: 0 !important; }
#vote-left button[aria-label="Clear"], #vote-right button[aria-label="Clear"] { display: none; }
#arena-prompt button[aria-label="Clear"], #arena-left button[aria-label="Clear"],
#arena-right button[aria-label="Clear"] { display: none; }
#progress { min-height: 1.5em; color: var(--body-text-color-subdued); }
#progress p { margin: 0; }
.refine-banner { border: 1px solid var(--color-accent); border-radius: 8px; padding: 0 1em; }
/* The panel's revisions as changes (ui/diff.py): inserted and deleted words, and each round's edits. */
#panel .refine-diff { white-space: pre-wrap; }
#panel .refine-diff ins { text-decoration: none; background: rgba(46, 160, 67, 0.22); border-radius: 2px; }
#panel .refine-diff del { background: rgba(248, 81, 73, 0.18); color: var(--body-text-color-subdued);
                          border-radius: 2px; }
#panel .refine-edits .refine-quote { white-space: pre-wrap; font-family: var(--font-mono); }
#panel .refine-edits .refine-edit-dropped { color: var(--body-text-color-subdued); }
"""


@dataclass
class Layout:
    """Every component an event reads or writes."""

    chatbot: gr.Chatbot
    progress: gr.Markdown  # where the turn is (ui.progress), or its place in line (ui.waiting)
    continue_from: gr.Dropdown  # the version of the last answer the conversation continues from (ui.continuation)
    prompt: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    new_chat: gr.Button
    panel: gr.Chatbot
    show_changes: gr.Checkbox  # revisions in the panel as their changes, or as clean text
    rounds: gr.Slider
    stop_early: gr.Checkbox
    temperature: gr.Slider
    max_new_tokens: gr.Slider
    cnr_max_new_tokens: gr.Slider
    select: gr.Radio
    vote_box: gr.Column
    pair: gr.Dropdown
    left: gr.Chatbot  # Chatbots, not Markdown: only a Chatbot can show tags as text (see ui/safety.py)
    right: gr.Chatbot
    vote_row: gr.Row  # the vote buttons, hidden once this comparison got its vote
    vote_buttons: dict[str, gr.Button]  # choice -> button
    reveal: gr.Markdown
    feedback_box: gr.Accordion
    fb_version: gr.Dropdown
    fb_critique: gr.Textbox
    fb_edit: gr.Textbox
    fb_submit: gr.Button
    fb_status: gr.Markdown
    stats_tab: gr.Tab
    stats_refresh: gr.Button
    stats_summary: gr.Markdown
    stats_plot: gr.Image
    stats_table: gr.Dataframe
    stats_details: gr.Markdown  # the votes that are not blind, and CnR models head to head
    data_token: gr.Textbox | None
    data_button: gr.Button | None
    data_links: gr.Markdown | None
    data_status: gr.Markdown | None
    chat_state: gr.State
    vote_state: gr.State
    pending: gr.State  # a prompt taken from the box, on its way to the turn
    arena: ArenaLayout

    @property
    def controls(self) -> list[gr.components.Component]:
        return [self.rounds, self.stop_early, self.temperature, self.max_new_tokens, self.cnr_max_new_tokens,
                self.select]

    @property
    def vote_area(self) -> list[gr.components.Component]:
        return [self.vote_box, self.pair, self.left, self.right, self.vote_row, self.reveal]

    @property
    def feedback_area(self) -> list[gr.components.Component]:
        return [self.feedback_box, self.fb_version, self.fb_critique, self.fb_edit, self.fb_status]


def _chat_column(ctx: AppContext) -> dict:
    chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chat", buttons=["copy"],
                         allow_tags=shown_as_text(ctx.settings), placeholder="Ask anything to start.")
    continue_from = gr.Dropdown([], label="Continue the conversation from", visible=False, elem_id="continue-from",
                                info="The chat shows this version of the last answer, and your next message "
                                     "continues from it.",
                                allow_custom_value=True)  # checked against the turn by the handler
    progress = gr.Markdown(elem_id="progress", elem_classes="refine-progress")
    prompt = gr.Textbox(show_label=False, placeholder="Type a message and press Enter (Shift+Enter for a new line)",
                        lines=1, max_lines=10, elem_id="prompt")
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="send")
        stop = gr.Button("Stop", variant="stop", visible=False, elem_id="stop")
        regenerate = gr.Button("Regenerate", elem_id="regenerate")
        new_chat = gr.Button("New chat", elem_id="new-chat")
    return dict(chatbot=chatbot, continue_from=continue_from, progress=progress, prompt=prompt, send=send, stop=stop, regenerate=regenerate,
                new_chat=new_chat)


def _controls(ctx: AppContext) -> dict:
    s = ctx.settings
    with gr.Accordion("Refinement settings", open=False):
        gr.Markdown(ctx.models_line)
        with gr.Row():
            rounds = gr.Slider(1, ctx.max_rounds, value=min(s.rounds, ctx.max_rounds), step=1, precision=0,
                               label="Rounds")
            stop_early = gr.Checkbox(value=s.stop_early, label="Stop early when there is nothing left to fix")
            temperature = gr.Slider(0.0, 2.0, value=s.temperature, step=0.05, label="Temperature (0 = greedy)",
                                    elem_id="temperature",
                                    info=f"Regenerate samples its answer at {REGENERATE_TEMPERATURE:g} when this is 0.")
        with gr.Row():
            most, cnr_most = ctx.max_new_tokens("base"), ctx.max_new_tokens("cnr")
            # Up to the model's context window (ui.model_limits), also when a page load learns it later.
            max_new_tokens = gr.Slider(1, most, value=min(s.max_new_tokens, most), step=1, precision=0,
                                       label="Max new tokens · answer", elem_id="max-new-tokens")
            cnr_max_new_tokens = gr.Slider(1, cnr_most, value=min(s.cnr_max_new_tokens, cnr_most), step=1,
                                           precision=0, label="Max new tokens · critique + revision",
                                           elem_id="cnr-max-new-tokens")
        judge = public_message(ctx.selector.name) if ctx.selector else "no judge configured"
        select = gr.Radio([("Every sound revision", "none"), ("Only if the judge prefers it", "judge")],
                          value=s.select if ctx.selector else "none", interactive=ctx.selector is not None,
                          label="Accept a revision", elem_id="select",
                          info=f"A revision that is cut off, loops, collapses the answer or carries format text is "
                               f"never used. The judge ({judge}) must also prefer it in both orders when chosen; "
                               "a 135M judge is not a meaningful one.")
    return dict(rounds=rounds, stop_early=stop_early, temperature=temperature, max_new_tokens=max_new_tokens,
                cnr_max_new_tokens=cnr_max_new_tokens, select=select)


def _side(ctx: AppContext, elem_id: str) -> gr.Chatbot:
    """One side of the blind comparison: the version's text, rendered as the chat renders it."""
    return gr.Chatbot(show_label=False, elem_id=elem_id, layout="panel", height=None, min_height=96,
                      max_height=480, buttons=[], feedback_options=None, autoscroll=False, line_breaks=True,
                      allow_tags=shown_as_text(ctx.settings))


def _voting(ctx: AppContext) -> dict:
    with gr.Column(visible=False, elem_id="vote-box") as vote_box:
        gr.Markdown("### Which answer is better?\nThe two versions are shown in random order; you learn which is "
                    "which after voting. This vote is not blind (the Refinement panel names the versions) and is "
                    "counted apart; the Arena tab asks for blind votes.")
        pair = gr.Dropdown(label="Compare", choices=[], interactive=True, elem_id="vote-pair")
        with gr.Row(equal_height=True):
            with gr.Column():
                gr.Markdown("**Left**", elem_classes="refine-side-label")
                left = _side(ctx, "vote-left")
            with gr.Column():
                gr.Markdown("**Right**", elem_classes="refine-side-label")
                right = _side(ctx, "vote-right")
        with gr.Row() as vote_row:
            buttons = {
                "left": gr.Button("⬅ Left is better", elem_id="vote-left-btn"),
                "right": gr.Button("Right is better ➡", elem_id="vote-right-btn"),
                "tie": gr.Button("Tie", elem_id="vote-tie-btn"),
                "both_bad": gr.Button("Both bad", elem_id="vote-both-bad-btn"),
            }
        reveal = gr.Markdown(elem_id="vote-reveal")
    return dict(vote_box=vote_box, pair=pair, left=left, right=right, vote_row=vote_row, vote_buttons=buttons,
                reveal=reveal)


def _feedback() -> dict:
    with gr.Accordion("Write your own critique, or improve the answer", open=False, visible=False,
                      elem_id="feedback-box") as feedback_box:
        gr.Markdown("Your critique and your improved answer become training data for the next "
                    "critique-and-revise model.")
        fb_version = gr.Dropdown(label="Answer", choices=[], interactive=True, elem_id="feedback-version",
                                 allow_custom_value=True)  # checked against the turn by the handler
        fb_critique = gr.Textbox(label="Your critique: what is wrong or missing?", lines=3, elem_id="feedback-critique")
        fb_edit = gr.Textbox(label="Your improved answer (edit it)", lines=8, elem_id="feedback-edit")
        fb_submit = gr.Button("Save feedback", elem_id="feedback-submit")
        fb_status = gr.Markdown(elem_id="feedback-status")
    return dict(feedback_box=feedback_box, fb_version=fb_version, fb_critique=fb_critique, fb_edit=fb_edit,
                fb_submit=fb_submit, fb_status=fb_status)


def _statistics() -> dict:
    with gr.Tab("Statistics", id="stats", elem_id="stats-tab") as stats_tab:
        gr.Markdown("Win rate of each round's revision against the original answer, per critique-and-revise "
                    "model, from the blind votes of the Arena (ties count half; 95% bootstrap confidence intervals "
                    f"over turns, from {MIN_VOTES} votes on). Votes cast beside the Refinement panel are not blind: they are shown apart, "
                    "below the table.")
        stats_refresh = gr.Button("Refresh", elem_id="stats-refresh")
        stats_summary = gr.Markdown(elem_id="stats-summary")
        stats_plot = gr.Image(label="Win rate vs round", type="pil", interactive=False, elem_id="stats-plot",
                              buttons=["download"])
        stats_table = gr.Dataframe(headers=STATS_HEADERS, interactive=False, elem_id="stats-table")
        stats_details = gr.Markdown(elem_id="stats-details")
    return dict(stats_tab=stats_tab, stats_refresh=stats_refresh, stats_summary=stats_summary,
                stats_plot=stats_plot, stats_table=stats_table, stats_details=stats_details)


def _data(ctx: AppContext) -> dict:
    if ctx.settings.admin_token is None:
        return dict(data_token=None, data_button=None, data_links=None, data_status=None)
    ttl = f"{ctx.settings.export_ttl_minutes:g}"
    with gr.Tab("Data", id="data", elem_id="data-tab"):
        gr.Markdown("Downloads for the operator: votes as preference pairs (JSONL), feedback as training "
                    f"records (JSONL), and every table (CSV). Each link works once, for {ttl} minutes, while "
                    "this page stays open; the files are deleted after.")
        data_token = gr.Textbox(label="Admin token", type="password", elem_id="data-token")
        data_button = gr.Button("Prepare downloads", elem_id="data-button")
        data_status = gr.Markdown(elem_id="data-status")
        data_links = gr.Markdown(elem_id="data-links")
    return dict(data_token=data_token, data_button=data_button, data_links=data_links, data_status=data_status)


def build_layout(ctx: AppContext) -> Layout:
    """Create the components inside the current gr.Blocks context."""
    if ctx.banner:
        gr.Markdown(ctx.banner, elem_id="banner", elem_classes="refine-banner")
    gr.Markdown(INTRO)
    parts: dict = {}
    with gr.Tabs():
        with gr.Tab("Chat", id="chat"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=1):
                    parts |= _chat_column(ctx)
                with gr.Column(scale=1):
                    parts["panel"] = gr.Chatbot(
                        label="Refinement", height=460, layout="panel", elem_id="panel", buttons=["copy_all"],
                        allow_tags=shown_as_text(ctx.settings),
                        placeholder="Each round's critique and revision streams in here.")
                    parts["show_changes"] = gr.Checkbox(
                        value=True, label="Show changes", elem_id="show-changes",
                        info="Each revision as the words it inserted and deleted in the version it revised; "
                             "off: the revision's clean text.")
            parts |= _controls(ctx)
            parts |= _voting(ctx)
            parts |= _feedback()
        parts["arena"] = build_arena(ctx)
        parts |= _statistics()
        parts |= _data(ctx)
    return Layout(**parts, chat_state=gr.State(ChatSession()), vote_state=gr.State(VoteState()),
                  pending=gr.State(None))
