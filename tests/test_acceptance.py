"""The acceptance rules (refine.acceptance) on real answers: strong models' answers are never
flagged, the small CnR model's degenerate revisions are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refine.acceptance import (
    AcceptanceConfig, asks_to_remove, check_loop, check_revision, longest_repeat, similarity,
)
from refine.backends.base import Finish

DATA = Path(__file__).parent / "data"
CONFIG = AcceptanceConfig()
STOP = Finish("stop", "eos")


def alpaca_answers() -> list[tuple[str, str]]:
    """(generator/id, answer) of the 808 AlpacaEval answers shipped in tests/data."""
    out = []
    for path in sorted((DATA / "alpaca_eval").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            out.append((f"{path.stem}/{row['id']}", row["response"]))
    return out


def test_no_strong_model_answer_counts_as_a_loop() -> None:
    answers = alpaca_answers()
    assert len(answers) == 808
    flagged = [(name, check_loop(text, CONFIG).detail) for name, text in answers if not check_loop(text, CONFIG).accepted]
    assert flagged == []
    # the threshold keeps a margin over the most repetitive real answer (a Falcon list: 4.07 copies)
    assert max(longest_repeat(text)[0] for _, text in answers) < 0.85 * CONFIG.max_repeats


def test_strong_answers_accepted_as_revisions_of_themselves_only_when_changed() -> None:
    for name, text in alpaca_answers()[:50]:
        assert check_revision(text, "Add a closing line.", text, STOP, CONFIG).rule == "unchanged", name
        edited = text + "\n\nI hope this helps."
        assert check_revision(text, "Add a closing line.", edited, STOP, CONFIG).accepted, name


def loops() -> list[str]:
    """Degenerate revisions written by the shipped 135M adapter (tests/data/looping_revisions.jsonl)."""
    return [json.loads(line)["revision"] for line in (DATA / "looping_revisions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("revision", loops())
def test_the_small_models_loops_are_flagged(revision: str) -> None:
    judgement = check_revision("Some answer.", "It is wrong.", revision, STOP, CONFIG)
    assert judgement.rule == "looping"
    assert "repeated" in judgement.detail


def test_a_repeated_sentence_is_a_loop_but_a_table_of_numbers_is_not() -> None:
    sentence = "The output is not correct because the function returns the wrong value. "
    assert check_loop("Intro. " + sentence * 6, CONFIG).rule == "looping"
    assert check_loop("Intro. " + sentence * 3, CONFIG).accepted
    table = "| a | b |\n|---|---|\n" + "| 1 | 1 |\n" * 40
    assert check_loop(table, CONFIG).accepted
    assert check_loop("1 1 1 1 " * 50, CONFIG).accepted


def test_a_cut_off_revision_is_rejected_whatever_its_text() -> None:
    judgement = check_revision("Sydney.", "Wrong city.", "The capital of Australia is Canb", Finish("length"), CONFIG)
    assert judgement.rule == "cut_off" and "token limit" in judgement.detail
    assert check_revision("a", "b", "c d", Finish("unknown"), CONFIG).rule == "cut_off"
    assert check_revision("a", "b", "c d", Finish("filtered"), CONFIG).rule == "cut_off"


def test_format_text_in_a_revision_is_rejected() -> None:
    for bad in ("Fine.\nCritique: Nothing to fix.", "Fine.<|im_end|>", "Fine.\n**Revision:** again",
                "<think>hmm</think> Fine.", "Fine. [INST] next"):
        assert check_revision("Bad.", "Wrong.", bad, STOP, CONFIG).rule == "markers", bad


def test_a_collapsed_revision_is_rejected_unless_the_critique_asks_to_cut() -> None:
    answer = " ".join(f"Point {i} explains one more detail of the topic." for i in range(10))  # 80 words
    stub = "Point 1 explains the topic."
    assert check_revision(answer, "It misses the date.", stub, STOP, CONFIG).rule == "collapsed"
    assert check_revision(answer, "It is far too long; keep only the first point.", stub, STOP, CONFIG).accepted
    # short answers may shrink freely
    assert check_revision("The capital of Australia is Sydney, a big city.", "Wrong.", "Canberra.", STOP, CONFIG).accepted


def test_removal_words_and_similarity() -> None:
    assert asks_to_remove("Remove the second paragraph.") and asks_to_remove("The answer is too long.")
    assert not asks_to_remove("The answer misses the year.")
    assert similarity("Hello, World!", "hello world") == 1.0
    assert similarity("3 times 4 is 7.", "3 times 4 is 12.") < 1.0  # numbers count


def test_thresholds_come_from_the_config() -> None:
    loop = "One two three four. " * 4
    assert check_loop(loop, AcceptanceConfig(max_repeats=3)).rule == "looping"
    assert check_loop(loop, AcceptanceConfig(max_repeats=5)).accepted
    strict = AcceptanceConfig(unchanged_similarity=0.8)
    assert check_revision("a b c d e f g h i j", "x", "a b c d e f g h i k", STOP, strict).rule == "unchanged"


def test_a_rewrite_that_keeps_little_of_the_answer_is_drifted_when_asked() -> None:
    answer = ("Some famous actors who started on Broadway are Meryl Streep, Hugh Jackman, Audra McDonald, "
              "Lin-Manuel Miranda and Denzel Washington.")
    rewrite = "Thaddeus Menzel is the third to start his career on Broadway as a young actress."
    strict = AcceptanceConfig(min_similarity=0.3)
    judgement = check_revision(answer, "It is wrong.", rewrite, STOP, strict)
    assert judgement.rule == "drifted" and "below 30%" in judgement.detail
    assert check_revision(answer, "It is wrong.", rewrite, STOP, CONFIG).accepted  # off by default
    edit = answer.replace("Denzel Washington", "Sutton Foster")
    assert check_revision(answer, "Denzel started in film.", edit, STOP, strict).accepted


def test_the_drift_threshold_defaults_to_the_embedded_model_only() -> None:
    from refine.revise import EMBEDDED_MIN_SIMILARITY, min_similarity
    from refine.settings import Settings

    assert min_similarity(Settings()) == EMBEDDED_MIN_SIMILARITY == 0.3
    assert min_similarity(Settings(cnr_backend="openai", cnr_url="http://127.0.0.1:9")) == 0.0
    assert min_similarity(Settings(cnr_model="some/other-model")) == 0.0
    assert min_similarity(Settings(accept_min_similarity=0.1)) == 0.1


def test_a_revision_that_writes_a_long_unit_twice_in_a_row_is_looping() -> None:
    answer = "Of course! Here is a recipe for classic challah bread:\nIngredients:\n- 4 cups bread flour"
    doubled = ("Of course! Here is a recipe for classic challah bread:\nOf course! Here is a recipe for classic "
               "challah bread:\nIngredients:\n- 4 cups bread flour")
    judgement = check_revision(answer, "Add the yeast.", doubled, STOP, CONFIG)
    assert judgement.rule == "looping" and "twice in a row" in judgement.detail
    # a repeat the answer already had is not the reviser's doing
    assert check_revision(doubled, "Add the yeast.", doubled + "\n- 1 packet of yeast", STOP, CONFIG).accepted


def test_new_repeats_of_a_phrase_are_looping_when_forbidden() -> None:
    answer = ("Key components:\n1. Energy: solar panels or wind turbines.\n2. Water: a well or rain barrels.\n"
              "3. Shelter: a self-sufficient space must be designed with sustainable materials and insulation.")
    # the small model's slow loop: one sentence copied into another list item
    worse = answer.replace("a well or rain barrels.", "a self-sufficient space must be designed with sustainable "
                                                      "materials and insulation.")
    strict = AcceptanceConfig(forbid_new_repeats=True)
    judgement = check_revision(answer, "Add detail.", worse, STOP, strict)
    assert judgement.rule == "looping" and "occurs 2 times (the answer has it 1)" in judgement.detail
    assert check_revision(answer, "Add detail.", worse, STOP, CONFIG).accepted  # off by default
    better = answer.replace("a well or rain barrels.", "a well, rain barrels and a filter.")
    assert check_revision(answer, "Add detail.", better, STOP, strict).accepted


def test_the_strict_rules_default_to_the_embedded_model_only() -> None:
    from refine.revise import loop_config
    from refine.settings import Settings

    assert loop_config(Settings()).acceptance.forbid_new_repeats
    assert not loop_config(Settings(cnr_model="some/other-model")).acceptance.forbid_new_repeats
    assert not loop_config(Settings(accept_forbid_new_repeats=False)).acceptance.forbid_new_repeats


def test_the_collapse_threshold_is_stricter_for_the_embedded_model() -> None:
    from refine.revise import loop_config
    from refine.settings import Settings

    assert loop_config(Settings()).acceptance.min_length_ratio == 0.85
    assert loop_config(Settings(cnr_backend="openai", cnr_url="http://127.0.0.1:9")).acceptance.min_length_ratio == 0.5
    assert loop_config(Settings(accept_min_length_ratio=0.7)).acceptance.min_length_ratio == 0.7


def test_a_revision_that_brings_in_critique_talk_is_rejected_as_commentary() -> None:
    # what the first `edits` adapter wrote in place of GPT-4's recommendation (bench/cnr_eval.py)
    answer = ("I recommend the DEWALT DCS391B 20-Volt MAX Li-Ion Circular Saw, which has a high rating and "
              "positive reviews. It is light and cuts cleanly.")
    revision = ("The answer is not helpful because it doesn't provide any information about the product. "
                "It is light and cuts cleanly.")
    judgement = check_revision(answer, "Unnecessary words.", revision, STOP, CONFIG)
    assert judgement.rule == "commentary" and "The answer is not helpful" in judgement.detail
    for talk in ("Good start.\nThis response lacks detail.", "Fine. Your answer should say more."):
        assert check_revision("Good start. Fine.", "x", talk, STOP, CONFIG).rule == "commentary", talk
    # an answer that already talks about a response may keep doing so; a math answer may end so
    meta = "The response provides three options. Pick one."
    assert check_revision(meta, "x", meta + " Or two.", STOP, CONFIG).accepted
    assert check_revision("4 + 4 = 9.", "Wrong sum.", "4 + 4 = 8. The answer is 8.", STOP, CONFIG).accepted


def test_no_strong_answer_is_commentary_when_it_is_the_revision_of_a_short_question() -> None:
    flagged = [name for name, text in alpaca_answers()
               if check_revision("Hi.", "x", text, STOP, AcceptanceConfig()).rule == "commentary"]
    assert flagged == ["falcon-40b-instruct.dev/alpaca_eval-468"]  # an answer describing itself
