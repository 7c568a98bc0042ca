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
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from refine.aio import as_finished
from refine.backends import BackendPool
from refine.backends.base import Backend, BackendError, GenerationParams, Message
from refine.judging.prompt import judge_messages, prompt_version
from refine.judging.verdicts import Outcome, Side, combine, order_outcome, parse_verdict
from refine.records import PromptRow, end_cut_line, read_rows
from refine.settings import Settings

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
        """`backend:model`, written into every verdict row (no URL: it may carry credentials)."""
        return f"{self.backend}:{self.model or 'embedded'}"

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


def plan(rows: Iterable[PromptRow], *, vs_previous: bool = False) -> tuple[list[Pair], list[dict[str, Any]]]:
    """The pairs to judge in revised rows, and a `skipped` row for each incomplete round."""
    pairs: list[Pair] = []
    skipped: list[dict[str, Any]] = []
    for row in rows:
        extra = row.model_extra or {}
        if row.id is None or row.response is None or not isinstance(extra.get("rounds"), list):
            raise ValueError(f"row {row.id!r} is not a `refine revise` output row (needs id, response and rounds)")
        answers = {0: row.response}
        for r in extra["rounds"]:
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


def read_verdicts(path: Path) -> list[dict[str, Any]]:
    """The verdict rows of a file (a line cut by an interruption is ignored: that pair runs again)."""
    if not path.exists():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and {"id", "round", "versus", "outcome"} <= row.keys():
                rows.append(row)
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
        async with aclosing(backend.stream(judge_messages(pair.conversation, a, b, few_shot=few_shot), params)) as deltas:
            raw = "".join([delta async for delta in deltas])
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
    pairs, skipped = plan(read_rows(input_path, PromptRow), vs_previous=vs_previous)
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
        stamp["judge_model"] = backend.model_id if backend else None
        params = GenerationParams(max_new_tokens=spec.max_new_tokens, temperature=0.0)
        concurrency = settings.concurrency if spec.backend != "local" else 1
        with output.open("a", encoding="utf-8") as out, \
                tqdm(total=len(todo), unit="pair", desc="judge", disable=not progress) as bar:
            for row in skipped:
                _append(out, {**row, **stamp})
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
                    _append(out, {**row, **stamp})
                    bar.set_postfix(last=row["outcome"])
                bar.update()
    finally:
        await pool.aclose()
    return JudgeRun(judged=judged, skipped=len(skipped), failed=failed, already=already)
