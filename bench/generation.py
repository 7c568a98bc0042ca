"""Generation benchmark for the embedded model on this machine.

Prints, for SmolLM2-135M-Instruct through the local backend: tokens/s and time to first token
in fp32 vs bf16 (and whether their greedy outputs agree), then the refinement loop's overhead
against the raw backend stream of the same CnR request, measured in the same run.

    python bench/generation.py [--tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from refine.backends.base import Finish, GenerationParams  # noqa: E402
from refine.backends.local import LocalBackend, LocalModel  # noqa: E402
from refine.cnr_format import cnr_messages  # noqa: E402
from refine.loop import LoopConfig, refine_turn  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a message in a bottle."}]
ANSWER = "The keeper found a bottle. Inside was a map. He followed it and found nothing."


async def timed_stream(backend: LocalBackend, messages: list, params: GenerationParams) -> tuple[float, float, int, str]:
    """(time to first token, duration, tokens, text) of one raw stream; tokens as the backend
    counted them (its Finish), else the number of deltas."""
    start = time.perf_counter()
    first, parts, finish = None, [], Finish("unknown")
    async for item in backend.stream(messages, params):
        if isinstance(item, Finish):
            finish = item
            continue
        first = first if first is not None else time.perf_counter() - start
        parts.append(item)
    tokens = finish.tokens if finish.tokens is not None else len(parts)
    return first or 0.0, time.perf_counter() - start, tokens, "".join(parts)


async def bench_dtype(dtype: str, tokens: int, repeats: int) -> tuple[dict, str]:
    model = LocalModel("", dtype=dtype)
    backend = LocalBackend(model)
    params = GenerationParams(max_new_tokens=tokens)
    await timed_stream(backend, PROMPT, GenerationParams(max_new_tokens=8))  # warm-up
    runs = [await timed_stream(backend, PROMPT, params) for _ in range(repeats)]
    model.close()
    ttft = statistics.median(r[0] for r in runs)
    rate = statistics.median(r[2] / r[1] for r in runs)
    return {"dtype": model.dtype, "tok_s": rate, "ttft_ms": ttft * 1000, "tokens": runs[0][2]}, runs[0][3]


async def bench_loop(tokens: int, repeats: int) -> dict:
    model = LocalModel("", dtype="auto")
    backend = LocalBackend(model)
    params = GenerationParams(max_new_tokens=tokens)
    request = cnr_messages(PROMPT, ANSWER, few_shot=True)
    config = LoopConfig(rounds=1, few_shot=True, cnr_params=params)
    await timed_stream(backend, request, GenerationParams(max_new_tokens=8))
    raw, loop, events = [], [], []
    for _ in range(repeats):
        raw.append((await timed_stream(backend, request, params))[1])
        start, count = time.perf_counter(), 0
        async for _event in refine_turn(PROMPT, cnr=backend, config=config, response=ANSWER):
            count += 1
        loop.append(time.perf_counter() - start)
        events.append(count)
    model.close()
    raw_s, loop_s = statistics.median(raw), statistics.median(loop)
    return {"raw_s": raw_s, "loop_s": loop_s, "added_ms": (loop_s - raw_s) * 1000,
            "events": statistics.median(events), "events_s": statistics.median(events) / loop_s}


def agreement(a: str, b: str) -> float:
    """Share of leading characters two greedy outputs have in common."""
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return same / max(len(a), len(b), 1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    fp32, text32 = await bench_dtype("float32", args.tokens, args.repeats)
    bf16, text16 = await bench_dtype("bfloat16", args.tokens, args.repeats)
    print(f"embedded SmolLM2-135M-Instruct, {os.cpu_count()} cores, greedy, up to {args.tokens} new tokens, median of {args.repeats}")
    print(f"{'dtype':<10}{'tokens/s':>10}{'TTFT ms':>10}{'tokens':>8}")
    for row in (fp32, bf16):
        print(f"{row['dtype']:<10}{row['tok_s']:>10.1f}{row['ttft_ms']:>10.1f}{row['tokens']:>8}")
    print(f"bf16 / fp32 speed: {bf16['tok_s'] / fp32['tok_s']:.2f}x; greedy outputs agree on "
          f"{agreement(text32, text16):.0%} of their characters")

    loop = await bench_loop(args.tokens, args.repeats)
    print("\nrefinement loop (1 round, few-shot CnR request) vs the raw stream of the same request")
    print(f"raw stream {loop['raw_s']:.3f} s, loop {loop['loop_s']:.3f} s, added {loop['added_ms']:.1f} ms per round "
          f"({loop['loop_s'] / loop['raw_s']:.3f}x); {loop['events']:.0f} events, {loop['events_s']:.0f} events/s")


if __name__ == "__main__":
    asyncio.run(main())
