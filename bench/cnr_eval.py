"""Compare CnR adapters through the real loop, as issue 10 measures them: each adapter revises
the first N ChatGPT answers and the first N GPT-4 answers of the AlpacaEval dev prompts
(`tests/data/alpaca_eval/`, CC BY-NC 4.0) with `python -m refine revise` and the acceptance rules,
then the outputs are summed up:

- parse rate: rounds whose output could be read (not "unparseable output"), of all rounds;
- edits applied / dropped (the `edits` format), with the reasons edits were dropped;
- "nothing to fix" on the GPT-4 answers: rows whose first round says so;
- rounds by outcome (accepted, nothing to fix, unchanged, rejected by rule, failed);
- median length ratio (words) of accepted revisions to the version they revised;
- seconds per round, and answers whose final version differs from the original.

    python bench/cnr_eval.py --adapter rewrite=adapters/smollm2-135m-cnr \\
        --adapter edits=runs/edits-1000 --rows 40 --rounds 3 --out runs/eval

Outputs go to OUT/<name>.<set>.jsonl (a run resumes where it stopped) and OUT/summary.md/.json.
Run with OMP_NUM_THREADS=1 on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refine.outcomes import outcome  # noqa: E402

SETS = {"chatgpt": "chatgpt.dev.jsonl", "gpt4": "gpt4.dev.jsonl"}


def run_revise(adapter: str, source: Path, output: Path, rows: int, rounds: int) -> None:
    """`python -m refine revise` on the first `rows` rows of `source` with `adapter` (resumes)."""
    command = [sys.executable, "-m", "refine", "revise", "--input", str(source), "--output", str(output),
               "--limit", str(rows), "--rounds", str(rounds), "--cnr-adapter", adapter]
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def words(text: str) -> int:
    return len(text.split())


def summarize(path: Path) -> dict[str, Any]:
    """The figures of one `revise` output file (see the module docstring)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rounds = [r for row in rows for r in row.get("rounds", [])]
    unparseable = sum(1 for r in rounds if r["status"] == "failed" and "unparseable" in (r.get("error") or ""))
    edits = [e for r in rounds for e in r.get("edits", [])]
    ratios = []
    for row in rows:
        current = row["response"]
        for r in row.get("rounds", []):
            if r["status"] == "complete" and not r.get("nothing_to_fix"):
                ratios.append(words(r["revision"]) / max(1, words(current)))
                current = r["revision"]
    first = [row["rounds"][0] for row in rows if row.get("rounds")]
    return {
        "rows": len(rows),
        "rounds": len(rounds),
        "parse_rate": round(1 - unparseable / len(rounds), 3) if rounds else None,
        "edits_applied": sum(1 for e in edits if e.get("applied")),
        "edits_dropped": sum(1 for e in edits if not e.get("applied")),
        "dropped_reasons": dict(Counter((e.get("reason") or "").split(":")[0] for e in edits if not e.get("applied"))),
        "nothing_to_fix_first_round": round(sum(1 for r in first if r.get("nothing_to_fix")) / len(first), 3)
        if first else None,
        "outcomes": dict(Counter(outcome(r["status"], r.get("nothing_to_fix", False), r.get("rejection"))
                                 for r in rounds)),
        "median_length_ratio_accepted": round(statistics.median(ratios), 3) if ratios else None,
        "accepted": len(ratios),
        "seconds_per_round": round(statistics.mean(r["duration"] for r in rounds), 1) if rounds else None,
        "answers_changed": sum(1 for row in rows if row["final"].split() != row["response"].split()),
    }


def markdown(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One table per answer set, one column per adapter."""
    out = []
    for name in SETS:
        columns = [a for a in summary if name in summary[a]]
        if not columns:
            continue
        keys = [k for k in summary[columns[0]][name]]
        out += [f"### {name} answers", "", "| | " + " | ".join(columns) + " |",
                "|---|" + "---|" * len(columns)]
        for k in keys:
            out.append(f"| {k.replace('_', ' ')} | " + " | ".join(
                json.dumps(summary[a][name][k], ensure_ascii=False) for a in columns) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", action="append", required=True, metavar="NAME=FOLDER",
                        help="An adapter to evaluate (repeatable).")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sets", default="chatgpt,gpt4", help="Comma-separated: chatgpt, gpt4.")
    parser.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "alpaca_eval")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "eval")
    parser.add_argument("--summarize-only", action="store_true", help="Only sum up existing outputs.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for spec in args.adapter:
        name, _, folder = spec.partition("=")
        for set_name in args.sets.split(","):
            output = args.out / f"{name}.{set_name}.jsonl"
            if not args.summarize_only:
                run_revise(folder, args.data / SETS[set_name], output, args.rows, args.rounds)
            if output.exists():
                summary.setdefault(name, {})[set_name] = summarize(output)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (args.out / "summary.md").write_text(markdown(summary), encoding="utf-8")
    print(markdown(summary))


if __name__ == "__main__":
    main()
