"""How much the app slows a stream down: tokens/s that gradio_client receives ÷ tokens/s the
backend emits, for 1 and 32 concurrent sessions, and the time the app adds between the end of
the base answer and the first critique token. Targets: ratio ≥ 0.98, added latency ≤ 50 ms.

Three processes, so that none measures itself: the scripted OpenAI-compatible stand-in (a real
server; it records when it sent each token), `python app.py` against it, and this process with
one gradio_client per session. Times are CLOCK_MONOTONIC, shared by the processes.

Columns: ratio = (send time of the last token − of the tokens in the client's first update) ÷
(time the client saw the last token − saw its first update), per session; lag = how long after
its newest token was sent the client saw each update; gap client = first critique token seen −
full answer seen; gap server = first critique token sent − last answer token sent; app share =
that server gap less the CnR request's own time to first token (from the database); app CPU per
streamed token and the CPU cores the app and the clients used during the run.

    python bench/ui_stream.py                      # 1 and 32 sessions, 400 tokens at 200 tok/s each
    python bench/ui_stream.py --sessions 1,8,32 --tokens 800 --delay 0.002
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.standin_servers import Recorded, Reply, json_reply  # noqa: E402
from tests.test_app_harness import (  # noqa: E402
    OUT_CHAT, OUT_PANEL, Script, ScriptedServer, free_port, message_text,
)


class BenchServer(ScriptedServer):
    """The scripted stand-in, plus GET /emitted: what it sent, and when."""

    def next_reply(self, request: Recorded) -> Reply:
        if request.method == "GET" and request.path == "/emitted":
            with self.script.lock:
                return json_reply(list(self.script.emitted))
        return super().next_reply(request)


def serve_standin(delay: float, pad: int) -> None:
    """Run the stand-in until killed (the child process)."""
    with BenchServer(Script(delay=delay, pad_words=pad)) as server:
        print(server.url, flush=True)
        threading.Event().wait()


@dataclass
class Session:
    """What one client saw: (time, base-answer words, critique seen) per update."""

    prompt: str
    updates: list[tuple[float, int, bool]]


def _words_in_chat(chat: Any) -> int:
    if not isinstance(chat, list) or len(chat) < 2:
        return 0
    text = message_text(chat[-1])
    return 0 if text == "…" else len(text.split(" "))


def _critique_started(panel: Any) -> bool:
    """Whether the first critique token is on screen."""
    return isinstance(panel, list) and any(
        (m.get("metadata") or {}).get("title", "").startswith("Critique") and message_text(m) not in ("", "…")
        for m in panel)


def run_session(url: str, prompt: str, ready: threading.Barrier, go: threading.Event) -> Session:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    client.predict(api_name="/new_chat")  # Gradio builds a session's state on its first call: not measured here
    ready.wait()
    go.wait()
    job = client.submit(prompt, api_name="/respond")
    updates = []
    for out in job:
        updates.append((time.monotonic(), _words_in_chat(out[OUT_CHAT]), _critique_started(out[OUT_PANEL])))
    return Session(prompt, updates)


def analyse(session: Session, emitted: dict[tuple[str, str], dict], tokens: int, cnr_ttft: float) -> dict[str, float]:
    """Receive rate ÷ emit rate of the base answer over the same tokens (those after the
    client's first update), how late each update was (vs the send time of its newest token),
    and the gaps around the answer's end: as the client sees it, as the stand-in sees it, and
    the stand-in's gap less the CnR request's own time to first token (the app's share)."""
    sent = emitted[("base", session.prompt)]["times"]
    cnr = next(e for (role, p), e in emitted.items() if role == "cnr" and f"Prompt:\n{session.prompt}\n" in p)
    streaming = [(t, min(n, tokens)) for t, n, critique in session.updates if n and not critique]
    (t0, n0) = streaming[0]
    full = next(t for t, n in streaming if n >= tokens)
    ratio = (sent[tokens - 1] - sent[n0 - 1]) / (full - t0)
    lags = [1000 * (t - sent[n - 1]) for t, n in streaming if n <= tokens]
    first_critique = next(t for t, _, critique in session.updates if critique)
    return {"ratio": ratio, "received": (tokens - n0) / (full - t0), "emitted": (tokens - 1) / (sent[-1] - sent[0]),
            "lag_ms_median": statistics.median(lags), "lag_ms_max": max(lags),
            "client_gap_ms": 1000 * (first_critique - full), "server_gap_ms": 1000 * (cnr["times"][0] - sent[-1]),
            "app_gap_ms": 1000 * (cnr["times"][0] - sent[-1] - cnr_ttft)}


def start_app(standin: str, db: Path, concurrency: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "REFINE_RETRIES": "0",
           # every session comes from 127.0.0.1, i.e. is one visitor: no per-visitor limits here
           "REFINE_VISITOR_TURNS_PER_MINUTE": "0", "REFINE_VISITOR_CONCURRENT_TURNS": "0",
           "REFINE_VISITOR_REQUESTS_PER_MINUTE": "0", "REFINE_VISITOR_MAX_NEW_TOKENS": "4096"}
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--base-backend", "openai", "--base-url",
           standin, "--cnr-backend", "openai", "--base-model", "standin", "--rounds", "1", "--no-stop-early",
           "--concurrency", str(concurrency), "--max-new-tokens", "4096", "--database-url", f"sqlite:///{db}"]
    app = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            if httpx.get(url + "config", timeout=1).status_code == 200:
                return app, url
        except httpx.HTTPError:
            pass
        if app.poll() is not None:
            raise SystemExit(f"the app did not start:\n{app.stderr.read() if app.stderr else ''}")
        time.sleep(0.2)
    raise SystemExit("the app did not start in 120 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(url: str, standin: str, app_pid: int, db: Path, sessions: int, tokens: int,
          tag: str) -> tuple[list[dict], dict[str, float]]:
    """Run `sessions` turns at once; returns each session's figures, and the CPU the app and
    these clients used while they streamed (clients connect before, not counted)."""
    prompts = [f"{tag} session {i}" for i in range(sessions)]
    ready, go = threading.Barrier(sessions + 1), threading.Event()
    results: list[Session] = [None] * sessions  # type: ignore[list-item]

    def one(i: int) -> None:
        results[i] = run_session(url, prompts[i], ready, go)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    ready.wait()
    cpu, own, wall = cpu_seconds(app_pid), cpu_seconds(os.getpid()), time.monotonic()
    go.set()
    for t in threads:
        t.join()
    cpu, wall = cpu_seconds(app_pid) - cpu, time.monotonic() - wall
    clients = (cpu_seconds(os.getpid()) - own) / wall
    emitted = {(e["role"], e["prompt"]): e for e in httpx.get(standin + "/emitted").json()}
    with sqlite3.connect(db) as connection:  # the loop's time to the CnR model's first token, per turn
        ttft = dict(connection.execute(
            "SELECT t.prompt, r.ttft FROM rounds r JOIN turns t ON t.id = r.turn_id WHERE r.round_index = 1"))
    return [analyse(s, emitted, tokens, ttft[s.prompt]) for s in results], {"app_cpu_s": cpu, "wall_s": wall,
                                                                            "clients_cpu_share": clients}


@click.command()
@click.option("--sessions", default="1,32", help="Comma-separated numbers of concurrent sessions.")
@click.option("--tokens", default=400, help="Tokens of each base answer.")
@click.option("--delay", default=0.005, help="Seconds between tokens the stand-in sends (0.005 = 200 tok/s).")
@click.option("--repeat", default=2, help="Runs per session count (the best one is reported too).")
@click.option("--standin", "standin_mode", is_flag=True, hidden=True)
def main(sessions: str, tokens: int, delay: float, repeat: int, standin_mode: bool) -> None:
    """Measure the app's streaming overhead against a fast stand-in backend."""
    pad = tokens - 5  # "You said: <tag> session <i>" is 5 words
    if standin_mode:
        serve_standin(delay, pad)
        return
    counts = [int(n) for n in sessions.split(",")]
    server = subprocess.Popen([sys.executable, __file__, "--standin", "--delay", str(delay), "--tokens", str(tokens)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    standin = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        app, url = start_app(standin, db, max(counts))
        try:
            bench(url, standin, app.pid, db, 1, tokens, "warmup")
            print(f"stand-in: {tokens} tokens per answer, {1 / delay:.0f} tok/s per stream; {os.cpu_count()} CPUs")
            print(f"{'sessions':>8} {'run':>3} {'ratio mean':>10} {'ratio min':>9} {'recv tok/s':>10} "
                  f"{'emit tok/s':>10} {'lag ms med/max':>15} {'gap ms client med/max':>22} "
                  f"{'gap ms server med/max':>22} {'app share':>9} {'app CPU µs/token':>16} "
                  f"{'CPU cores app/clients':>21}")
            summary = {}
            for n in counts:
                for run in range(repeat):
                    rows, usage = bench(url, standin, app.pid, db, n, tokens, f"n{n}r{run}")
                    streamed = n * (2 * tokens + 8)  # the answer, then a critique and its revision
                    cpu_per_token = 1e6 * usage["app_cpu_s"] / streamed
                    app_share = usage["app_cpu_s"] / usage["wall_s"]
                    ratios = [r["ratio"] for r in rows]
                    cg, sg = [r["client_gap_ms"] for r in rows], [r["server_gap_ms"] for r in rows]
                    lag_med = statistics.median(r["lag_ms_median"] for r in rows)
                    lag_max = max(r["lag_ms_max"] for r in rows)
                    print(f"{n:>8} {run:>3} {statistics.mean(ratios):>10.3f} {min(ratios):>9.3f} "
                          f"{statistics.mean(r['received'] for r in rows):>10.1f} "
                          f"{statistics.mean(r['emitted'] for r in rows):>10.1f} "
                          f"{lag_med:>7.1f} /{lag_max:>6.0f} {statistics.median(cg):>11.1f} /{max(cg):>8.1f} "
                          f"{statistics.median(sg):>11.1f} /{max(sg):>8.1f} "
                          f"{statistics.median(r['app_gap_ms'] for r in rows):>9.1f} {cpu_per_token:>16.0f} "
                          f"{app_share:>11.2f} / {usage['clients_cpu_share']:.2f}", flush=True)
                    summary.setdefault(n, []).append({"ratio_mean": statistics.mean(ratios), "ratio_min": min(ratios),
                                                      "lag_ms_median": lag_med,
                                                      "client_gap_ms_median": statistics.median(cg),
                                                      "server_gap_ms_median": statistics.median(sg),
                                                      "app_gap_ms_median": statistics.median(
                                                          r["app_gap_ms"] for r in rows),
                                                      "app_cpu_us_per_token": cpu_per_token,
                                                      "app_cpu_cores": app_share})
            print(json.dumps(summary))
        finally:
            app.terminate()
            app.wait(timeout=30)
            server.terminate()


if __name__ == "__main__":
    main()
