"""The CnR training set with edits (`python -m refine build-data`): feedback records whose
`edits` turn the response into the revision, built from the raw public datasets, with a fixed
held-out split and a generated data card.

Sources (a folder laid out as the project's shared data folder; see its README.md):

- LAMP — salesforce/creativity_eval, `Writing_Alignment/LAMP/reannotation/W{3,12,16}_edits.json`
  (BSD-3-Clause). Each file is a JSON array of `{instruction, source, type, preedit, postedit,
  id, url, creativity_scores, fine_grained_edits: [{categorization, originalText, editedText}]}`:
  three professional writers each edited the same 50 LLM paragraphs. Record: prompt =
  instruction, response = preedit, revision = postedit, edits = the writer's own fine-grained
  edits, critique derived from their categories.
- CoachLM — lunyiliu/CoachLM, `Expert Revision Dataset.json` (repo Apache-2.0; the data is built
  on Alpaca-52k, non-commercial). A JSON array of `{Raw Instruction, Raw Input, Raw Response,
  Revised Instruction, Revised Input, Revised Response, Distance}`. Kept only where the expert
  revision is an edit of the response (few, local edits); critique derived from the difference.
- Shepherd — facebookresearch/Shepherd `data/` (CC BY-NC 4.0): `human_data_for_model.jsonl`
  `{id, dataset, question, answer, feedback}` joined with `human_data_raw.jsonl` (revision =
  `metadata.output_correct`, a reference answer), via refine.importers.shepherd. The critique is
  the human feedback; only short answers are kept.
- AlpacaEval — tatsu-lab/alpaca_eval `results/*/model_outputs.json` (CC BY-NC 4.0), rows
  `{id, prompt, response, generator, dataset}`: GPT-4's answers (`gpt4.dev.jsonl`) become
  "Nothing to fix." records. The first 40 prompts of `chatgpt.dev.jsonl` are the evaluation set:
  no record of any source may carry one of them.

Every record has `meta.parent_id`: records from the same item (LAMP's three writers editing one
paragraph, the same prompt in two rows or two sources) share it, and the held-out split hashes it
(refine.training.data.is_heldout), so they land on the same side.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from refine.cnr_format import NOTHING_TO_FIX
from refine.edits import Edit, apply_edits, derive_edits, render_edits
from refine.errors import FileProblem, RefineError
from refine.importers import ImportSchemaError, read_json_rows
from refine.importers import shepherd as shepherd_rows
from refine.records import FeedbackRecord, write_jsonl
from refine.training.data import is_heldout

EVAL_PROMPTS = 40  # the first rows of alpaca_eval/chatgpt.dev.jsonl: the evaluation set
SOURCE_ORDER = ("lamp", "coachlm", "shepherd", "alpaca_eval")


class BuildDataError(RefineError, ValueError):
    """A source file is missing or not in its published schema; the message names the file
    (and line) and what to do."""


# --- provenance --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceInfo:
    """Where a source comes from (as recorded in the shared data folder's README.md)."""

    name: str
    title: str
    files: tuple[str, ...]  # relative to --source
    repo: str
    commit: str
    upstream: str
    licence: str
    used_as: str


SOURCES: dict[str, SourceInfo] = {
    "lamp": SourceInfo(
        "lamp", "LAMP (professional writers' edits of LLM paragraphs)",
        ("lamp/W3_edits.json", "lamp/W12_edits.json", "lamp/W16_edits.json"),
        "salesforce/creativity_eval", "fced0ab2d3068244152d1302a8bd8e9f538440f5",
        "Writing_Alignment/LAMP/reannotation/W{3,12,16}_edits.json", "BSD-3-Clause",
        "prompt = instruction, response = preedit (GPT-4o / Claude-3.5-Sonnet / Llama-3.1-70B), "
        "revision = postedit (the writer's edit), edits = the writer's fine_grained_edits",
    ),
    "coachlm": SourceInfo(
        "coachlm", "CoachLM expert revisions",
        ("coachlm/expert_revision_dataset.json",),
        "lunyiliu/CoachLM", "37617299916c3ae550b2f6da713835e21bea6e60", "Expert Revision Dataset.json",
        "Apache-2.0 (repository); the data is built on Alpaca-52k, whose terms are non-commercial",
        "prompt = Raw Instruction (+ Raw Input), response = Raw Response, revision = Revised Response "
        "(an expert's rewrite), edits derived from the difference",
    ),
    "shepherd": SourceInfo(
        "shepherd", "Shepherd human critiques",
        ("shepherd/human_data_for_model.jsonl", "shepherd/human_data_raw.jsonl"),
        "facebookresearch/Shepherd", "29b1863bbecd616e2052a0d664507b69bde60fff",
        "data/human_data_for_model.jsonl, data/human_data_raw.jsonl", "CC BY-NC 4.0",
        "prompt = question, response = a model's answer, critique = a human annotator's feedback, "
        "revision = the correct reference answer (metadata.output_correct; not an edit of the response)",
    ),
    "alpaca_eval": SourceInfo(
        "alpaca_eval", "AlpacaEval model outputs",
        ("alpaca_eval/gpt4.dev.jsonl", "alpaca_eval/chatgpt.dev.jsonl"),
        "tatsu-lab/alpaca_eval", "cd543a149df89434d8a54582c0151c0b945c3d20",
        "results/{gpt4,gpt-3.5-turbo-0301}/model_outputs.json (every fourth prompt)", "CC BY-NC 4.0",
        "GPT-4's answers as 'Nothing to fix.' records (response = revision, no edits); the first "
        f"{EVAL_PROMPTS} prompts of chatgpt.dev.jsonl are the evaluation set and are never used",
    ),
}


# --- options and results -----------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    """The knobs of a build (the command's options, and the thresholds chosen from the data)."""

    max_chars: int = 3600  # example_chars above this drops a record (≈1,024 tokens at ~4 chars/token)
    nothing_to_fix_share: float = 0.15  # of train.jsonl and of heldout.jsonl
    heldout_share: float = 0.1  # by sha256 of meta.parent_id (refine.training.data.is_heldout)
    train_size: int = 1000  # 0 = all of the training side
    seed: int = 42
    shepherd_max_response: int = 600  # characters of Shepherd's critiqued answer
    coachlm_max_edits: int = 4  # substantive edits (white-space-only ones are not counted)
    coachlm_max_cover: float = 0.5  # edits' spans / response characters
    coachlm_min_prompt_similarity: float = 0.85  # word-level ratio raw vs revised instruction / input

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SourceResult:
    """One source's records (before the length filter and the split) and why rows were dropped."""

    name: str
    read: int = 0
    records: list[FeedbackRecord] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    edits_origin: Counter[str] = field(default_factory=Counter)  # LAMP: where each record's edits come from


@dataclass
class BuildResult:
    """What a build produced: the two record lists and the card."""

    train: list[FeedbackRecord]
    heldout: list[FeedbackRecord]
    card: dict[str, Any]
    sources: dict[str, SourceResult]


# --- helpers -----------------------------------------------------------------------------------


def normalized_prompt(text: str) -> str:
    """A prompt's words, lower-cased: what decides that two prompts are the same."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def _word_ratio(a: str, b: str) -> float:
    import difflib

    wa, wb = normalized_prompt(a).split(), normalized_prompt(b).split()
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def quote(span: str, max_words: int = 8) -> str:
    """A span quoted for a critique: its first `max_words` words (a prefix of the text), "…" if cut."""
    words = span.strip(" \t\n,.;:-*").split()
    if len(words) <= max_words:
        return f'"{" ".join(words)}"'
    return f'"{" ".join(words[:max_words]).rstrip(",;:")}…"'


def substantive_edits(response: str, revision: str, edits: list[Edit]) -> list[Edit]:
    """`edits` without those that only change white space, when the rest still give the revision
    (the record validator compares up to white space); else `edits` unchanged."""
    kept = [e for e in edits if e.kind == "append" or e.span.split() != e.text.split()]
    if len(kept) == len(edits):
        return edits
    result, marked = apply_edits(response, kept)
    if all(e.applied for e in marked) and result.split() == revision.split():
        return kept
    return edits


def replaces_everything(response: str, edits: list[Edit]) -> bool:
    """Whether `edits` are one edit replacing the whole response."""
    return len(edits) == 1 and edits[0].kind == "replace" and edits[0].span.split() == response.split()


def is_whole_replacement(record: FeedbackRecord) -> bool:
    """Whether the record's edits replace the whole response in one edit."""
    return replaces_everything(record.response, record.edit_list() if record.edits else [])


def example_chars(record: FeedbackRecord) -> int:
    """Characters of the training example in its longer format: prompt + response + critique +
    the longer of the revision and the rendered edits ("Nothing to fix." alone has no revision)."""
    prompt = sum(len(m["content"]) for m in record.chat())
    if record.critique.strip() == NOTHING_TO_FIX and not record.edits:
        return prompt + len(record.response) + len(record.critique)
    edits = render_edits([Edit.from_json(e.model_dump()) for e in record.edits or []])
    return prompt + len(record.response) + len(record.critique) + max(len(record.revision), len(edits))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, value) of a JSON array or JSONL file; a file that does not parse raises
    BuildDataError naming the file and line."""
    try:
        yield from read_json_rows(path)
    except (ImportSchemaError, FileProblem) as exc:
        raise BuildDataError(str(exc)) from None


def _need(row: Any, name: str, kind: type | tuple[type, ...], where: str, schema: str) -> Any:
    """The field `name` of a source row, or BuildDataError naming the file, line and field."""
    if not isinstance(row, dict):
        raise BuildDataError(f"{where}: expected a {schema} object, found a JSON {type(row).__name__}; "
                             "is this the right file?")
    if name not in row:
        raise BuildDataError(f"{where}: a {schema} row needs the field {name!r} (it has {sorted(row)}); "
                             "is this the right file?")
    value = row[name]
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise BuildDataError(f"{where}: the {schema} field {name!r} is a {type(value).__name__}, expected "
                             f"{' or '.join(k.__name__ for k in kinds)}; is this the right file?")
    return value


def _record(result: SourceResult, **fields: Any) -> FeedbackRecord | None:
    """A validated record. When its edits do not give the revision, edits derived from the
    difference replace them; None (counted in `result.dropped`) when a text is empty or even
    derived edits fail."""
    if any(not str(fields.get(k) or "").strip() for k in ("prompt", "response", "critique", "revision")):
        result.dropped["empty field"] += 1
        return None
    try:
        return FeedbackRecord.model_validate(fields)
    except ValidationError:
        pass
    response, revision = fields["response"], fields["revision"]
    edits = substantive_edits(response, revision, derive_edits(response, revision))
    try:
        return FeedbackRecord.model_validate({**fields, "edits": [e.to_json() for e in edits]})
    except ValidationError:
        result.dropped["edits do not give the revision"] += 1
        return None


def missing_files(source: Path, name: str) -> list[Path]:
    """The files of source `name` that are not in the folder `source`."""
    return [source / f for f in SOURCES[name].files if not (source / f).is_file()]


# --- LAMP --------------------------------------------------------------------------------------

_CATEGORY_PHRASES: tuple[tuple[str, str], ...] = (
    ("cliche", "clichés"),
    ("purple", "purple prose"),
    ("awkward", "awkward wording"),
    ("sentencestructure", "clumsy sentence structure"),
    ("specificity", "vague, unspecific writing"),
    ("exposition", "unnecessary exposition"),
    ("tense", "inconsistent tenses"),
    ("punctuation", "punctuation errors"),
)


def category_phrase(category: str) -> str:
    """A LAMP edit category as a critic's noun phrase ("Cliche" → "clichés")."""
    key = re.sub(r"[^a-z]", "", category.casefold())
    for needle, phrase in _CATEGORY_PHRASES:
        if needle in key:
            return phrase
    return category.strip().lower() or "weak passages"


def lamp_critique(preedit: str, fine: list[dict[str, str]], max_categories: int = 3) -> str:
    """A short critique from a writer's edit categories: the most frequent ones (up to
    `max_categories`), each with a quoted span of the paragraph it was found in."""
    by_phrase: dict[str, list[str]] = {}
    flat = " ".join(preedit.split())
    for item in fine:
        phrase = category_phrase(item.get("categorization", ""))
        span = " ".join(str(item.get("originalText", "")).split())
        by_phrase.setdefault(phrase, [])
        if span and span in flat:
            by_phrase[phrase].append(span)
    ranked = sorted(by_phrase, key=lambda p: -len(by_phrase[p]) if by_phrase[p] else 1)[:max_categories]
    parts = []
    for phrase in ranked:
        spans = by_phrase[phrase]
        short = [s for s in spans if 2 <= len(s.split()) <= 8]
        parts.append(f"{phrase} ({quote((short or spans)[0])})" if spans else phrase)
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The answer has {listed}." if parts else "The answer's wording can be tightened."


def lamp_edits(preedit: str, postedit: str, fine: list[dict[str, str]]) -> tuple[list[Edit], str]:
    """The writer's fine-grained edits as edits of `preedit`, and where they come from.

    Each `originalText` → `editedText` is applied exactly (at its first occurrence after the
    previous edit), one step at a time, and each step becomes edits with unique spans via
    derive_edits(before, after). When these give the postedit (up to white space) they are used:
    "fine_grained_edits"; else (a span not found, or a postedit with changes the list lacks)
    derive_edits(preedit, postedit): "derived"."""
    text, cursor, steps = preedit, 0, []
    for item in fine:
        old, new = str(item.get("originalText", "")), str(item.get("editedText", ""))
        start = text.find(old, cursor) if old else -1
        if start < 0 and old:
            start = text.find(old)
        if start < 0:
            return derive_edits(preedit, postedit), "derived"
        after = text[:start] + new + text[start + len(old):]
        steps.extend(derive_edits(text, after))
        text, cursor = after, start + len(new)
    result, marked = apply_edits(preedit, steps)
    if steps and all(e.applied for e in marked) and result.split() == postedit.split():
        return steps, "fine_grained_edits"
    return derive_edits(preedit, postedit), "derived"


def lamp_records(source: Path) -> SourceResult:
    """LAMP rows → records (see the module docstring); parent_id groups a paragraph's writers."""
    result = SourceResult("lamp")
    schema = "LAMP"
    for rel in SOURCES["lamp"].files:
        path = source / rel
        result.files[rel] = _sha256(path)
        writer = Path(rel).name.split("_")[0]
        for index, (number, row) in enumerate(_rows(path)):
            where = f"{path}:{number} (row {index + 1})"
            result.read += 1
            instruction = _need(row, "instruction", str, where, schema)
            preedit = _need(row, "preedit", str, where, schema)
            postedit = _need(row, "postedit", str, where, schema)
            fine = _need(row, "fine_grained_edits", list, where, schema)
            for item in fine:
                _need(item, "originalText", str, where, "LAMP fine-grained edit")
                _need(item, "editedText", str, where, "LAMP fine-grained edit")
            row_id = str(row.get("id") or f"{writer}_row{index + 1}")
            paragraph = re.search(r"(\d+)$", row_id)
            parent = (f"lamp-paragraph-{paragraph.group(1)}" if paragraph
                      else "lamp-" + hashlib.sha256(preedit.encode()).hexdigest()[:12])
            if preedit.split() == postedit.split():
                result.dropped["unchanged"] += 1
                continue
            edits, origin = lamp_edits(preedit, postedit, fine)
            edits = substantive_edits(preedit, postedit, edits)
            result.edits_origin[origin] += 1
            categories = sorted({str(i.get("categorization", "")).strip() for i in fine} - {""})
            record = _record(
                result,
                id=f"lamp-{row_id}", prompt=instruction, response=preedit,
                critique=lamp_critique(preedit, fine), revision=postedit,
                edits=[e.to_json() for e in edits], source="lamp",
                meta={
                    "parent_id": parent,
                    "critique": "derived: from LAMP edit categories",
                    "edits": ("human: the writer's fine_grained_edits" if origin == "fine_grained_edits"
                              else "derived: word-level diff (refine.edits.derive_edits)"),
                    "revision_kind": "human edit",
                    "writer": writer,
                    "model": row.get("source"),
                    "categories": categories,
                    "licence": SOURCES["lamp"].licence,
                },
            )
            if record is not None:
                result.records.append(record)
    return result


# --- CoachLM -----------------------------------------------------------------------------------

_NO_INPUT = re.compile(r"[\s`'\"<(\[]*no[\s_-]*input[\s.`'\">)\]]*", re.IGNORECASE)


def coachlm_input(text: str) -> str:
    """CoachLM's Raw/Revised Input, with Alpaca's placeholders ("<noinput>", "No input.") as ""."""
    return "" if not text.strip() or _NO_INPUT.fullmatch(text) else text.strip()


def coachlm_prompt(instruction: str, raw_input: str) -> str:
    """The prompt: the instruction, then its input after a blank line when there is one."""
    extra = coachlm_input(raw_input)
    return f"{instruction.strip()}\n\n{extra}" if extra else instruction.strip()


_LIST_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:[-*•]|\d+[.)])[ \t]+")


def _words(text: str) -> list[str]:
    """A text's words, lower-cased, without punctuation or list markers."""
    return normalized_prompt(_LIST_MARKER.sub(" ", text)).split()


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(word in it for word in short)


def edit_sentence(edit: Edit, response: str) -> str:
    """What one edit does, as a critic's sentence (derived from the edit, not written by anyone)."""
    if edit.kind == "append":
        return "It stops short: more is needed at the end."
    span, text = edit.span.strip(), edit.text.strip()
    old, new = _words(span), _words(text)
    if edit.kind == "insert_after":
        return f"Something is missing after {quote(span.split(chr(10))[-1], 6)}."
    if old == new:
        if len(_LIST_MARKER.findall(text)) > len(_LIST_MARKER.findall(span)):
            return "Its points should be laid out as a list."
        if _LIST_MARKER.search(text) or _LIST_MARKER.search(span):
            return "The list should be formatted differently."
        return f"The punctuation of {quote(span, 6)} should be fixed."
    if not new:
        return f"{quote(span)} is unnecessary."
    if len(new) > len(old) and new[len(new) - len(old):] == old:
        if response.strip().startswith(span):
            return f"It should open with a sentence introducing the answer (before {quote(span, 6)})."
        return f"Something is missing before {quote(span, 6)}."
    if len(new) > len(old) and new[:len(old)] == old:
        return f"Something is missing after {quote(span.split(chr(10))[-1], 6)}."
    if _is_subsequence(new, old):
        return f"{quote(span)} has unnecessary words."
    if len(text) >= 2 * len(span) + 80:
        return f"{quote(span)} should be expanded."
    return f"{quote(span)} should be reworded."


def difference_critique(response: str, edits: list[Edit], max_items: int = 3) -> str:
    """A short critique derived from edits: one sentence per edit (the same sentence once), at
    most `max_items`, then how many more passages change."""
    sentences: list[str] = []
    for edit in edits:
        sentence = edit_sentence(edit, response)
        if sentence not in sentences:
            sentences.append(sentence)
    shown = sentences[:max_items]
    if len(sentences) > max_items:
        more = len(sentences) - max_items
        shown.append(f"{more} more passage{'s' if more > 1 else ''} should be revised.")
    return " ".join(shown)


def coachlm_records(source: Path, options: BuildOptions) -> SourceResult:
    """CoachLM rows → records, keeping only revisions that are edits of the response."""
    result = SourceResult("coachlm")
    schema = "CoachLM"
    rel = SOURCES["coachlm"].files[0]
    path = source / rel
    result.files[rel] = _sha256(path)
    first_of: dict[str, str] = {}
    for index, (number, row) in enumerate(_rows(path)):
        where = f"{path}:{number} (row {index + 1})"
        result.read += 1
        raw_instruction = _need(row, "Raw Instruction", str, where, schema)
        raw_input = _need(row, "Raw Input", str, where, schema)
        response = _need(row, "Raw Response", str, where, schema)
        revised_instruction = _need(row, "Revised Instruction", str, where, schema)
        revised_input = _need(row, "Revised Input", str, where, schema)
        revision = _need(row, "Revised Response", str, where, schema)
        prompt = coachlm_prompt(raw_instruction, raw_input)
        if not response.strip() or not revision.strip() or not prompt:
            result.dropped["empty field"] += 1
            continue
        if (_word_ratio(raw_instruction, revised_instruction) < options.coachlm_min_prompt_similarity
                or _word_ratio(coachlm_input(raw_input), coachlm_input(revised_input))
                < options.coachlm_min_prompt_similarity):
            result.dropped["instruction or input revised"] += 1
            continue
        edits = substantive_edits(response, revision, derive_edits(response, revision))
        if not edits:
            result.dropped["unchanged"] += 1
            continue
        if replaces_everything(response, edits):
            result.dropped["whole-response replacement"] += 1
            continue
        if len(edits) > options.coachlm_max_edits:
            result.dropped[f"more than {options.coachlm_max_edits} edits"] += 1
            continue
        cover = sum(len(e.span) for e in edits) / len(response)
        if cover > options.coachlm_max_cover:
            result.dropped[f"edits cover over {options.coachlm_max_cover:.0%} of the response"] += 1
            continue
        key = normalized_prompt(prompt)
        record = _record(
            result,
            id=f"coachlm-{index}", prompt=prompt, response=response,
            critique=difference_critique(response, edits), revision=revision,
            edits=[e.to_json() for e in edits], source="coachlm",
            meta={
                "parent_id": first_of.setdefault(key, f"coachlm-{index}"),
                "critique": "derived: from the difference between the response and the expert revision "
                            "(CoachLM has no written critique)",
                "edits": "derived: word-level diff (refine.edits.derive_edits)",
                "revision_kind": "expert edit",
                "edit_cover": round(cover, 3),
                "licence": SOURCES["coachlm"].licence,
            },
        )
        if record is not None:
            result.records.append(record)
    return result


# --- Shepherd ----------------------------------------------------------------------------------


def shepherd_records(source: Path, options: BuildOptions) -> SourceResult:
    """Shepherd rows (refine.importers.shepherd) → records with derived edits, short answers only."""
    result = SourceResult("shepherd")
    model_rel, raw_rel = SOURCES["shepherd"].files
    model_path, raw_path = source / model_rel, source / raw_rel
    result.files = {model_rel: _sha256(model_path), raw_rel: _sha256(raw_path)}
    raw: dict[str, dict] = {}
    for number, row in _rows(raw_path):
        key = _need(row, "id", (int, str), f"{raw_path}:{number}", "Shepherd raw annotation")
        raw[str(key)] = row
    rows = list(_rows(model_path))
    result.read = len(rows)
    try:
        imported = list(shepherd_rows(rows, raw, str(model_path)))
    except ImportSchemaError as exc:
        message = str(exc).replace("is FORMAT right for this file?", "is this the right file?")
        raise BuildDataError(message) from None
    for base in imported:
        if len(base.response) > options.shepherd_max_response:
            result.dropped[f"answer over {options.shepherd_max_response} characters"] += 1
            continue
        edits = substantive_edits(base.response, base.revision, derive_edits(base.response, base.revision))
        if not edits:
            result.dropped["unchanged"] += 1
            continue
        if (len(edits) > options.coachlm_max_edits
                or sum(len(e.span) for e in edits) / len(base.response) > options.coachlm_max_cover):
            # The reference answer is not an edit of the response: a diff of two unrelated texts
            # is a list of meaningless splices, so the answer is replaced as a whole.
            edits = [Edit("replace", base.response.strip(), base.revision.strip())]
        record = _record(
            result,
            **{**base.model_dump(exclude_none=True), "edits": [e.to_json() for e in edits],
               "meta": {
                   "parent_id": base.id,
                   **base.meta,
                   "critique": "human: Shepherd annotator's feedback",
                   "edits": "derived: word-level diff (refine.edits.derive_edits) to the reference answer when it is local (the CoachLM limits), else one edit replacing the whole answer",
                   "licence": SOURCES["shepherd"].licence,
               }},
        )
        if record is not None:
            result.records.append(record)
    return result


# --- AlpacaEval: nothing to fix -----------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    """The evaluation prompts no training record may carry: ids and normalized prompts."""

    ids: frozenset[str]
    prompts: frozenset[str]

    def has(self, prompt: str, row_id: str | None = None) -> bool:
        return (row_id is not None and row_id in self.ids) or normalized_prompt(prompt) in self.prompts


def eval_set(source: Path) -> EvalSet:
    """The first EVAL_PROMPTS rows of alpaca_eval/chatgpt.dev.jsonl."""
    path = source / SOURCES["alpaca_eval"].files[1]
    ids, prompts = set(), set()
    for count, (number, row) in enumerate(_rows(path)):
        if count >= EVAL_PROMPTS:
            break
        where = f"{path}:{number}"
        ids.add(str(_need(row, "id", (str, int), where, "AlpacaEval")))
        prompts.add(normalized_prompt(_need(row, "prompt", str, where, "AlpacaEval")))
    return EvalSet(frozenset(ids), frozenset(prompts))


def nothing_to_fix_records(source: Path, evaluation: EvalSet) -> SourceResult:
    """GPT-4's AlpacaEval answers → "Nothing to fix." records (revision = response, edits = []),
    leaving out every row of the evaluation set (by id or prompt)."""
    result = SourceResult("alpaca_eval")
    for rel in SOURCES["alpaca_eval"].files:
        result.files[rel] = _sha256(source / rel)
    path = source / SOURCES["alpaca_eval"].files[0]
    for number, row in _rows(path):
        where = f"{path}:{number}"
        result.read += 1
        row_id = str(_need(row, "id", (str, int), where, "AlpacaEval"))
        prompt = _need(row, "prompt", str, where, "AlpacaEval")
        response = _need(row, "response", str, where, "AlpacaEval")
        if evaluation.has(prompt, row_id):
            result.dropped["evaluation prompt"] += 1
            continue
        record = _record(
            result,
            id=f"{row_id}-gpt4-nothing-to-fix", prompt=prompt, response=response.strip(),
            critique=NOTHING_TO_FIX, revision=response.strip(), edits=[], source="alpaca_eval-gpt4",
            meta={
                "parent_id": row_id,
                "critique": "derived: nothing to fix (a GPT-4 answer taken as good; no person checked it)",
                "revision_kind": "unchanged",
                "generator": row.get("generator"),
                "dataset": row.get("dataset"),
                "licence": SOURCES["alpaca_eval"].licence,
            },
        )
        if record is not None:
            result.records.append(record)
    return result


# --- assembly ----------------------------------------------------------------------------------


def _group_parents(records: list[FeedbackRecord]) -> list[FeedbackRecord]:
    """Records whose parent_id is merged with every other record's sharing a prompt (union-find;
    the representative is the first parent met), so equal prompts land on the same side."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    order: dict[str, int] = {}
    for r in records:
        for node in (f"id:{r.meta['parent_id']}", f"prompt:{normalized_prompt(r.prompt or '')}"):
            order.setdefault(node, len(order))
    for r in records:
        a, b = find(f"id:{r.meta['parent_id']}"), find(f"prompt:{normalized_prompt(r.prompt or '')}")
        if a != b:
            first, second = sorted((a, b), key=order.__getitem__)
            parent[second] = first
    out = []
    for r in records:
        root = find(f"id:{r.meta['parent_id']}")  # an id node: a prompt node is met after its record's id
        if root[3:] != r.meta["parent_id"]:
            r = r.model_copy(update={"meta": {**r.meta, "parent_id": root[3:], "grouped_with": r.meta["parent_id"]}})
        out.append(r)
    return out


# Sources of edit records, most job-like first: human edits of strong-model paragraphs (LAMP),
# expert edits of instruction responses (CoachLM), then reference answers to short questions
# (Shepherd), which are mostly whole replacements. The training sample takes them in this order.
EDIT_SOURCE_ORDER = ("lamp", "coachlm", "shepherd")


def _by_priority(sizes: dict[str, int], total: int) -> dict[str, int]:
    """`total` split over sources: each source in EDIT_SOURCE_ORDER (then any other, by name)
    takes all of its records until `total` is reached."""
    order = sorted(sizes, key=lambda k: (EDIT_SOURCE_ORDER.index(k) if k in EDIT_SOURCE_ORDER else len(EDIT_SOURCE_ORDER), k))
    quota: dict[str, int] = {}
    left = total
    for name in order:
        quota[name] = min(sizes[name], left)
        left -= quota[name]
    return quota


def _sample(records: list[FeedbackRecord], k: int, seed: str) -> list[FeedbackRecord]:
    if k >= len(records):
        return list(records)
    picked = set(random.Random(seed).sample(range(len(records)), k))
    return [r for i, r in enumerate(records) if i in picked]


def _ntf_count(edit_count: int, share: float) -> int:
    return round(edit_count * share / (1 - share)) if share > 0 else 0


def select(train_side: list[FeedbackRecord], heldout_side: list[FeedbackRecord], options: BuildOptions
           ) -> tuple[list[FeedbackRecord], list[FeedbackRecord]]:
    """train.jsonl (a seeded sample of the training side, edit sources in order of EDIT_SOURCE_ORDER, nothing-to-fix at
    its share, edit sources by EDIT_SOURCE_ORDER, in a seeded order) and heldout.jsonl (every held-out edit record, nothing-to-fix
    records at the same share)."""

    def is_ntf(r: FeedbackRecord) -> bool:
        return r.source == "alpaca_eval-gpt4"

    edits_pool = [r for r in train_side if not is_ntf(r)]
    ntf_pool = [r for r in train_side if is_ntf(r)]
    share = options.nothing_to_fix_share
    wanted = options.train_size or len(train_side)
    if wanted >= len(edits_pool) + _ntf_count(len(edits_pool), share):
        edit_n, ntf_n = len(edits_pool), _ntf_count(len(edits_pool), share)
    else:
        ntf_n = round(wanted * share)
        edit_n = wanted - min(ntf_n, len(ntf_pool))
    by_source: dict[str, list[FeedbackRecord]] = {}
    for r in edits_pool:
        by_source.setdefault(r.source or "", []).append(r)
    quotas = _by_priority({k: len(v) for k, v in by_source.items()}, edit_n)
    train = [r for name in by_source for r in _sample(by_source[name], quotas[name], f"{options.seed}:{name}")]
    train += _sample(ntf_pool, ntf_n, f"{options.seed}:nothing-to-fix")
    random.Random(options.seed).shuffle(train)
    held_edits = [r for r in heldout_side if not is_ntf(r)]
    held_ntf = [r for r in heldout_side if is_ntf(r)]
    heldout = held_edits + _sample(held_ntf, _ntf_count(len(held_edits), share), f"{options.seed}:heldout")
    return train, heldout


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0, "p95": 0, "max": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    median = statistics.median(ordered)
    return {"median": int(median) if median == int(median) else median, "p95": p95, "max": ordered[-1]}


def _side_card(records: list[FeedbackRecord]) -> dict[str, Any]:
    edit_records = [r for r in records if r.edits]
    ntf = [r for r in records if not r.edits and r.critique.strip() == NOTHING_TO_FIX]
    return {
        "records": len(records),
        "example_chars": _stats([example_chars(r) for r in records]),
        "response_chars": _stats([len(r.response) for r in records]),
        "revision_chars": _stats([len(r.revision) for r in records]),
        "critique_chars": _stats([len(r.critique) for r in records]),
        "edits_per_record": {**_stats([len(r.edits or []) for r in edit_records]),
                             "mean": round(statistics.fmean([len(r.edits or []) for r in edit_records]), 2)
                             if edit_records else 0},
        "whole_response_replacement_share": round(
            sum(is_whole_replacement(r) for r in edit_records) / len(edit_records), 3) if edit_records else 0,
        "nothing_to_fix_share": round(len(ntf) / len(records), 3) if records else 0,
    }


def build(source: str | Path, options: BuildOptions = BuildOptions(), *, skip_missing: bool = False,
          warn: Callable[[str], None] = lambda _: None) -> BuildResult:
    """Read every source in `source`, filter, split and sample (see the module docstring).

    A source with a missing file raises BuildDataError, or with `skip_missing` is left out after
    `warn(sentence)`. Raises BuildDataError when no record is left."""
    source = Path(source)
    if not source.is_dir():
        raise BuildDataError(f"{source}: no such folder; give the folder of the raw datasets with --source")
    results: dict[str, SourceResult] = {}
    skipped: list[str] = []
    for name in SOURCE_ORDER:
        missing = missing_files(source, name)
        if missing:
            if not skip_missing:
                raise BuildDataError(f"{missing[0]}: no such file (the {SOURCES[name].title} source needs it); "
                                     "give the folder of the raw datasets with --source, or pass --skip-missing "
                                     "to build without this source")
            warn(f"warning: {missing[0]} is missing: building without the {SOURCES[name].title} source")
            skipped.append(name)
    evaluation = eval_set(source) if "alpaca_eval" not in skipped else None
    if evaluation is None:
        warn("warning: without alpaca_eval/chatgpt.dev.jsonl the evaluation prompts cannot be left out")
    builders: dict[str, Callable[[], SourceResult]] = {
        "lamp": lambda: lamp_records(source),
        "coachlm": lambda: coachlm_records(source, options),
        "shepherd": lambda: shepherd_records(source, options),
        "alpaca_eval": lambda: nothing_to_fix_records(source, evaluation),  # type: ignore[arg-type]
    }
    for name in SOURCE_ORDER:
        if name not in skipped:
            results[name] = builders[name]()
    kept: list[FeedbackRecord] = []
    for name, result in results.items():
        for r in result.records:
            if evaluation is not None and name != "alpaca_eval" and evaluation.has(r.prompt or ""):
                result.dropped["evaluation prompt"] += 1
            elif example_chars(r) > options.max_chars:
                result.dropped[f"over {options.max_chars} characters"] += 1
            else:
                kept.append(r)
    if not kept:
        raise BuildDataError(f"{source}: no records left from its sources; check the folder and the options")
    kept = _group_parents(kept)
    train_side = [r for r in kept if not is_heldout(r, options.heldout_share)]
    heldout_side = [r for r in kept if is_heldout(r, options.heldout_share)]
    train, heldout = select(train_side, heldout_side, options)
    card = make_card(results, kept, train_side, train, heldout, options, skipped)
    return BuildResult(train=train, heldout=heldout, card=card, sources=results)


def make_card(results: dict[str, SourceResult], kept: list[FeedbackRecord], train_side: list[FeedbackRecord],
              train: list[FeedbackRecord], heldout: list[FeedbackRecord], options: BuildOptions,
              skipped: list[str]) -> dict[str, Any]:
    """The data card as JSON: options, per-source counts and drops, provenance, statistics."""
    source_of = {"alpaca_eval-gpt4": "alpaca_eval"}

    def count(records: Iterable[FeedbackRecord], name: str) -> int:
        return sum(source_of.get(r.source or "", r.source) == name for r in records)

    sources = {}
    for name, result in results.items():
        info = SOURCES[name]
        sources[name] = {
            "title": info.title,
            "read": result.read,
            "kept": count(kept, name),
            "dropped": dict(sorted(result.dropped.items())),
            "training_side": count(train_side, name),
            "train": count(train, name),
            "heldout": count(heldout, name),
            "repo": info.repo,
            "commit": info.commit,
            "upstream_path": info.upstream,
            "licence": info.licence,
            "used_as": info.used_as,
            "files_sha256": result.files,
            **({"edits_from": dict(sorted(result.edits_origin.items()))} if result.edits_origin else {}),
        }
    return {
        "name": "refine CnR training set with edits",
        "licence": "Non-commercial (CC BY-NC 4.0): Shepherd and AlpacaEval are CC BY-NC 4.0, CoachLM's "
                   "data is built on Alpaca-52k (non-commercial terms; the repository is Apache-2.0), LAMP is "
                   "BSD-3-Clause",
        "options": options.as_json(),
        "skipped_sources": skipped,
        "split": {
            "rule": "held out when int(sha256(meta.parent_id)[:8], 16) / 2**32 < heldout_share "
                    "(refine.training.data.is_heldout); records sharing a prompt share a parent_id",
            "heldout_share": options.heldout_share,
            "evaluation_set_excluded": f"the first {EVAL_PROMPTS} prompts of alpaca_eval/chatgpt.dev.jsonl "
                                       "(by id and by prompt, from every source)",
        },
        "sources": sources,
        "train": _side_card(train),
        "heldout": _side_card(heldout),
    }


def _table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def card_readme(card: dict[str, Any]) -> str:
    """The data card (README.md) generated from `card`."""
    o = card["options"]
    sources = card["sources"]
    counts = [["source", "read", "kept", "train", "heldout", "dropped"]]
    for name, s in sources.items():
        dropped = ", ".join(f"{n} {why}" for why, n in s["dropped"].items()) or "none"
        counts.append([name, str(s["read"]), str(s["kept"]), str(s["train"]), str(s["heldout"]), dropped])
    counts.append(["**total**", str(sum(s["read"] for s in sources.values())),
                   str(sum(s["kept"] for s in sources.values())), str(card["train"]["records"]),
                   str(card["heldout"]["records"]), ""])
    provenance = [["source", "repository", "commit", "upstream path", "licence"]]
    provenance += [[n, s["repo"], f"`{s['commit']}`", f"`{s['upstream_path']}`", s["licence"]]
                   for n, s in sources.items()]
    stats = [["", "train", "heldout"]]
    for label, key in (("example characters, median / p95", "example_chars"),
                       ("response characters, median / p95", "response_chars"),
                       ("revision characters, median / p95", "revision_chars"),
                       ("critique characters, median / p95", "critique_chars"),
                       ("edits per edit record, median / p95 / max", "edits_per_record")):
        cells = []
        for side in ("train", "heldout"):
            v = card[side][key]
            cells.append(" / ".join(str(v[k]) for k in (("median", "p95", "max") if key == "edits_per_record"
                                                         else ("median", "p95"))))
        stats.append([label, *cells])
    stats.append(["whole-response replacements (share of edit records)",
                  str(card["train"]["whole_response_replacement_share"]),
                  str(card["heldout"]["whole_response_replacement_share"])])
    stats.append(["nothing-to-fix share", str(card["train"]["nothing_to_fix_share"]),
                  str(card["heldout"]["nothing_to_fix_share"])])
    lamp_origin = sources.get("lamp", {}).get("edits_from", {})
    origin = ", ".join(f"{n} {k}" for k, n in lamp_origin.items()) or "none read"
    derived = [
        (f"**lamp**: {SOURCES['lamp'].used_as}. The writer's edits are applied one by one, each turned into "
         "edits with unique spans; when they do not give the postedit (a span not found, or changes the list "
         f"lacks) the edits are derived from the whole paragraph instead (records: {origin}). The critique is "
         "**derived** from the edit categories: the three most frequent, each with a quoted span, e.g. "
         "'The answer has clichés (\"…\") and awkward wording (\"…\").' A paragraph's three writers share "
         "`meta.parent_id`."),
        (f"**coachlm**: {SOURCES['coachlm'].used_as}. Kept only when the revision is an edit of the response: "
         f"at most {o['coachlm_max_edits']} edits (white-space-only edits are left out and not counted), their "
         f"spans cover at most {o['coachlm_max_cover']:.0%} of the response, not one whole-response "
         "replacement, and the expert did not substantially revise the instruction or input (word-level "
         f"similarity at least {o['coachlm_min_prompt_similarity']}). The critique is **derived** from the "
         "edits: one sentence per edit, quoting its span."),
        (f"**shepherd**: {SOURCES['shepherd'].used_as}. The critique is **human**; the edits are **derived** "
         f"from the difference when it is local (the CoachLM limits: at most {o['coachlm_max_edits']} edits covering "
         f"at most {o['coachlm_max_cover']:.0%} of the answer), else one edit replacing the whole answer — a "
         "diff between an answer and an unrelated reference answer is a list of meaningless splices. Only "
         "answers of at most "
         f"{o['shepherd_max_response']} characters."),
        ("**alpaca_eval-gpt4**: 'Nothing to fix.' records: response = revision = GPT-4's answer, no edits. "
         "The critique is **derived**: GPT-4's answers are taken as good; no person checked them. They make "
         f"up about {o['nothing_to_fix_share']:.0%} of each file, or less when there are too few."),
        (f"Every record: prompt + response + critique + the longer of revision and rendered edits is at most "
         f"{o['max_chars']} characters (about 1,024 tokens at ~4 characters per token; the target of a "
         "nothing-to-fix record is its critique alone)."),
    ]
    split = (f"A record is held out when int(sha256(meta.parent_id)[:8], 16) / 2**32 < {o['heldout_share']} "
             "(refine.training.data.is_heldout). Records from the same item share meta.parent_id (a LAMP "
             "paragraph's three writers; equal prompts, also across sources), so they land on the same side. "
             f"The evaluation set, {card['split']['evaluation_set_excluded']}, is in neither file. "
             f"`train.jsonl` is a seeded sample (seed {o['seed']}) of {o['train_size'] or 'all'} records of the "
             "training side, edit sources in the order LAMP, CoachLM, Shepherd, in a seeded order; `heldout.jsonl` holds every held-out "
             "edit record and nothing-to-fix records at their share.")
    skipped = (_wrap(f"**Sources left out (missing, --skip-missing):** {', '.join(card['skipped_sources'])}.")
               + "\n\n" if card["skipped_sources"] else "")
    bullets = "\n".join(_wrap(text, "- ") for text in derived)
    return f"""# CnR training set with edits — data card

Generated by `python -m refine build-data` (refine/build_data.py); do not edit by hand. Rebuild with:

    python -m refine build-data --source DIR --output DIR --train-size {o['train_size']} \\
      --nothing-to-fix-share {o['nothing_to_fix_share']} --heldout-share {o['heldout_share']} \\
      --max-chars {o['max_chars']} --seed {o['seed']}

Files: `train.jsonl` (train on this), `heldout.jsonl` (never train on it; evaluate on it),
`card.json` (these numbers as JSON, with the sha256 of every source file read). Train with
`python -m refine train --data train.jsonl --eval-data heldout.jsonl`.

Each line is a Refine feedback record (refine/records.py): `prompt`, `response`, `critique`,
`revision`, `edits` (applied in order to `response` they give `revision`, up to white space;
checked for every record), `source`, `meta`. `meta.critique` and `meta.edits` say where each was
taken from; **"derived" means written by this program, not by a person.**

## Licence

{_wrap(card['licence'] + '. Use the whole set, and anything trained on it, under CC BY-NC 4.0 with the attributions below.')}

{skipped}## Provenance

{_table(provenance)}

- **LAMP**: salesforce/creativity_eval (Chakrabarty et al.): three professional writers each
  edited the same 50 paragraphs written by GPT-4o, Claude-3.5-Sonnet and Llama-3.1-70B.
- **CoachLM**: lunyiliu/CoachLM (Liu et al.): experts revised Alpaca-52k responses.
- **Shepherd**: Wang et al. 2023, "Shepherd: A Critic for Language Model Generation".
- **AlpacaEval**: tatsu-lab/alpaca_eval (Li et al.): GPT-4's answers to AlpacaEval prompts.

## What each record is, and what is derived

{bullets}

## Split

{_wrap(split)}

## Counts

{_table(counts)}

## Statistics

{_table(stats)}
"""


def _wrap(text: str, first: str = "") -> str:
    import textwrap

    return textwrap.fill(text, width=96, initial_indent=first, subsequent_indent=" " * len(first),
                         break_long_words=False, break_on_hyphens=False)


def write_build(result: BuildResult, output: str | Path) -> dict[str, Path]:
    """Write train.jsonl, heldout.jsonl, card.json and README.md into `output` (created)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = {name: output / name for name in ("train.jsonl", "heldout.jsonl", "card.json", "README.md")}
    write_jsonl(paths["train.jsonl"], result.train)
    write_jsonl(paths["heldout.jsonl"], result.heldout)
    paths["card.json"].write_text(json.dumps(result.card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    paths["README.md"].write_text(card_readme(result.card), encoding="utf-8")
    return paths


def summary(result: BuildResult) -> list[str]:
    """One line per source for stderr: read, kept, dropped (why), train, heldout."""
    lines = []
    for name, s in result.card["sources"].items():
        dropped = ", ".join(f"{n} {why}" for why, n in s["dropped"].items()) or "none dropped"
        lines.append(f"{name:<12} {s['read']:>5} read, {s['kept']:>5} kept ({dropped}); "
                     f"{s['train']} train, {s['heldout']} heldout")
    return lines

