"""Pairwise judging of a `refine revise` output file: for each prompt and round k, round k's
revision against the original (and optionally against round k−1), each pair in both orders.

One verdict row per pair is appended to the output as soon as the pair is judged:

    {id, round, versus: "original"|"previous", baseline_round, outcome, reason?,
     orders: [{revision_side, verdict, outcome, raw, error}, …], revision_words, baseline_words,
     length_ratio, judge, judge_model, prompt_version, cnr_model}

- A round whose status is not `complete` (failed or cancelled: the previous answer stood) is
  not judged; it gets a row with outcome `skipped` and the reason, so it is counted apart and
  not retried. Rounds after an early stop do not exist and get no row.
- A revision identical to its baseline is a tie without asking the judge (reason says so).
- A pair whose judge request fails (backend error) is not written: rerunning retries it.
- Resuming skips every (id, round, versus) already in the output; the output must come from
  the same judge and prompt version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from refine.aio import as_finished
from refine.backends import BackendPool
from refine.backends.base import Backend, BackendError, GenerationParams, Message, collect
from refine.errors import FileProblem
from refine.judging.prompt import judge_messages, prompt_version
from refine.judging.verdicts import Outcome, Side, combine, order_outcome, parse_verdict
from refine.records import InvalidRecordsError, PromptRow, RecordProblem, end_cut_line, read_rows
from refine.settings import Settings
from refine.textfiles import jsonl_values, text_lines

Versus = Literal["original", "previous"]
Key = tuple[str, int, str]


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge to ask: any backend kind, model and server; `max_new_tokens` bounds its answer;
    `few_shot` shows it worked examples first (see refine.judging.prompt)."""

    backend: str = "local"
    model: str = ""
    url: str | None = None
    api_key: SecretStr | None = None
    max_new_tokens: int = 32
    few_shot: bool = False

    @property
    def label(self) -> str:
        """`backend:model`, written into every verdict row: the model asked for, else `embedded`
        for the local default, else the server's address (host and port only: a URL may carry
        credentials) for a remote judge left to serve its default model. The model the server
        reports is written as `judge_model`."""
        if self.model:
            return f"{self.backend}:{self.model}"
        if self.backend == "local" or not self.url:
            return f"{self.backend}:embedded"
        return f"{self.backend}:default model at {server_address(self.url)}"

    @property
    def prompt_version(self) -> str:
        return prompt_version(self.few_shot)


@dataclass(frozen=True)
class Pair:
    """One comparison: round `round`'s revision against its baseline (the original or round k−1)."""

    id: str
    round: int
    versus: Versus
    conversation: list[Message]
    baseline: str
    revision: str
    cnr_model: str | None = None

    @property
    def key(self) -> Key:
        return (self.id, self.round, self.versus)

    @property
    def baseline_round(self) -> int:
        return 0 if self.versus == "original" else self.round - 1


@dataclass(frozen=True)
class JudgeRun:
    """What one `judge` run did: pairs judged now, skipped rounds recorded now, pairs whose judge
    request failed (not written), and pairs already in the output."""

    judged: int = 0
    skipped: int = 0
    failed: int = 0
    already: int = 0


def words(text: str) -> int:
    """Length of a text in whitespace-separated words."""
    return len(text.split())


class RevisedRound(BaseModel):
    """One round of a `refine revise` output row, as far as judging needs it."""

    model_config = ConfigDict(extra="allow")
    round: int = Field(ge=1)
    status: str
    revision: str | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _complete_has_revision(self) -> RevisedRound:
        if self.status == "complete" and self.revision is None:
            raise ValueError(f"round {self.round} is complete but has no 'revision'")
        return self


class RevisedRow(PromptRow):
    """A `refine revise` output row: an id, the original answer and its rounds."""

    id: str
    response: str
    rounds: list[RevisedRound]


NOT_REVISED = "give an output file of `refine revise` as --input"


def _rounds(row: PromptRow) -> Any:
    rounds = row.rounds if isinstance(row, RevisedRow) else (row.model_extra or {}).get("rounds")
    if not isinstance(rounds, list):
        return None
    return [r.model_dump() if isinstance(r, BaseModel) else r for r in rounds]


def plan(rows: Iterable[PromptRow], *, vs_previous: bool = False) -> tuple[list[Pair], list[dict[str, Any]]]:
    """The pairs to judge in revised rows, and a `skipped` row for each incomplete round."""
    pairs: list[Pair] = []
    skipped: list[dict[str, Any]] = []
    for row in rows:
        extra = row.model_extra or {}
        rounds = _rounds(row)
        if row.id is None or row.response is None or rounds is None:
            raise ValueError(f"row {row.id!r} is not a `refine revise` output row (needs id, response and rounds)")
        answers = {0: row.response}
        for r in rounds:
            k = int(r["round"])
            for versus in ("original", "previous") if vs_previous and k > 1 else ("original",):
                baseline = answers[0 if versus == "original" else k - 1]
                pair = Pair(row.id, k, versus, row.chat(), baseline, r["revision"], extra.get("cnr_model"))
                if r["status"] == "complete":
                    pairs.append(pair)
                else:
                    reason = f"round {r['status']}" + (f": {r['error']}" if r.get("error") else "")
                    skipped.append({"id": pair.id, "round": k, "versus": versus, "baseline_round": pair.baseline_round,
                                    "outcome": "skipped", "reason": reason})
            if r["status"] != "complete":
                break  # the loop stops at a failed round; nothing after it is a revision
            answers[k] = r["revision"]
    return pairs, skipped


def server_address(url: str) -> str:
    """`host[:port]` of a URL, without credentials, path or query."""
    from urllib.parse import urlsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.hostname or '?'}{port}"


def read_verdicts(path: Path) -> list[dict[str, Any]]:
    """The verdict rows of a file being resumed (a line cut by an interruption is ignored: that
    pair runs again). Statistics read a verdicts file with `load_verdicts`, which refuses bad lines."""
    if not path.exists():
        return []
    rows = []
    for _, line in text_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and {"id", "round", "versus", "outcome"} <= row.keys():
            rows.append(row)
    return rows


OUTCOMES = frozenset(get_args(Outcome))


def verdict_problem(row: Any) -> str | None:
    """Why a value is not a verdict row of `refine judge`, or None."""
    if not isinstance(row, dict):
        return f"expected a verdict object, got {type(row).__name__}"
    missing = [k for k in ("id", "round", "versus", "outcome") if k not in row]
    if missing:
        return f"not a verdict row of `refine judge`: missing {', '.join(map(repr, missing))}"
    if not isinstance(row["id"], (str, int)) or isinstance(row["id"], bool):
        return f"'id' must be a string or an integer, got {type(row['id']).__name__}"
    if not isinstance(row["round"], int) or isinstance(row["round"], bool) or row["round"] < 1:
        return f"'round' must be an integer of at least 1, got {row['round']!r}"
    if row["versus"] not in ("original", "previous"):
        return f"'versus' must be 'original' or 'previous', got {row['versus']!r}"
    if row["outcome"] not in OUTCOMES:
        return f"'outcome' must be one of {', '.join(sorted(OUTCOMES))}, got {row['outcome']!r}"
    ratio = row.get("length_ratio")
    if ratio is not None and (not isinstance(ratio, (int, float)) or isinstance(ratio, bool)):
        return f"'length_ratio' must be a number or null, got {type(ratio).__name__}"
    return None


def load_verdicts(path: Path) -> list[dict[str, Any]]:
    """Every verdict row of a file, for statistics: a line that is not a verdict row (not UTF-8,
    not JSON, cut off, wrong fields or types) refuses the file, each named with its line — a
    rate computed from fewer rows than the file holds would be silently wrong."""
    rows, problems = [], []
    for number, value in jsonl_values(path):
        reason = value.reason if isinstance(value, FileProblem) else verdict_problem(value)
        if reason:
            problems.append(RecordProblem(str(path), number, reason))
        else:
            rows.append(value)
    if problems:
        raise InvalidRecordsError(problems, hint="delete the bad lines (`refine judge` judges their pairs again "
                                                 "when it resumes)")
    return rows


def verdict_key(row: dict[str, Any]) -> Key:
    return (str(row["id"]), int(row["round"]), str(row["versus"]))


async def judge_pair(backend: Backend, pair: Pair, params: GenerationParams, *,
                     few_shot: bool = False) -> tuple[Outcome, list[dict[str, Any]]]:
    """Judge a pair in both orders (the original/baseline shown first, then the revision first);
    raises BackendError when a request fails."""
    orders = []
    for side in ("B", "A"):
        revision_side: Side = side  # type: ignore[assignment]
        a, b = (pair.baseline, pair.revision) if revision_side == "B" else (pair.revision, pair.baseline)
        messages = judge_messages(pair.conversation, a, b, few_shot=few_shot)
        raw, _ = await collect(backend.stream(messages, params))  # the text only: why it ended is moot
        parsed = parse_verdict(raw)
        orders.append({"revision_side": revision_side, "verdict": parsed.verdict,
                       "outcome": order_outcome(parsed.verdict, revision_side), "raw": raw, "error": parsed.error})
    return combine(orders[0]["outcome"], orders[1]["outcome"]), orders


def verdict_row(pair: Pair, outcome: Outcome, orders: list[dict[str, Any]], *, reason: str | None = None) -> dict[str, Any]:
    """The verdict row of a judged pair (judge fields are added by the writer)."""
    revision_words, baseline_words = words(pair.revision), words(pair.baseline)
    row: dict[str, Any] = {
        "id": pair.id, "round": pair.round, "versus": pair.versus, "baseline_round": pair.baseline_round,
        "outcome": outcome, "orders": orders, "revision_words": revision_words, "baseline_words": baseline_words,
        "length_ratio": revision_words / baseline_words if baseline_words else None, "cnr_model": pair.cnr_model,
    }
    if reason:
        row["reason"] = reason
    return row


async def judge_pairs(pairs: list[Pair], backend: Backend, params: GenerationParams, *, concurrency: int = 1,
                      few_shot: bool = False) -> AsyncIterator[tuple[Pair, dict[str, Any] | None, str | None]]:
    """Judge pairs with at most `concurrency` in flight; yields (pair, verdict row or None, error)
    as each finishes."""
    limit = asyncio.Semaphore(concurrency)

    async def one(pair: Pair) -> tuple[Pair, dict[str, Any] | None, str | None]:
        if pair.revision.strip() == pair.baseline.strip():
            return pair, verdict_row(pair, "tie", [], reason="identical texts: a tie without asking the judge"), None
        async with limit:
            try:
                outcome, orders = await judge_pair(backend, pair, params, few_shot=few_shot)
            except BackendError as err:
                return pair, None, f"{err.kind}: {err.message}"
        return pair, verdict_row(pair, outcome, orders), None

    async for result in as_finished(one(pair) for pair in pairs):
        yield result


def _check_same_judge(rows: list[dict[str, Any]], spec: JudgeSpec, path: Path) -> None:
    for row in rows:
        if row.get("judge") != spec.label or row.get("prompt_version") != spec.prompt_version:
            raise ValueError(
                f"{path} holds verdicts of judge {row.get('judge')!r} with prompt {row.get('prompt_version')!r}, "
                f"not {spec.label!r} with {spec.prompt_version!r}; write to another file")


def _append(out: Any, row: dict[str, Any]) -> None:
    out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()


def run_judge(input_path: Path, output: Path, spec: JudgeSpec, settings: Settings, *,
              vs_previous: bool = False, progress: bool = True) -> JudgeRun:
    """Judge every pair of a revised file not yet in `output`, appending verdict rows."""
    existing = read_verdicts(output)
    _check_same_judge(existing, spec, output)
    done = {verdict_key(r) for r in existing}
    pairs, skipped = plan(read_rows(input_path, RevisedRow, hint=NOT_REVISED), vs_previous=vs_previous)
    todo = [p for p in pairs if p.key not in done]
    new_skipped = [r for r in skipped if verdict_key(r) not in done]
    already = len(pairs) + len(skipped) - len(todo) - len(new_skipped)
    if not todo and not new_skipped:
        return JudgeRun(already=already)
    end_cut_line(output)
    return asyncio.run(_judge(todo, new_skipped, output, spec, settings, already=already, progress=progress))


async def _judge(todo: list[Pair], skipped: list[dict[str, Any]], output: Path, spec: JudgeSpec,
                 settings: Settings, *, already: int, progress: bool) -> JudgeRun:
    from tqdm import tqdm

    pool = BackendPool(settings)
    stamp = {"judge": spec.label, "prompt_version": spec.prompt_version}
    judged = failed = 0
    try:
        backend = pool.backend(spec.backend, spec.model, url=spec.url, api_key=spec.api_key) if todo else None
        # The judge's model id: known up front for a local judge or a named model; a remote judge
        # left to its default model reports it with its first answer (until then its id is only
        # the server's address, which is not written as a model).
        known_up_front = spec.backend == "local" or bool(spec.model)

        def judge_model(row: dict[str, Any]) -> str | None:
            if backend is None or not (known_up_front or row.get("orders")):
                return None
            return backend.model_id
        params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=0.0)
        concurrency = settings.concurrency if spec.backend != "local" else 1
        with output.open("a", encoding="utf-8") as out, \
                tqdm(total=len(todo), unit="pair", desc="judge", disable=not progress) as bar:
            for row in skipped:
                _append(out, {**row, **stamp, "judge_model": judge_model(row)})
            if backend is None:
                return JudgeRun(skipped=len(skipped), already=already)
            async for pair, row, error in judge_pairs(todo, backend, params, concurrency=concurrency,
                                                      few_shot=spec.few_shot):
                if row is None:
                    failed += 1
                    tqdm.write(f"{pair.id} round {pair.round} vs {pair.versus}: judge failed ({error}); "
                               "not written, rerun to retry")
                else:
                    judged += 1
                    _append(out, {**row, **stamp, "judge_model": judge_model(row)})
                    bar.set_postfix(last=row["outcome"])
                bar.update()
    finally:
        await pool.aclose()
    return JudgeRun(judged=judged, skipped=len(skipped), failed=failed, already=already)
