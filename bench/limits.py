"""Do the per-visitor limits hold under load? A bounded load test on loopback: `python app.py`
runs in its own process with the default limits (trusting one proxy, so that each client can
name its visitor with X-Forwarded-For, as behind a Space's proxy) against the scripted
OpenAI-compatible stand-in, and this process hammers it with gradio_client and httpx:

  new chat      N calls of /new_chat from one visitor (plain HTTP): how many are served, how fast
  statistics    one computed and one shared call, N parallel calls from N visitors (one
                computation serves them all), then N + 30 from one visitor (its requests per minute)
  admin token   the admin's export time alone, with 12 and N wrong guesses at once from as many
                visitors, and one visitor guessing 12 times (locked out after
                REFINE_ADMIN_MAX_FAILURES); plain HTTP, as a guessing script would
  turns         one visitor starting turns back to back (turns per minute), and three of its
                sessions at once (turns at once)
  upload        a 50 MB POST to /gradio_api/upload (the app has no upload component)
  read timeout  a backend whose server takes the prompt and says nothing: requests sent, and when
                the server saw the connection close

Everything is bounded: counts are capped, every call has a timeout, the run takes a minute or
two. Figures go to stdout (docs/hardening.md has a run's figures).

    python bench/limits.py
    python bench/limits.py --calls 100 --parallel 20
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradio_client import Client

from bench.ui_stream import cpu_seconds
from tests.test_app_harness import OUT_PANEL, Script, ScriptedServer, free_port, panel_text

ADMIN = "bench-admin-token"
CALL_TIMEOUT_S = 60
HTTP = httpx.Client(timeout=CALL_TIMEOUT_S, limits=httpx.Limits(max_connections=128))  # shared by the threads


def start_app(standin: str, db: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` with the default limits, one trusted proxy and an admin token (its log
    goes to a file next to the database: a pipe nobody reads would fill up and stall the app)."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "REFINE_RETRIES": "0", "REFINE_PROXY_HOPS": "1",
           "REFINE_ADMIN_TOKEN": ADMIN}
    env = {k: v for k, v in env.items() if not k.startswith(("REFINE_VISITOR_", "REFINE_ADMIN_MAX"))}
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1", "--base-backend",
           "openai", "--base-url", standin, "--cnr-backend", "openai", "--base-model", "standin", "--rounds", "1",
           "--database-url", f"sqlite:///{db}"]
    log = (db.parent / "app.log").open("w")
    app = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            if httpx.get(url + "config", timeout=1).status_code == 200:
                return app, url
        except httpx.HTTPError:
            pass
        if app.poll() is not None:
            raise SystemExit(f"the app did not start:\n{(db.parent / 'app.log').read_text()[-3000:]}")
        time.sleep(0.2)
    raise SystemExit("the app did not start in 120 s")


def run(url: str, api: str, data: list[Any], address: str) -> dict[str, Any]:
    """One call of an unqueued endpoint over plain HTTP (what a script would do; far lighter
    than a gradio_client, so the figures are the app's, not the load generator's)."""
    answer = HTTP.post(f"{url}gradio_api/run/{api}", json={"data": data}, headers={"X-Forwarded-For": address})
    answer.raise_for_status()
    return answer.json()


def call(url: str, api: str, data: list[Any], address: str) -> str:
    """One call of a queued endpoint over plain HTTP (POST /call/<api>, then its event stream);
    the stream's last data line."""
    headers = {"X-Forwarded-For": address}
    event = HTTP.post(f"{url}gradio_api/call/{api}", json={"data": data}, headers=headers)
    event.raise_for_status()
    answer = HTTP.get(f"{url}gradio_api/call/{api}/{event.json()['event_id']}", headers=headers)
    answer.raise_for_status()
    lines = [line for line in answer.text.splitlines() if line.startswith("data:")]
    if "event: complete" not in answer.text:
        raise RuntimeError(answer.text[-300:])
    return lines[-1]


def visitor(url: str, address: str) -> Client:
    return Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": address})


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - a refusal is an outcome here
        result = exc
    return time.monotonic() - started, result


def parallel(calls: list[Callable[[], Any]]) -> list[tuple[float, Any]]:
    """Run the calls at once (after all threads are ready); (seconds, result) each."""
    results: list[tuple[float, Any]] = [(0.0, None)] * len(calls)
    ready = threading.Barrier(len(calls))

    def one(i: int) -> None:
        ready.wait()
        results[i] = timed(calls[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CALL_TIMEOUT_S)
    return results


def ms(seconds: list[float]) -> str:
    if not seconds:
        return "–"
    return f"median {1000 * statistics.median(seconds):.0f} ms, max {1000 * max(seconds):.0f} ms"


def outcome(result: Any, served: Callable[[Any], bool]) -> str:
    if isinstance(result, Exception):
        return "refused" if "Too many requests" in str(result) else f"error ({type(result).__name__})"
    return "served" if served(result) else "refused"


def bench_new_chat(url: str, calls: int) -> None:
    started = time.monotonic()
    results = [timed(lambda: run(url, "new_chat", [], "203.0.113.10")) for _ in range(calls)]
    wall = time.monotonic() - started
    counts = Counter(outcome(r, lambda r: "Too many requests" not in str(r)) for _, r in results)
    print(f"new chat: {calls} calls from one visitor in {wall:.1f} s: {dict(counts)}; "
          f"{ms([t for t, _ in results])} per call")


def bench_statistics(url: str, app_pid: int, n: int) -> None:
    voter = visitor(url, "198.51.100.251")
    voter.predict("A turn to vote on", api_name="/respond")
    voter.predict(api_name="/vote_right")  # a new vote: the next statistics are computed afresh
    cold, _ = timed(lambda: voter.predict(api_name="/statistics"))
    warm, _ = timed(lambda: voter.predict(api_name="/statistics"))
    print(f"statistics: one call computing them {1000 * cold:.0f} ms, one served from the shared result "
          f"{1000 * warm:.0f} ms")
    cpu, own = cpu_seconds(app_pid), cpu_seconds(os.getpid())
    results = parallel([lambda i=i: call(url, "statistics", [], f"198.51.100.{i}") for i in range(n)])
    cpu, own = cpu_seconds(app_pid) - cpu, cpu_seconds(os.getpid()) - own
    counts = Counter(outcome(r, lambda r: "vote" in r) for _, r in results)
    print(f"statistics: {n} at once from {n} visitors: {dict(counts)}, {ms([t for t, _ in results])}; "
          f"CPU: app {cpu:.2f} s, the {n} clients {own:.2f} s")
    results = [timed(lambda: call(url, "statistics", [], "198.51.100.250")) for _ in range(n + 30)]
    counts = Counter(outcome(r, lambda r: "Too many" not in r) for _, r in results)
    print(f"statistics: {n + 30} in a row from one visitor: {dict(counts)}")


def bench_admin(url: str, app_pid: int, guesses: int) -> None:
    def export() -> float:
        seconds, answer = timed(lambda: run(url, "export", [ADMIN], "192.0.2.1"))
        assert "files ready" in str(answer), answer
        return seconds

    alone = [export() for _ in range(3)]
    print(f"admin export: alone {ms(alone)}")
    for n, first in ((12, 100), (guesses, 150)):
        calls: list[Callable[[], Any]] = [lambda a=f"192.0.2.{first + i}": run(url, "export", ["wrong"], a)
                                          for i in range(n)]
        cpu, own = cpu_seconds(app_pid), cpu_seconds(os.getpid())
        results = parallel([*calls, export])
        cpu, own = cpu_seconds(app_pid) - cpu, cpu_seconds(os.getpid()) - own
        during = results[-1][1] if isinstance(results[-1][1], float) else float("nan")
        wrong = [t for t, r in results[:-1]]
        print(f"admin export with {n} wrong guesses at once from {n} visitors: {1000 * during:.0f} ms; the guesses "
              f"were answered in {ms(wrong)}; CPU: app {cpu:.2f} s, the {n + 1} clients {own:.2f} s")
    answers = [timed(lambda i=i: run(url, "export", [f"guess-{i}"], "192.0.2.66")) for i in range(12)]
    kinds = Counter("locked out" if "🔒" in str(r) else "wrong" for _, r in answers)
    print(f"admin token: 12 guesses from one visitor: {dict(kinds)}, {ms([t for t, _ in answers])} each; "
          f"the admin's next export {1000 * export():.0f} ms")


def bench_turns(url: str, server: ScriptedServer) -> None:
    c = visitor(url, "203.0.113.20")
    results = [timed(lambda i=i: c.predict(f"Turn {i}", api_name="/respond")) for i in range(8)]
    counts = Counter("refused" if "turns in the last minute" in panel_text(r[OUT_PANEL]) else "served"
                     for _, r in results)
    print(f"turns: 8 in a row from one visitor: {dict(counts)}")
    sessions = [visitor(url, "203.0.113.21") for _ in range(3)]
    results = parallel([lambda s=s, i=i: s.predict(f"Slow {i} [slow]", api_name="/respond")
                        for i, s in enumerate(sessions)])
    counts = Counter("refused" if "still running" in panel_text(r[OUT_PANEL]) else "served" for _, r in results)
    sent = sum(r.json["messages"][-1]["content"].startswith("Slow")
               for r in server.requests_to("/v1/chat/completions"))
    print(f"turns: 3 sessions of one visitor at once: {dict(counts)} ({sent} base request(s) reached the model)")


def bench_upload(url: str, megabytes: int) -> None:
    body = b"x" * (megabytes * 1024 * 1024)
    seconds, answer = timed(lambda: httpx.post(url + "gradio_api/upload", files={"files": ("big.bin", body)},
                                               timeout=CALL_TIMEOUT_S))
    status = answer.status_code if isinstance(answer, httpx.Response) else type(answer).__name__
    print(f"upload: {megabytes} MB to /gradio_api/upload: {status} in {1000 * seconds:.0f} ms")


def bench_read_timeout() -> None:
    from refine.backends.base import GenerationParams
    from refine.backends.openai_compat import OpenAICompatBackend
    from refine.backends.retry import RetryingBackend
    from tests.standin_servers import drain
    from tests.test_backend_abandon import Silent

    server = Silent(headers_first=True, hold=10)
    backend = RetryingBackend(OpenAICompatBackend(server.url, model="m", timeout=1.0, connect_timeout=2), retries=2)

    async def run() -> Any:
        result = await drain(backend.stream([{"role": "user", "content": "a heavy prompt " * 2000}],
                                            GenerationParams(max_new_tokens=8)))
        await backend.aclose()
        return result

    seconds, result = timed(lambda: asyncio.run(run()))
    time.sleep(0.3)
    server.close()
    closed = ", ".join("never" if c is None else f"{c:.2f} s" for c in server.closed)
    print(f"read timeout (1 s, 2 retries allowed): {type(result.error).__name__} after {seconds:.2f} s; "
          f"{len(server.arrived)} request(s) sent; the server saw the connection closed after {closed}")


@click.command()
@click.option("--calls", default=200, type=click.IntRange(1, 1000), help="new_chat calls from one visitor.")
@click.option("--parallel", "n_parallel", default=40, type=click.IntRange(1, 100),
              help="Parallel statistics calls and wrong admin guesses.")
@click.option("--upload-mb", default=50, type=click.IntRange(1, 100), help="Size of the refused upload.")
def main(calls: int, n_parallel: int, upload_mb: int) -> None:
    """Run the bounded load test and print the figures."""
    with ScriptedServer(Script(delay=0.005)) as server, tempfile.TemporaryDirectory() as folder:
        app, url = start_app(server.url, Path(folder) / "refine.db")
        try:
            voter = visitor(url, "203.0.113.1")
            voter.predict("Something to count", api_name="/respond")
            voter.predict(api_name="/vote_left")
            bench_new_chat(url, calls)
            bench_statistics(url, app.pid, n_parallel)
            bench_admin(url, app.pid, n_parallel)
            bench_turns(url, server)
            bench_upload(url, upload_mb)
        finally:
            app.terminate()
            app.wait(30)
    bench_read_timeout()


if __name__ == "__main__":
    main()
