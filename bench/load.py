"""Start-up benchmark: loading the app's two local roles (base, CnR) on the embedded model.

Measures, each in a fresh process and in the same run (interleaved when repeated):

- before: two models, as BackendPool loaded them until issue 14 — the base model, and a second
  copy of it with the shipped adapter for the CnR role; no cache (each load dequantizes the GGUF);
- after, cache cold: BackendPool today — one model, adapter attached, serving both roles — into an
  empty cache folder (dequantizes once, then writes the cache);
- after, cache warm: the same, reading the folder the cold start wrote.

For each: seconds from the imports done to both backends ready, peak RSS (VmHWM) while loading
and after both roles generated (a warm start maps the safetensors file, whose pages count once
touched), and the ratios to "before". Then each process greedily generates a few tokens per role
and the parent checks every scenario wrote the same text as "before" (the same model, not faster
by being another one).

    python bench/load.py [--repeats 1] [--tokens 8] [--dtype auto] [--model FILE.gguf --adapter DIR]

Each load takes ~20-60 s on a 2-core machine; the cache folders (~0.5 GB in fp32) are made in a
temporary folder and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("before", "cold", "warm")
LABELS = {"before": "before: 2 models, no cache", "cold": "after: 1 model, cache cold",
          "warm": "after: 1 model, cache warm"}
PROMPT = [{"role": "user", "content": "What is 3 times 4?"}]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(scenario: str, cache: str, dtype: str, tokens: int, model: str, adapter: str | None) -> None:
    """One start-up, measured in this process; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    start = time.perf_counter()
    import asyncio

    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from refine.backends import BackendPool
    from refine.backends.base import Finish, GenerationParams
    from refine.backends.local import LocalBackend, LocalModel
    from refine.embedded import SHIPPED_ADAPTER
    from refine.settings import Settings

    imported = time.perf_counter()
    rss_imported = _status_mib("VmRSS")
    adapter = adapter or str(SHIPPED_ADAPTER)
    models: list = []
    if scenario == "before":
        base_model = LocalModel(model, dtype=dtype, cache_dir="none")
        cnr_model = LocalModel(model, adapter=adapter, dtype=dtype, cache_dir="none")
        models = [base_model, cnr_model]
        base, cnr = LocalBackend(base_model), LocalBackend(cnr_model)
    else:
        pool = BackendPool(Settings(base_model=model, cnr_adapter=adapter, dtype=dtype, cache_dir=cache))
        base, cnr = pool.get("base"), pool.get("cnr")
        models = list({id(b.local): b.local for b in (base, cnr)}.values())  # type: ignore[attr-defined]
    loaded = time.perf_counter()
    result = {"scenario": scenario, "import_s": imported - start, "load_s": loaded - imported,
              "rss_imported_mib": rss_imported, "peak_rss_mib": _status_mib("VmHWM"),
              "rss_loaded_mib": _status_mib("VmRSS"), "models": len(models), "dtype": models[0].dtype,
              "base_id": base.model_id, "cnr_id": cnr.model_id}

    if scenario != "before":  # what switching the adapter off and on again costs per generation
        shared = base.local.model  # type: ignore[attr-defined]
        switch = time.perf_counter()
        for _ in range(20):
            with shared.disable_adapter():
                pass
        result["switch_ms"] = (time.perf_counter() - switch) / 20 * 1000

    async def generate(backend) -> str:
        parts = [d async for d in backend.stream(PROMPT, GenerationParams(max_new_tokens=tokens))
                 if not isinstance(d, Finish)]
        return "".join(parts)

    if tokens:
        result["base_text"] = asyncio.run(generate(base))
        result["cnr_text"] = asyncio.run(generate(cnr))
    # mmap-ed safetensors pages count once touched: the peak after both roles generated is the
    # fair memory figure for a warm start
    result["peak_rss_generated_mib"] = _status_mib("VmHWM")
    for loaded_model in models:
        loaded_model.close()
    print("RESULT " + json.dumps(result), flush=True)


def run_child(scenario: str, cache: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", scenario, "--cache", str(cache), "--dtype", args.dtype,
           "--tokens", str(args.tokens), "--model", args.model, *(["--adapter", args.adapter] if args.adapter else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{scenario} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds of the three start-ups")
    parser.add_argument("--tokens", type=int, default=8, help="greedy tokens per role to compare (0 = none)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--model", default="", help="GGUF file (default: the embedded model)")
    parser.add_argument("--adapter", help="CnR adapter folder (default: the shipped adapter)")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.cache, args.dtype, args.tokens, args.model, args.adapter)
        return

    runs: dict[str, list[dict]] = {s: [] for s in SCENARIOS}
    work = Path(tempfile.mkdtemp(prefix="refine-bench-load-"))
    cache_mb = 0.0
    try:
        for r in range(args.repeats):
            cache = work / f"cache-{r}"
            for scenario in SCENARIOS:  # cold writes cache-r, warm reads it
                result = run_child(scenario, cache, args)
                runs[scenario].append(result)
                print(f"  round {r + 1} {scenario:<6} load {result['load_s']:6.1f} s, peak RSS "
                      f"{result['peak_rss_mib']:6.0f} MiB", file=sys.stderr, flush=True)
            cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {s: {k: statistics.median(run[k] for run in runs[s]) for k in
               ("import_s", "load_s", "peak_rss_mib", "rss_loaded_mib", "rss_imported_mib", "peak_rss_generated_mib")}
           for s in SCENARIOS}
    first = runs["before"][0]
    print(f"{args.model or 'embedded SmolLM2-135M-Instruct'} + {args.adapter or 'shipped adapter'}, dtype {first['dtype']}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}, median of {args.repeats} (fresh process each)")
    print(f"base role {first['base_id']!r}, CnR role {first['cnr_id']!r}; imports {med['before']['import_s']:.1f} s "
          f"and {med['before']['rss_imported_mib']:.0f} MiB before loading (not counted in load s)")
    gen = f"peak RSS after {args.tokens} tokens per role MiB"
    print(f"| start-up | models | load s | x before | peak RSS loading MiB | x before | {gen} | x before |")
    print("|---|---|---|---|---|---|---|---|")
    for s in SCENARIOS:
        m, b = med[s], med["before"]
        print(f"| {LABELS[s]} | {runs[s][0]['models']} | {m['load_s']:.1f} | {m['load_s'] / b['load_s']:.2f} | "
              f"{m['peak_rss_mib']:.0f} | {m['peak_rss_mib'] / b['peak_rss_mib']:.2f} | "
              f"{m['peak_rss_generated_mib']:.0f} | {m['peak_rss_generated_mib'] / b['peak_rss_generated_mib']:.2f} |")
    print(f"cache folder: {cache_mb:.0f} MiB on disk; switching the adapter off and on for a base-role "
          f"generation: {statistics.median(r['switch_ms'] for r in runs['warm']):.1f} ms")
    if args.tokens:
        same = all(run[f"{role}_text"] == first[f"{role}_text"] for s in SCENARIOS for run in runs[s]
                   for role in ("base", "cnr"))
        print(f"greedy {args.tokens}-token outputs of both roles identical in every start-up: {same}")
        print(f"  base: {first['base_text']!r}\n  cnr:  {first['cnr_text']!r}")


if __name__ == "__main__":
    main()
