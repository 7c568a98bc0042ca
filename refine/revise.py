"""Batch refinement: `python -m refine revise` reads prompts (optionally with answers to revise),
runs the critique→revision rounds on each, and appends one JSON line per prompt.

Output row = the input row's fields, plus `id`, `response` (the original answer), `base_model`,
`base_finish_reason`, `cnr_model`, `rounds` (round 1 first: round, critique, revision, status —
complete, rejected, failed or cancelled —, rejection (the acceptance rule), stop_reason,
nothing_to_fix, error, finish_reason, ttft, duration, tokens, and `candidates` when several
were sampled or a selector judged them), `final` (the last accepted revision, or the original)
and `stop_reason`. The run ends with a summary of what became of the rounds (refine.outcomes).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import click

from refine.acceptance import AcceptanceConfig
from refine.aio import as_finished
from refine.backends import BackendPool, cnr_adapter, cnr_few_shot, cnr_format, cnr_model, generation_params
from refine.cli_options import model_options, selection_judge_options, settings_from
from refine.events import BaseDone, ErrorEvent, Event, RoundDone, TurnDone
from refine.loop import LoopConfig, refine_turn
from refine.outcomes import tally
from refine.records import InvalidRecordsError, PromptRow, end_cut_line, read_rows
from refine.selection import Selector, build_selector
from refine.settings import Settings

RowRecorder = Callable[[PromptRow], Callable[[Event], None]]  # row -> event sink (e.g. the database)


def row_id(row: PromptRow, position: int) -> str:
    """The row's own id, or its 1-based position in the input file."""
    return row.id if row.id is not None else f"row-{position}"


def done_ids(path: Path) -> set[str]:
    """Ids already written to an output file (for resuming)."""
    if not path.exists():
        return set()
    ids = set()
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    ids.add(str(json.loads(line)["id"]))
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by an interruption: that row runs again
    return ids


EMBEDDED_MIN_SIMILARITY = 0.3  # see refine.acceptance (rule `drifted`) and docs/acceptance.md


def embedded_cnr(settings: Settings) -> bool:
    """True when the CnR model is the embedded 135M model, which gets the stricter acceptance
    defaults (see refine.acceptance: `drifted`, and new repeats as `looping`)."""
    return settings.cnr_backend == "local" and not cnr_model(settings)


def min_similarity(settings: Settings) -> float:
    """The `drifted` rule's threshold: the setting, else 0.3 when the CnR model is the embedded
    135M model (it can edit an answer, not rewrite one) and 0 (off) for any other model."""
    if settings.accept_min_similarity is not None:
        return settings.accept_min_similarity
    return EMBEDDED_MIN_SIMILARITY if embedded_cnr(settings) else 0.0


EMBEDDED_MIN_LENGTH_RATIO = 0.85  # see docs/acceptance.md: its shorter revisions drop content


def min_length_ratio(settings: Settings) -> float:
    """The `collapsed` rule's threshold: the setting, else 0.85 for the embedded 135M model
    (every revision of it read that kept 0.5–0.85 of a long answer had dropped content: list
    items, an ingredient list, the closing line) and 0.5 for any other model."""
    if settings.accept_min_length_ratio is not None:
        return settings.accept_min_length_ratio
    return EMBEDDED_MIN_LENGTH_RATIO if embedded_cnr(settings) else 0.5


def loop_config(settings: Settings) -> LoopConfig:
    """The loop settings for a Settings object."""
    return LoopConfig(
        rounds=settings.rounds, stop_early=settings.stop_early, few_shot=cnr_few_shot(settings),
        base_params=generation_params(settings, "base"), cnr_params=generation_params(settings, "cnr"),
        acceptance=AcceptanceConfig(
            max_repeats=settings.accept_max_repeats, min_length_ratio=min_length_ratio(settings),
            collapse_min_words=settings.accept_collapse_min_words, min_similarity=min_similarity(settings),
            unchanged_similarity=settings.accept_unchanged_similarity,
            forbid_new_repeats=embedded_cnr(settings) if settings.accept_forbid_new_repeats is None
            else settings.accept_forbid_new_repeats),
        candidates=settings.candidates, cnr_format=cnr_format(settings),
    )


def _candidate_dict(c: Any, chosen: bool) -> dict[str, Any]:
    return {"critique": c.critique, "revision": c.revision, "status": c.status, "nothing_to_fix": c.nothing_to_fix,
            "rejection": c.rejection, "detail": c.detail, "finish_reason": c.finish_reason,
            "verdicts": list(c.verdicts), "tokens": c.timing.tokens, "chosen": chosen}


def output_row(row: PromptRow, rid: str, events: list[Event]) -> dict[str, Any] | None:
    """The output JSON object for one refined row, or None when its base answer failed."""
    base = next((e for e in events if isinstance(e, BaseDone)), None)
    end = next((e for e in events if isinstance(e, TurnDone)), None)
    if base is None or end is None:
        return None
    rounds = []
    for e in events:
        if not isinstance(e, RoundDone):
            continue
        r = {
            "round": e.round, "critique": e.critique, "revision": e.revision, "status": e.status,
            "rejection": e.rejection, "stop_reason": e.stop_reason, "nothing_to_fix": e.nothing_to_fix,
            "error": e.error, "finish_reason": e.finish_reason, "ttft": e.timing.ttft,
            "duration": round(e.timing.duration, 3), "tokens": e.timing.tokens,
        }
        if e.edits:
            r["edits"] = list(e.edits)
        if len(e.candidates) > 1 or any(c.verdicts for c in e.candidates):
            r["candidates"] = [_candidate_dict(c, i == e.chosen) for i, c in enumerate(e.candidates)]
        rounds.append(r)
    data = row.model_dump(exclude_none=True)
    data.update(
        id=rid, response=base.text, base_model=base.model, base_finish_reason=base.finish_reason,
        cnr_model=next((e.model for e in events if isinstance(e, RoundDone)), None),
        format=next((e.cnr_format for e in events if isinstance(e, RoundDone)), None), rounds=rounds, final=end.final, stop_reason=end.stop_reason,
    )
    return data


async def revise_rows(
    rows: list[tuple[str, PromptRow]],
    pool: BackendPool,
    config: LoopConfig,
    *,
    concurrency: int = 1,
    recorder: RowRecorder | None = None,
    selector: Selector | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Refine rows with at most `concurrency` in flight; yields (id, output row or None, error)
    as each finishes. `recorder`, if given, makes an event sink for each row; `selector`, if
    given, must prefer a revision for it to be accepted."""
    cnr = pool.get("cnr")
    needs_base = any(r.response is None for _, r in rows)
    base = pool.get("base") if needs_base else None
    limit = asyncio.Semaphore(concurrency)

    async def one(rid: str, row: PromptRow) -> tuple[str, dict[str, Any] | None, str | None]:
        async with limit:
            events: list[Event] = []
            sink = recorder(row) if recorder else None
            async for event in refine_turn(row.chat(), cnr=cnr, base=base, config=config, response=row.response,
                                           selector=selector):
                if sink is not None:
                    sink(event)
                if not type(event).__name__.endswith("Delta"):
                    events.append(event)
            error = next((f"{e.kind}: {e.message}" for e in events if isinstance(e, ErrorEvent) and e.stage == "base"), None)
            return rid, output_row(row, rid, events), error

    async for result in as_finished(one(rid, row) for rid, row in rows):
        yield result


async def _run(rows: list[tuple[str, PromptRow]], settings: Settings, output: Path, db_url: str | None) -> int:
    from tqdm import tqdm

    pool = BackendPool(settings)
    remote = settings.base_backend != "local" or settings.cnr_backend != "local"
    recorder, engine = _database_recorder(db_url, settings) if db_url else (None, None)
    failures = 0
    end_cut_line(output)
    try:
        with output.open("a", encoding="utf-8") as out, tqdm(total=len(rows), unit="prompt", desc="revise") as bar:
            async for rid, data, error in revise_rows(
                rows, pool, loop_config(settings), concurrency=settings.concurrency if remote else 1, recorder=recorder,
                selector=build_selector(settings, pool),
            ):
                if data is None:
                    failures += 1
                    tqdm.write(f"{rid}: base answer failed ({error}); not written, rerun to retry", file=sys.stderr)
                else:
                    out.write(json.dumps(data, ensure_ascii=False) + "\n")
                    out.flush()
                    bar.set_postfix(last=f"{len(data['rounds'])} rounds, {data['stop_reason']}")
                bar.update()
    finally:
        await pool.aclose()
        if engine is not None:
            engine.dispose()
    return failures


def outcome_summary(path: Path) -> str:
    """The Markdown outcome table of every round in a `revise` output file."""
    rounds = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rounds += json.loads(line).get("rounds", [])
            except (json.JSONDecodeError, AttributeError):
                continue
    return tally(rounds).markdown()


def _database_recorder(url: str, settings: Settings) -> tuple[RowRecorder, Any]:
    """Store every row's turn as its base answer ends and each round as it ends."""
    from db import open_database
    from db.recorder import EventRecorder

    engine = open_database(url if "://" in url else f"sqlite:///{Path(url).resolve()}")
    adapter = cnr_adapter(settings)  # stored with each round: the Arena and the statistics tell CnR models apart

    def recorder(row: PromptRow) -> Callable[[Event], None]:
        messages = [m.model_dump() for m in row.messages] if row.messages else None
        backend = "input" if row.response is not None else settings.base_backend
        return EventRecorder(engine, backend=backend, prompt=row.prompt, messages=messages, adapter=adapter).feed

    return recorder, engine


@click.command("revise")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSONL/CSV of {id?, prompt | messages, response?}; rows with a response are revised as given.")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSONL to append results to; ids already in it are skipped (resume).")
@click.option("--rounds", type=click.IntRange(1, 10), help="Critique→revision rounds per prompt [default 3].")
@click.option("--stop-early/--no-stop-early", default=None,
              help="Stop when the critique finds nothing to fix or the revision is unchanged [default on].")
@click.option("--limit", type=click.IntRange(1), help="Only the first N rows of the input.")
@click.option("--concurrency", type=click.IntRange(1, 256), help="Prompts in flight at once for remote backends [default 4].")
@click.option("--skip-invalid", is_flag=True, help="Skip invalid input rows instead of refusing the file.")
@click.option("--db", "db_url", help="Also store every turn and round in this database (SQLAlchemy URL or SQLite file path).")
@click.option("--select", type=click.Choice(["none", "judge"]),
              help="'judge': a revision must also beat the current answer in the pairwise judge, in both orders "
                   "(--judge-* options) [env REFINE_SELECT; default none].")
@click.option("--candidates", type=click.IntRange(1, 8),
              help="Revisions sampled per round (set --temperature > 0); the selector keeps the best accepted one "
                   "[default 1].")
@model_options
@selection_judge_options
def command(input_path: Path, output: Path, limit: int | None, skip_invalid: bool, db_url: str | None,
            stop_early: bool | None, **options: Any) -> None:
    """Critique and revise answers, round after round, for every prompt in INPUT.

    Rows without a `response` are first answered by the base model. Each round's critique and
    revision is written; the run resumes where it stopped if OUTPUT already has some ids.

    A revision replaces the answer only when it is complete, sound and (with --select judge)
    judged better; rejected rounds are written with their rule (see README, "Accepting a revision").

    \b
    Example (the shipped sample, embedded model, offline):
      python -m refine revise --input samples/chatgpt_answers.jsonl --output revised.jsonl --rounds 2 --limit 2
    """
    settings = settings_from({**options, "stop_early": stop_early})
    try:
        rows = read_rows(input_path, PromptRow, skip_invalid=skip_invalid)
    except InvalidRecordsError as exc:
        raise click.ClickException(str(exc)) from exc
    if limit:
        rows = rows[:limit]
    finished = done_ids(output)
    todo = [(rid, row) for i, row in enumerate(rows, start=1) if (rid := row_id(row, i)) not in finished]
    if finished:
        click.echo(f"resuming: {len(rows) - len(todo)} of {len(rows)} prompts already in {output}", err=True)
    if not todo:
        click.echo("nothing to do", err=True)
        return
    failures = asyncio.run(_run(todo, settings, output, db_url))
    click.echo(f"wrote {len(todo) - failures} rows to {output}" + (f"; {failures} failed" if failures else ""), err=True)
    summary = outcome_summary(output)
    if summary:
        click.echo(f"\nWhat became of the rounds in {output}:\n{summary}", err=True)
    if failures:
        sys.exit(1)
