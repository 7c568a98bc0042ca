"""The `edits` CnR format: edits as text, applied deterministically, derived from a revision,
parsed as they stream, recorded with an adapter, and run through the real loop against a
stand-in OpenAI-compatible server (real HTTP over a real socket)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from refine.adapter_format import AdapterFormatError, read_adapter_format, write_adapter_format
from refine.backends.base import GenerationParams
from refine.backends.openai_compat import OpenAICompatBackend
from refine.cnr_format import cnr_messages, cnr_target
from refine.edits import Edit, apply_edits, derive_edits, parse_edits, render_edits
from refine.edits_stream import EditsStreamParser
from refine.events import CritiqueDelta, EditApplied, RevisionDelta, RoundDone, TurnDone
from refine.loop import LoopConfig, refine_turn
from refine.records import FeedbackRecord
from tests.standin_servers import StandinServer, openai_chunks, sse_reply

ANSWER = "The capital of Australia is Sydney. It has about 400,000 people. It is a planned city."


def test_edits_apply_in_order_and_a_missing_or_ambiguous_span_is_dropped_with_its_reason() -> None:
    edits = [
        Edit("replace", "is Sydney.", "is Canberra."),
        Edit("replace", "It", "This"),  # twice in the answer
        Edit("replace", "Melbourne", "Perth"),  # not in it
        Edit("insert_after", "planned city.", "It was founded in 1913."),
        Edit("append", "", "See also: the Australian Capital Territory."),
    ]
    text, marked = apply_edits(ANSWER, edits)
    assert text == ("The capital of Australia is Canberra. It has about 400,000 people. It is a planned city. "
                    "It was founded in 1913.\n\nSee also: the Australian Capital Territory.")
    assert [(e.applied, e.reason) for e in marked] == [
        (True, None), (False, "ambiguous: 2 matches"), (False, "not found"), (True, None), (True, None)]


def test_a_span_matches_across_different_white_space_and_a_deletion_leaves_no_double_space() -> None:
    text, marked = apply_edits("One  two\nthree four.", [Edit("replace", "two three", "2 3"), Edit("replace", "four", "")])
    assert text == "One  2 3." and all(e.applied for e in marked)


@pytest.mark.parametrize("revision", [
    "The capital of Australia is Canberra. It has about 400,000 people. It is a planned city.",
    "The capital of Australia is Canberra. It has about 400,000 people.",
    "Canberra. It has about 400,000 people. It is a planned city, founded in 1913.",
    "The capital of Australia is Sydney. It has about 400,000 people. It is a planned city.\n\nNote: not Sydney.",
    "Something else entirely.",
])
def test_derived_edits_rebuild_the_revision_and_round_trip_through_their_text(revision: str) -> None:
    edits = derive_edits(ANSWER, revision)
    parsed, head = parse_edits(render_edits(edits))
    assert head == "" and parsed == edits
    text, marked = apply_edits(ANSWER, parsed)
    assert all(e.applied for e in marked) and text.split() == revision.split()


def test_derived_spans_are_whole_words_unique_in_the_answer() -> None:
    rng = random.Random(7)
    words = ANSWER.split()
    for _ in range(50):
        changed = list(words)
        i = rng.randrange(len(changed))
        changed[i] = rng.choice(["a", "many", "Canberra's", "(1913)"])
        revision = " ".join(changed)
        for edit in derive_edits(ANSWER, revision):
            assert ANSWER.count(edit.span) == 1
            start = ANSWER.index(edit.span)
            end = start + len(edit.span)
            assert (start == 0 or ANSWER[start - 1].isspace()) and (end == len(ANSWER) or ANSWER[end].isspace())


def test_incomplete_edits_are_kept_and_marked() -> None:
    edits, _ = parse_edits("Replace: Sydney\nReplace: people\nWith: residents\nAfter: city.\nInsert:")
    assert [(e.kind, e.span, e.applied, e.reason) for e in edits] == [
        ("replace", "Sydney", False, "incomplete"), ("replace", "people", None, None),
        ("insert_after", "city.", False, "incomplete")]


def test_streaming_gives_the_critique_then_each_edit_when_complete_whatever_the_chunking() -> None:
    output = ("Critique: Sydney is not the capital; Canberra is.\nReplace: is Sydney.\nWith: is Canberra.\n"
              "Replace: Perth\nWith: Darwin\nAppend: Canberra was founded in 1913.\n<|im_end|>ignored")
    results = []
    for size in (1, 2, 5, len(output)):
        parser = EditsStreamParser(ANSWER)
        pieces = []
        for i in range(0, len(output), size):
            pieces += parser.feed(output[i:i + size])
            if size == 1 and output[:i + 1].endswith("With: is Canberra.\nReplace:"):
                # the first edit is complete (the next label has started) and already applied
                assert parser.revision.startswith("The capital of Australia is Canberra.")
        pieces += parser.flush()
        results.append((pieces, parser.finish()))
    for pieces, parsed in results:
        assert "".join(t for s, t in pieces if s == "critique") == "Sydney is not the capital; Canberra is."
        assert [(e.span, e.applied) for s, e in pieces if s == "edit"] == [
            ("is Sydney.", True), ("Perth", False), ("", True)]
        assert parsed.ok and parsed.overrun.startswith("<|im_end|>")
        assert parsed.revision == ("The capital of Australia is Canberra. It has about 400,000 people. "
                                   "It is a planned city.\n\nCanberra was founded in 1913.")


@pytest.mark.parametrize("output, ok, error", [
    ("Critique: Nothing to fix.", True, None),
    ("Critique: Sydney is wrong.", False, "the output has no edits"),
    ("Replace: Sydney\nWith: Canberra", False, "the output has no critique"),
])
def test_finishing_judges_the_whole_generation(output: str, ok: bool, error: str | None) -> None:
    parser = EditsStreamParser(ANSWER)
    parser.feed(output)
    parsed = parser.finish()
    assert (parsed.ok, parsed.error) == (ok, error)
    if ok:
        assert parsed.nothing_to_fix and parsed.revision == ANSWER


def test_the_edits_target_and_request_are_the_edits_format() -> None:
    target = cnr_target("Wrong capital.", ANSWER.replace("Sydney", "Canberra"), ANSWER, fmt="edits")
    assert target == "Critique: Wrong capital.\nReplace: Australia is Sydney. It\nWith: Australia is Canberra. It"
    assert cnr_target("Nothing to fix.", ANSWER, ANSWER, fmt="edits") == "Critique: Nothing to fix."
    request = cnr_messages([{"role": "user", "content": "Capital?"}], ANSWER, fmt="edits", few_shot=True)
    assert '"Replace:"' in request[-1]["content"] and "Revision:" not in request[-1]["content"]
    assert "Replace:" in request[2]["content"]  # the few-shot answers are edits too


def test_record_edits_must_rebuild_the_revision() -> None:
    good = dict(prompt="Capital?", response=ANSWER, critique="Wrong.", revision=ANSWER.replace("Sydney", "Canberra"))
    record = FeedbackRecord(**good, edits=[{"kind": "replace", "span": "Sydney", "text": "Canberra"}])
    assert record.edit_list() == [Edit("replace", "Sydney", "Canberra")]
    with pytest.raises(ValueError, match="cannot be applied"):
        FeedbackRecord(**good, edits=[{"kind": "replace", "span": "Perth", "text": "Canberra"}])
    with pytest.raises(ValueError, match="do not give the revision"):
        FeedbackRecord(**good, edits=[{"kind": "replace", "span": "people", "text": "residents"}])
    assert FeedbackRecord(**good).edit_list() == derive_edits(ANSWER, good["revision"])


def test_an_adapter_records_its_format_and_an_unknown_one_is_refused_in_one_sentence(tmp_path: Path) -> None:
    assert read_adapter_format(tmp_path) == "rewrite"  # adapters from before the record
    write_adapter_format(tmp_path, "edits")
    assert read_adapter_format(tmp_path) == "edits"
    (tmp_path / "cnr_format.json").write_text(json.dumps({"format": "edits", "version": "edits-v9"}))
    with pytest.raises(AdapterFormatError, match=r"cnr_format.json: .*'edits-v9'.* does not know"):
        read_adapter_format(tmp_path)


def test_the_app_settings_refuse_an_adapter_of_an_unknown_format(tmp_path: Path) -> None:
    from refine.cli import main

    (tmp_path / "cnr_format.json").write_text(json.dumps({"format": "diff", "version": "diff-v1"}))
    result = CliRunner().invoke(main, ["revise", "--help"])
    assert result.exit_code == 0
    from refine.backends import cnr_format
    from refine.settings import Settings

    settings = Settings(cnr_adapter=str(tmp_path))
    with pytest.raises(AdapterFormatError, match="'diff'"):
        cnr_format(settings)
    assert cnr_format(Settings(cnr_adapter=str(tmp_path), cnr_format="edits")) == "edits"


async def test_an_edits_round_streams_edits_applies_them_and_the_next_round_edits_the_result() -> None:
    def reply(text: str):
        return sse_reply(openai_chunks([text[i:i + 4] for i in range(0, len(text), 4)]))

    with StandinServer() as server:
        server.on("POST", "/v1/chat/completions",
                  reply("Critique: Sydney is not the capital.\nReplace: is Sydney.\nWith: is Canberra.\n"
                        "Replace: Perth\nWith: Darwin"),
                  reply("Critique: Nothing to fix."))
        backend = OpenAICompatBackend(server.url, model="cnr", timeout=5)
        config = LoopConfig(rounds=3, cnr_format="edits", cnr_params=GenerationParams(max_new_tokens=64))
        try:
            events = [e async for e in refine_turn([{"role": "user", "content": "Capital of Australia?"}],
                                                   cnr=backend, config=config, response=ANSWER)]
        finally:
            await backend.aclose()
        bodies = [r.json for r in server.requests_to("/v1/chat/completions")]
    fixed = ANSWER.replace("is Sydney.", "is Canberra.")
    assert not any(isinstance(e, RevisionDelta) for e in events)
    applied = [e for e in events if isinstance(e, EditApplied)]
    assert [(e.edit["span"], e.edit["applied"]) for e in applied] == [("is Sydney.", True), ("Perth", False)]
    assert applied[0].revision == fixed and applied[1].edit["reason"] == "not found"
    assert "".join(e.text for e in events if isinstance(e, CritiqueDelta) and e.round == 1) == \
        "Sydney is not the capital."
    done = [e for e in events if isinstance(e, RoundDone)]
    assert [(d.status, d.cnr_format) for d in done] == [("complete", "edits-v1"), ("complete", "edits-v1")]
    assert done[0].revision == fixed and len(done[0].edits) == 2 and done[1].nothing_to_fix
    assert f"Response to improve:\n{fixed}" in bodies[1]["messages"][-1]["content"]
    assert events[-1] == TurnDone(final=fixed, rounds_completed=2, stop_reason="nothing_to_fix")


async def test_an_edits_round_whose_edits_all_miss_is_rejected_unchanged() -> None:
    with StandinServer() as server:
        server.on("POST", "/v1/chat/completions",
                  sse_reply(openai_chunks(["Critique: Wrong city.\nReplace: Perth\nWith: Canberra"])))
        backend = OpenAICompatBackend(server.url, model="cnr", timeout=5)
        try:
            events = [e async for e in refine_turn([{"role": "user", "content": "Capital?"}], cnr=backend,
                                                   config=LoopConfig(rounds=2, cnr_format="edits"), response=ANSWER)]
        finally:
            await backend.aclose()
    done = [e for e in events if isinstance(e, RoundDone)]
    assert [(d.status, d.rejection) for d in done] == [("rejected", "unchanged")]
    assert events[-1].final == ANSWER


def test_the_page_says_which_models_adapter_and_format_and_what_to_expect_of_the_embedded_model(
        tmp_path: Path) -> None:
    from types import SimpleNamespace

    from refine.settings import Settings
    from ui.context import AppContext

    write_adapter_format(tmp_path, "edits")
    model = SimpleNamespace(model_id="SmolLM2-135M-Instruct")
    embedded = AppContext(Settings(cnr_adapter=str(tmp_path)), engine=None, base=model, cnr=model)  # type: ignore[arg-type]
    line = embedded.models_line
    assert f"**Adapter:** `{tmp_path.name}`" in line and "critique + edits of the answer" in line
    assert "135M-parameter model on a CPU" in line and "often wrong" in line
    remote = AppContext(Settings(cnr_backend="openai", cnr_url="http://127.0.0.1:9/v1", cnr_model="big"),
                        engine=None, base=model, cnr=SimpleNamespace(model_id="big"))  # type: ignore[arg-type]
    assert "on a CPU" not in remote.models_line and "critique + rewritten answer" in remote.models_line


def test_deleting_the_first_sentence_of_a_line_leaves_no_leading_space() -> None:
    text, _ = apply_edits("Of course! Here it is.\nOf course! Step two.", [Edit("replace", "Of course! Here", "Here")])
    assert text == "Here it is.\nOf course! Step two."
    text, _ = apply_edits("Sure. Here it is.\nNext. Step two.", [Edit("replace", "Sure.", ""), Edit("replace", "Next.", "")])
    assert text == "Here it is.\nStep two."
