"""Training throughput of `refine train` on this machine: tokens/s and peak memory for LoRA on
the embedded SmolLM2-135M-Instruct, bf16 vs fp32, 1 vs 2 CPU threads (a few optimizer steps
each, on the shipped Shepherd records).

    python bench/training.py [--steps 3] [--grad-accum 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from refine.training.config import TrainConfig
from refine.training.trainer import train
config = TrainConfig(data=sys.argv[2], output=sys.argv[3], dtype=sys.argv[4], max_steps=int(sys.argv[5]),
                     grad_accum=int(sys.argv[6]), heldout_share=0.0, save_steps=10**6, logging_steps=1)
metrics = train(config).metrics
print(json.dumps({k: metrics[k] for k in ("tokens_per_s", "train_tokens", "train_runtime_s", "peak_memory_mb")}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--data", default=str(ROOT / "data" / "shepherd" / "records.jsonl"))
    args = parser.parse_args()
    print(f"{'dtype':9} {'threads':>7} {'tokens/s':>9} {'tokens':>7} {'peak MiB':>9}")
    for dtype in ("bfloat16", "float32"):
        for threads in (1, 2):
            with tempfile.TemporaryDirectory() as out:
                # a fresh process each: thread count and peak memory are per process
                done = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(threads),
                        args.data,
                        out,
                        dtype,
                        str(args.steps),
                        str(args.grad_accum),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            m = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{dtype:9} {threads:>7} {m['tokens_per_s']:>9} {m['train_tokens']:>7} {m['peak_memory_mb']:>9}"
            )


if __name__ == "__main__":
    main()
