"""When a revision may replace the answer it revises: the acceptance rules, one function each.

A round's revision replaces the current answer only when every rule passes (first do no harm:
whatever CnR model is plugged in, a revision that is not clearly sound is never shown as the
answer). The rules, in the order they are checked, with the name stored as the round's
`rejection`:

- ``cut_off``   the generation did not end by itself: it hit its token limit (finish reason
  `length`), or the server did not say why it ended, withheld the rest or called a tool.
- ``empty``     the revision has no text.
- ``markers``   the revision contains a CnR label at the start of a line, chat-template control
  text (``<|im_start|>``, ``</s>``, ``[INST]`` …) or a reasoning block.
- ``commentary`` the revision brings in a sentence about the answer itself — critique talk such as
  "The answer is not helpful because …" or "This response lacks …" — that its input does not
  have: the critique leaking into the revision (the `edits` model replaced a product
  recommendation with such a sentence). None of CoachLM's 2,301 or LAMP's 150 human revisions
  brings one in; 1 of the 808 AlpacaEval answers has one (a Falcon answer describing itself).
- ``looping``   a unit of ≥ 3 words (≥ 3 distinct) repeats back to back `max_repeats` times or
  more; or the revision writes a unit of ≥ 8 words twice in a row where its input does not (the
  small CnR model's loops start so: "Of course! Here is a recipe for …" twice); or, with
  `forbid_new_repeats` (on for the embedded 135M model only), any 8-word phrase occurs more often
  than in its input and at least twice (its slow loops copy one sentence into item after item of a
  list, round after round). Human expert revisions do that too, rarely: 104 of CoachLM's 2,278
  (4.6%), none of LAMP's 150 — hence only for the model that needs it. Chosen on data: the most any of the 808 answers in AlpacaEval's four generator files
  (ChatGPT, GPT-4, Vicuna-13B, Falcon-40B-Instruct) repeats a unit is 4.07 times (a Falcon list of
  video titles); the loops of the small CnR model repeat a sentence tens of times. Words without a
  letter (numbers, table rules, LaTeX ``&``) do not count, so tables and code are not loops. A
  back-to-back repeat of ≥ 8 words is in 4 of those 808 answers (a table, three Falcon loops),
  which is why the second condition only counts repeats the input does not have.
- ``collapsed`` the revision has less than `min_length_ratio` of the words of an answer of at
  least `collapse_min_words` words, and the critique does not ask to remove or shorten anything.
- ``drifted``   the revision keeps less than `min_similarity` of its input (difflib's similarity of
  the two token sequences): a rewrite rather than a revision. Off (0) for models in general —
  human experts rewrite a third of CoachLM's answers below 0.2, and a strong CnR model's rewrite
  can be right — but 0.3 for the embedded 135M model: every one of its revisions below 0.3
  read here was wrong (a ten-actor list turned into one false sentence, invented names, a
  199-word answer cut to 42); see docs/acceptance.md.
- ``unchanged`` the revision's tokens are (nearly) those of its input: difflib's similarity of
  the two token sequences (case, punctuation and Markdown ignored) is ≥ `unchanged_similarity`.
  Not a fault: it ends refinement, and the answer stands.

A selector (refine.selection) may add ``not_better``: the pairwise judge did not prefer it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from refine.backends.base import Finish
from refine.cnr_format import has_format_text

Rule = Literal["cut_off", "empty", "markers", "commentary", "looping", "collapsed", "drifted", "unchanged",
               "not_better"]
RULES: tuple[Rule, ...] = ("cut_off", "empty", "markers", "commentary", "looping", "collapsed", "drifted", "unchanged",
                           "not_better")

# Plain-words explanations, for the panel and the CLI summary.
RULE_TEXT: dict[str, str] = {
    "cut_off": "it was cut off at the token limit",
    "empty": "it was empty",
    "markers": "it contained format labels or chat-template text",
    "commentary": "it talked about the answer instead of being one",
    "looping": "it repeated itself",
    "collapsed": "it dropped most of the answer",
    "drifted": "it rewrote the answer instead of revising it",
    "unchanged": "it changed nothing",
    "not_better": "the judge did not prefer it",
}

# A sentence about the answer itself, as critiques are written (see ``commentary`` above).
_COMMENTARY = re.compile(
    r"(?:^|(?<=[.!?:\"])\s+|\n)\s*(?:The|This|Your|My|Their) (?:original |revised |given |above |previous |current )?"
    r"(?:answer|response)(?:'s)? (?:is not|isn't|does not|doesn't|did not|didn't|should|could|would|lacks|fails|has|"
    r"needs|contains|provides|says|mentions|is too|is unclear|is incorrect|is wrong|is correct|is helpful|is good|"
    r"misses|gives|only|also|can be improved|is incomplete|is vague)\b",
    re.IGNORECASE,
)
DUPLICATE_MIN_WORDS = 8  # a unit this long written twice in a row is the start of a loop
_WORD = re.compile(r"\S+")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_STRIP = re.compile(r"^[\W_]+|[\W_]+$")
# A critique that asks for less: then a much shorter revision is what it asked for.
_ASKS_TO_REMOVE = re.compile(
    r"\b(?:remov\w*|delet\w*|cut|omit\w*|drop\w*|trim\w*|shorten\w*|shorter|too long|lengthy|verbose|wordy|"
    r"concise\w*|brief\w*|succinct\w*|unnecessar\w*|redundan\w*|repetiti\w*|irrelevant|superfluous|"
    r"only (?:needs?|asks?|wants?)|just (?:say|answer|give))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class AcceptanceConfig:
    """Thresholds of the rules (Settings: `REFINE_ACCEPT_*`); see the module docstring."""

    max_repeats: float = 5.0
    min_length_ratio: float = 0.5
    collapse_min_words: int = 40
    min_similarity: float = 0.0
    unchanged_similarity: float = 1.0
    forbid_new_repeats: bool = False


@dataclass(frozen=True)
class Judgement:
    """The outcome of the rules for one revision: `rule` is None when it is accepted; `detail`
    says in plain words what was measured."""

    rule: Rule | None = None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.rule is None


def tokens(text: str) -> list[str]:
    """The whitespace-separated tokens of a text, lower-cased, without surrounding punctuation or
    Markdown; tokens that are only punctuation are left out."""
    return [t for t in (_STRIP.sub("", token) for token in _WORD.findall(text.casefold())) if t]


def words(text: str) -> list[str]:
    """The tokens of a text that carry letters (numbers, table rules and symbols are left out)."""
    return [t for t in tokens(text) if _HAS_LETTER.search(t)]


def longest_repeat(text: str, *, min_unit: int = 3, max_unit: int = 80) -> tuple[float, str]:
    """(copies, unit): the most back-to-back copies of any unit of `min_unit`..`max_unit` words
    (with at least 3 distinct words) in `text`, and the unit's first words; (1.0, "") when
    nothing repeats. Cost O(words × max_unit)."""
    seq = words(text)
    best, unit_text = 1.0, ""
    for period in range(min_unit, min(max_unit, len(seq) // 2) + 1):
        run = 0
        for i in range(len(seq) - period):
            if seq[i] != seq[i + period]:
                run = 0
                continue
            run += 1
            copies = run / period + 1
            if copies > best:
                unit = seq[i - run + 1: i - run + 1 + period]
                if len(set(unit)) >= 3:
                    best, unit_text = copies, " ".join(unit[:12])
    return best, unit_text


def new_repeat(current: str, revision: str, n: int = DUPLICATE_MIN_WORDS) -> tuple[str, int, int] | None:
    """(phrase, times in the revision, times in `current`) of an n-word phrase that the revision
    repeats (≥ 2 times) more often than `current` has it; None when there is none."""
    def counts(text: str) -> Counter:
        w = words(text)
        return Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1))

    before, after = counts(current), counts(revision)
    for gram, times in after.most_common():
        if times < 2:
            return None
        if times > before.get(gram, 0):
            return " ".join(gram), times, before.get(gram, 0)
    return None


def similarity(a: str, b: str) -> float:
    """difflib's ratio (2·matches ÷ total) of the two texts' token sequences, in [0, 1]."""
    wa, wb = tokens(a), tokens(b)
    if not wa and not wb:
        return 1.0
    return SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def asks_to_remove(critique: str) -> bool:
    """True when the critique asks to remove, cut or shorten something."""
    return bool(_ASKS_TO_REMOVE.search(critique))


def check_complete(finish: Finish | None) -> Judgement:
    """The `cut_off` rule alone: the generation must have ended by itself."""
    if finish is None or finish.reason == "stop":
        return Judgement()
    why = {
        "length": "the generation hit its token limit",
        "filtered": "the server withheld the rest of the text",
        "tool_calls": "the model called a tool instead of finishing",
        "unknown": "the server did not say why the generation ended",
    }[finish.reason]
    return Judgement("cut_off", why)


def check_loop(text: str, config: AcceptanceConfig) -> Judgement:
    """The `looping` rule alone (also used on partial text, to stop a looping generation early)."""
    copies, unit = longest_repeat(text)
    if copies >= config.max_repeats:
        return Judgement("looping", f"“{unit} …” repeated {copies:.0f} times in a row")
    return Judgement()


def check_revision(current: str, critique: str, revision: str, finish: Finish | None,
                   config: AcceptanceConfig) -> Judgement:
    """Run the rules in order on a parsed revision of `current`; the first that fails decides.

    `finish` is the generation's Finish (None: a revision that did not come from a generation,
    e.g. in tests). Raises nothing.
    """
    if not (judgement := check_complete(finish)).accepted:
        return judgement
    if not revision.strip():
        return Judgement("empty", "the revision has no text")
    if marker := has_format_text(revision):
        return Judgement("markers", f"the revision contains “{marker[:40]}”")
    if (talk := _COMMENTARY.search(revision)) and not _COMMENTARY.search(current):
        sentence = revision[talk.start():].strip().split("\n")[0]
        return Judgement("commentary", f"the revision says “{sentence[:60]} …” about the answer")
    if not (judgement := check_loop(revision, config)).accepted:
        return judgement
    copies, unit = longest_repeat(revision, min_unit=DUPLICATE_MIN_WORDS)
    if copies >= 2 and longest_repeat(current, min_unit=DUPLICATE_MIN_WORDS)[0] < 2:
        return Judgement("looping", f"“{unit} …” written twice in a row (the answer has it once)")
    if config.forbid_new_repeats and (repeat := new_repeat(current, revision)):
        phrase, times, before = repeat
        return Judgement("looping", f"“{phrase} …” occurs {times} times (the answer has it {before})")
    before, after = len(tokens(current)), len(tokens(revision))
    if (before >= config.collapse_min_words and after < config.min_length_ratio * before
            and not asks_to_remove(critique)):
        return Judgement("collapsed", f"{after} words left of {before} ({after / before:.0%}), and the critique "
                                      "asks to remove nothing")
    ratio = similarity(current, revision)
    if ratio < config.min_similarity:
        return Judgement("drifted", f"it keeps {ratio:.0%} of the answer (similarity), below {config.min_similarity:.0%}")
    if ratio >= config.unchanged_similarity:
        return Judgement("unchanged", f"word similarity {ratio:.3f}")
    return Judgement()
