"""Decoding settings of the local CnR model, measured: for each repetition penalty / no-repeat
n-gram size, one critique→revision round on each input answer through the real loop and its
acceptance rules, in the same run (settings interleaved per answer, so load affects all alike).

Prints, per setting: parse rate, how many revisions loop (the acceptance rule, checked on the
full text even when the loop stopped the stream), outcomes by rule, tokens and seconds per round.
This chose REFINE_REPETITION_PENALTY's default (docs/acceptance.md has the table).

    python bench/decoding.py --input tests/data/alpaca_eval/chatgpt.dev.jsonl --limit 10 \\
        --setting 1.0:0 --setting 1.15:0 --setting 1.3:0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from refine.backends import BackendPool, generation_params  # noqa: E402
from refine.events import RoundDone  # noqa: E402
from refine.loop import LoopConfig, refine_turn  # noqa: E402
from refine.outcomes import outcome  # noqa: E402
from refine.settings import Settings  # noqa: E402


async def one_round(cnr, chat, response: str, config: LoopConfig) -> tuple[RoundDone, float]:
    start = time.perf_counter()
    done = None
    async for event in refine_turn(chat, cnr=cnr, config=config, response=response):
        if isinstance(event, RoundDone):
            done = event
    assert done is not None
    return done, time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in Path(args.input).read_text(encoding="utf-8").splitlines()][args.skip:]
    rows = rows[: args.limit]
    settings = Settings(cnr_max_new_tokens=args.max_new_tokens)
    pool = BackendPool(settings)
    cnr = pool.get("cnr")
    grid = [tuple(float(x) if i == 0 else int(x) for i, x in enumerate(s.split(":"))) for s in args.setting]
    results: dict[tuple, list[tuple[RoundDone, float]]] = {g: [] for g in grid}
    samples = []
    try:
        for i, row in enumerate(rows):
            chat = [{"role": "user", "content": row["prompt"]}]
            for penalty, ngram in grid:
                params = generation_params(settings.model_copy(update={"repetition_penalty": penalty,
                                                                       "no_repeat_ngram_size": ngram}), "cnr")
                config = LoopConfig(rounds=1, cnr_params=params)
                done, seconds = await one_round(cnr, chat, row["response"], config)
                results[(penalty, ngram)].append((done, seconds))
                samples.append({"id": row.get("id"), "penalty": penalty, "ngram": ngram, "status": done.status,
                                "rejection": done.rejection, "critique": done.critique, "revision": done.revision,
                                "seconds": round(seconds, 1), "tokens": done.timing.tokens})
                print(f"[{i + 1}/{len(rows)}] {penalty}:{ngram} {outcome(done.status, done.nothing_to_fix, done.rejection)}"
                      f" {done.timing.tokens} tok {seconds:.0f}s", file=sys.stderr, flush=True)
    finally:
        await pool.aclose()
    if args.samples:
        Path(args.samples).write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))

    print(f"\n{len(rows)} answers of {Path(args.input).name} (from row {args.skip + 1}), one round each, "
          f"max {args.max_new_tokens} new tokens\n")
    print("| repetition penalty | no-repeat n-gram | parsed | looping | outcomes | tokens/round (median) "
          "| s/round (median) | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for (penalty, ngram), runs in results.items():
        dones = [d for d, _ in runs]
        parsed = sum(d.status != "failed" and d.rejection != "cut_off" for d in dones)
        looping = sum(d.rejection == "looping" for d in dones)
        kinds = Counter(outcome(d.status, d.nothing_to_fix, d.rejection) for d in dones)
        tokens = sum(d.timing.tokens for d in dones)
        seconds = sum(s for _, s in runs)
        print(f"| {penalty} | {ngram} | {parsed}/{len(dones)} | {looping}/{len(dones)} | "
              f"{', '.join(f'{k} {v}' for k, v in kinds.most_common())} | "
              f"{statistics.median(d.timing.tokens for d in dones):.0f} | "
              f"{statistics.median(s for _, s in runs):.1f} | {tokens / seconds:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="JSONL of {prompt, response} (e.g. AlpacaEval answers)")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--skip", type=int, default=0, help="Rows to skip first (e.g. a tuning half)")
    parser.add_argument("--max-new-tokens", type=int, default=768)
    parser.add_argument("--setting", action="append", default=[], help="PENALTY:NGRAM, repeatable")
    parser.add_argument("--samples", help="Write every round's critique and revision to this JSONL")
    asyncio.run(main(parser.parse_args()))
