"""The `tgi` backend and the retry wrapper against a stand-in TGI over a real socket."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from refine.backends.base import (
    Backend,
    BackendError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    Finish,
    GenerationParams,
    StreamBroken,
    fold_system,
)
from refine.backends.retry import RetryingBackend, backoff_delay
from refine.backends.tgi import TGIBackend, render_prompt
from tests.standin_servers import (
    KEEP_ALIVE,
    TGI_INFO,
    TGI_MODEL,
    Cut,
    Pause,
    Drained,
    check_openapi,
    drain,
    json_reply,
    refused_url,
    sse_reply,
    text_reply,
    tgi_error,
    tgi_events,
    tgi_server,
)

TOKEN = "hf_standin_SECRET_4f9c2a"
MESSAGES = [{"role": "user", "content": "Name a colour."}]
GREEDY = GenerationParams(max_new_tokens=64)
TOKENS = ["Hello", ",", " wor", "ld", " ✓", "\n", ""]
TOO_LONG = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8192. Given: 8000 `inputs` tokens and 512 `max_new_tokens`"


@pytest.fixture
def server():
    with tgi_server() as s:
        yield s


@pytest.fixture
def tokenizer_dir(tiny_model_dir: Path) -> str:
    return str(tiny_model_dir)


@pytest.fixture
async def make(tokenizer_dir: str):
    made: list[Backend] = []

    def _make(url: str, **kwargs) -> TGIBackend:
        kwargs = {
            "tokenizer": tokenizer_dir,
            "api_key": TOKEN,
            "timeout": 2.0,
            "connect_timeout": 1.0,
            **kwargs,
        }
        made.append(TGIBackend(url, **kwargs))
        return made[-1]

    yield _make
    for backend in made:
        await backend.aclose()


async def collect(
    backend: Backend, params: GenerationParams = GREEDY
) -> tuple[list[str], BackendError | None]:
    """(text deltas, error); the Finish is checked to come last (see `drain`) and left out."""
    result = await drain(backend.stream(MESSAGES, params))
    return result.deltas, result.error


async def finished(backend: Backend, params: GenerationParams = GREEDY, messages=MESSAGES) -> Drained:
    result = await drain(backend.stream(messages, params))
    assert result.error is None, result.error
    return result


def test_standin_speaks_the_openapi_spec():
    for events in (tgi_events(TOKENS), tgi_events(TOKENS, eos=None, seed=7)):
        for event in events:
            check_openapi(event, "StreamResponse")
        assert events[-1]["generated_text"] == "".join(TOKENS) and events[-1]["details"]
        assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    check_openapi(TGI_INFO, "Info")
    check_openapi(tgi_error("Model is overloaded", "overloaded"), "ErrorResponse")
    with pytest.raises(AssertionError):  # the check is not vacuous
        check_openapi({"index": 1, "token": {"id": 1, "text": "a", "logprob": 0.0}}, "StreamResponse")


async def test_streams_one_delta_per_token_and_sends_template_adapter_and_token(server, make, tokenizer_dir):
    from transformers import AutoTokenizer

    server.on("POST", "/generate_stream", sse_reply([KEEP_ALIVE, *tgi_events(TOKENS), KEEP_ALIVE]))
    backend = make(server.url, adapter_id="org/cnr-lora")
    params = GenerationParams(max_new_tokens=64, stop=("\n\n",))

    deltas, err = await collect(backend, params)

    assert err is None
    # one per token, the special EOS left out; the "\n" waits to see whether "\n\n" follows
    assert deltas == [*TOKENS[:5], "\n"]
    assert "".join(deltas) == "Hello, world ✓\n"
    [request] = server.requests_to("/generate_stream")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    expected = AutoTokenizer.from_pretrained(tokenizer_dir).apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    assert request.json == {
        "inputs": expected,
        "parameters": {
            "max_new_tokens": 64,
            "details": True,
            "return_full_text": False,
            "do_sample": False,
            "stop": ["\n\n"],
            "adapter_id": "org/cnr-lora",
        },
    }
    check_openapi(request.json, "GenerateRequest")
    assert backend.model_id == f"{TGI_MODEL}+org/cnr-lora"


async def test_concurrent_streams_through_one_backend(server, make):
    server.on("POST", "/generate_stream", sse_reply([*tgi_events(TOKENS[:3]), Pause(0.05)]))
    backend = make(server.url)
    results = await asyncio.gather(*(collect(backend) for _ in range(8)))
    assert results == [(TOKENS[:3], None)] * 8
    assert len(server.requests_to("/info")) == 1


async def test_sampling_parameters(server, make):
    server.on("POST", "/generate_stream", sse_reply(tgi_events(["x"])))
    backend = make(server.url)
    await collect(backend, GenerationParams(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=42))
    await collect(backend, GenerationParams(max_new_tokens=8, temperature=0.7))
    sampled, full_top_p = (r.json["parameters"] for r in server.requests_to("/generate_stream"))
    assert sampled == {
        "max_new_tokens": 8,
        "details": True,
        "return_full_text": False,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 42,
    }
    assert "top_p" not in full_top_p  # TGI refuses top_p = 1.0
    assert len(server.requests_to("/info")) == 1  # fetched once


@pytest.mark.parametrize(
    ("status", "reply", "error"),
    [
        (
            422,
            json_reply(
                tgi_error("Input validation error: `top_k` must be strictly positive", "validation"), 422
            ),
            BadRequest,
        ),
        (422, json_reply(tgi_error(TOO_LONG, "validation"), 422), ContextTooLong),
        (
            424,
            json_reply(
                tgi_error("Request failed during generation: Server error: CUDA out of memory", "generation"),
                424,
            ),
            BackendUnavailable,
        ),
        (429, json_reply(tgi_error("Model is overloaded", "overloaded"), 429), BackendOverloaded),
        (
            500,
            json_reply(tgi_error("Incomplete generation", "incomplete_generation"), 500),
            BackendUnavailable,
        ),
        (
            503,
            text_reply("<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", 503),
            BackendUnavailable,
        ),
    ],
)
async def test_http_errors_map_to_typed_errors(server, make, status, reply, error):
    server.on("POST", "/generate_stream", reply)
    deltas, err = await collect(make(server.url))
    assert deltas == [] and type(err) is error
    assert err.status == status and err.partial == ""
    assert server.url in err.message and str(status) in err.message
    assert TOKEN not in err.message


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (tgi_error(TOO_LONG, "validation"), ContextTooLong),
        (
            tgi_error("Input validation error: `temperature` must be strictly positive", "validation"),
            BadRequest,
        ),
        (tgi_error("Model is overloaded", "overloaded"), BackendOverloaded),
    ],
)
async def test_error_event_before_any_token(server, make, event, error):
    # Real TGI answers /generate_stream with 200 and reports validation errors as an event.
    server.on("POST", "/generate_stream", sse_reply([event]))
    deltas, err = await collect(make(server.url))
    assert deltas == [] and type(err) is error
    assert event["error"] in err.message and server.url in err.message


async def test_error_event_mid_stream_is_broken_stream_with_partial(server, make):
    failure = tgi_error("Request failed during generation: Server error: CUDA out of memory", "generation")
    server.on("POST", "/generate_stream", sse_reply([*tgi_events(TOKENS)[:3], failure]))
    deltas, err = await collect(make(server.url))
    assert type(err) is StreamBroken
    assert err.partial == "".join(deltas) == "Hello, wor"
    assert "CUDA out of memory" in err.message and server.url in err.message


async def test_stream_cut_mid_answer(server, make):
    server.on("POST", "/generate_stream", sse_reply([*tgi_events(TOKENS)[:4], Cut()]))
    _, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == "Hello, world"
    assert server.url in err.message


async def test_stream_that_ends_without_last_event(server, make):
    server.on("POST", "/generate_stream", sse_reply(tgi_events(TOKENS)[:2]))
    _, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == "Hello,"


async def test_prompt_over_the_servers_limits_fails_before_sending(make):
    with tgi_server(max_input_tokens=5, max_total_tokens=4096) as server:
        _, err = await collect(make(server.url))
        assert type(err) is ContextTooLong and "at most 5 input tokens" in err.message
    with tgi_server(max_input_tokens=4000, max_total_tokens=100) as server:
        _, err = await collect(make(server.url), GenerationParams(max_new_tokens=512))
        assert type(err) is ContextTooLong and "max_new_tokens (512)" in err.message and "100" in err.message
        assert server.requests_to("/generate_stream") == []


async def test_connection_refused(make):
    url = refused_url()
    _, err = await collect(make(url))
    assert type(err) is BackendUnavailable and url in err.message


async def test_stalled_server_times_out_despite_keep_alives(server, make):
    keep_alives = [step for _ in range(30) for step in (KEEP_ALIVE, Pause(0.1))]
    server.on("POST", "/generate_stream", sse_reply(keep_alives))
    started = time.monotonic()
    _, err = await collect(make(server.url, timeout=0.3))
    assert type(err) is BackendTimeout and "0.3 s" in err.message
    assert time.monotonic() - started < 1.5


async def test_stall_mid_stream_times_out_with_partial(server, make):
    server.on("POST", "/generate_stream", sse_reply([*tgi_events(TOKENS)[:2], Pause(5)]))
    _, err = await collect(make(server.url, timeout=0.3))
    assert type(err) is BackendTimeout and err.partial == "Hello,"


async def test_health(server, make):
    backend = make(server.url)
    await backend.health()
    server.on("GET", "/health", json_reply(tgi_error("unhealthy", "healthcheck"), 503))
    with pytest.raises(BackendUnavailable, match="503.*unhealthy"):
        await backend.health()


async def test_token_from_hf_token_env_and_never_in_messages(server, make, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    # A (badly behaved) proxy that echoes the request's Authorization header in its error.
    server.on("POST", "/generate_stream", json_reply({"error": f"bad header: Bearer {TOKEN}"}, 401))
    backend = make(server.url, api_key=None)
    _, err = await collect(backend)
    assert server.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert type(err) is BackendError and "***" in err.message and "check the API key" in err.message
    for text in (str(err), repr(err), repr(backend), repr(RetryingBackend(backend))):
        assert TOKEN not in text


async def test_tokenizer_that_cannot_be_loaded_is_a_clear_error(server, make):
    _, err = await collect(make(server.url, tokenizer="no-such-org/no-such-model"))
    assert type(err) is BackendError and "REFINE_TOKENIZER" in err.message
    assert server.requests_to("/generate_stream") == []


def test_template_bos_is_not_doubled():
    class Tok:  # a tokenizer that adds BOS itself and whose template writes it too
        chat_template = "x"
        bos_token, bos_token_id = "<s>", 1

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<s>[INST] hi [/INST]"

        def __call__(self, text):
            return {"input_ids": [1] + [5] * len(text.split())}

    assert render_prompt(Tok(), MESSAGES) == ("[INST] hi [/INST]", 4)


# --- retries ---------------------------------------------------------------------------------


def retrying(backend: Backend, retries: int = 2) -> RetryingBackend:
    return RetryingBackend(backend, retries=retries, base_delay=0.01, max_delay=0.05)


async def test_retry_before_first_token_succeeds_after_transient_failures(server, make):
    server.on(
        "POST",
        "/generate_stream",
        text_reply("<html>503 Service Temporarily Unavailable</html>", 503),
        sse_reply([tgi_error("Model is overloaded", "overloaded")]),
        json_reply(tgi_error("Model is overloaded", "overloaded"), 429),
        sse_reply(tgi_events(TOKENS)),
    )
    deltas, err = await collect(retrying(make(server.url), retries=3))
    assert err is None and deltas == TOKENS
    assert len(server.requests_to("/generate_stream")) == 4


@pytest.mark.parametrize(("failure", "error"), [(Cut(), StreamBroken), (Pause(5), BackendTimeout)])
async def test_no_retry_after_first_token(server, make, failure, error):
    # A timeout is retryable before the first token, but not once text has gone out.
    server.on(
        "POST",
        "/generate_stream",
        sse_reply([*tgi_events(TOKENS)[:2], failure]),
        sse_reply(tgi_events(TOKENS)),
    )
    deltas, err = await collect(retrying(make(server.url, timeout=0.3)))
    assert type(err) is error and err.partial == "Hello," and deltas == ["Hello", ","]
    assert len(server.requests_to("/generate_stream")) == 1


async def test_no_retry_for_bad_requests(server, make):
    server.on(
        "POST",
        "/generate_stream",
        json_reply(tgi_error(TOO_LONG, "validation"), 422),
        sse_reply(tgi_events(TOKENS)),
    )
    _, err = await collect(retrying(make(server.url)))
    assert type(err) is ContextTooLong
    assert len(server.requests_to("/generate_stream")) == 1


async def test_retries_give_up_with_the_last_error(make):
    url = refused_url()
    _, err = await collect(retrying(make(url), retries=2))
    assert (
        type(err) is BackendUnavailable and "gave up after 3 attempts" in err.message and url in err.message
    )


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_delay(0, base=0.5, cap=8, rand=lambda: 0.0) == 0.25
    assert backoff_delay(0, base=0.5, cap=8, rand=lambda: 0.999) < 0.5
    assert backoff_delay(3, base=0.5, cap=8, rand=lambda: 0.0) == 2.0
    assert backoff_delay(10, base=0.5, cap=8, rand=lambda: 0.999) < 8


# --- why a generation ended -------------------------------------------------------------------


async def test_finish_reason_from_the_last_events_details(server, make):
    backend = make(server.url)
    server.on("POST", "/generate_stream", sse_reply(tgi_events(TOKENS)))
    assert (await finished(backend)).finish == Finish("stop", "eos_token", len(TOKENS) + 1)  # + EOS
    server.on("POST", "/generate_stream", sse_reply(tgi_events(["Cut", " sh"], eos=None)))
    result = await finished(backend)
    assert result.text == "Cut sh" and result.finish == Finish("length", "length", 2)
    stopped = tgi_events(["A", "\n\n"], eos=None)
    stopped[-1]["details"]["finish_reason"] = "stop_sequence"
    server.on("POST", "/generate_stream", sse_reply(stopped))
    assert (await finished(backend)).finish == Finish("stop", "stop_sequence", 2)
    no_details = tgi_events(["A"])
    no_details[-1]["details"] = None  # a server that ignored `details: true`
    server.on("POST", "/generate_stream", sse_reply(no_details))
    assert (await finished(backend)).finish == Finish("unknown")


async def test_retrying_backend_passes_the_finish_through(server, make):
    server.on("POST", "/generate_stream", sse_reply(tgi_events(["x"], eos=None)))
    result = await finished(retrying(make(server.url)))
    assert result.text == "x" and result.finish == Finish("length", "length", 1)


# --- stop strings -----------------------------------------------------------------------------


async def test_stop_strings_beyond_the_servers_limit_are_applied_client_side(make):
    stops = ("\nA:", "\nB:", "\nC:", "✓")
    with tgi_server(max_stop_sequences=2) as server:
        server.on("POST", "/generate_stream", sse_reply(tgi_events(TOKENS)))
        result = await finished(make(server.url), GenerationParams(max_new_tokens=64, stop=stops))
        assert server.requests_to("/generate_stream")[0].json["parameters"]["stop"] == ["\nA:", "\nB:"]
    assert result.text == "Hello, world " and result.finish == Finish("stop", "stop_string")


async def test_a_server_that_ignores_stop_strings_is_cut_and_hung_up_on(server, make):
    tokens = ["Revision:", " Paris", ".\nCri", "tique:", " more"]
    events = tgi_events(tokens)
    server.on("POST", "/generate_stream", sse_reply([*events[:4], Pause(5), *events[4:]]))
    started = time.monotonic()
    params = GenerationParams(max_new_tokens=64, stop=("\nCritique:",))
    result = await finished(make(server.url, timeout=10.0), params)
    assert result.text == "Revision: Paris." and result.finish == Finish("stop", "stop_string")
    assert time.monotonic() - started < 1.0  # the connection was closed, not read to its end
    assert server.requests_to("/generate_stream")[0].json["parameters"]["stop"] == ["\nCritique:"]


# --- a chat template that refuses a system message --------------------------------------------

REFUSING_TOKENIZER = Path(__file__).parent / "data" / "tokenizer_refuses_system"
WITH_SYSTEM = [{"role": "system", "content": "Be brief."}, *MESSAGES]


async def test_a_template_that_refuses_system_gets_it_folded(server, make):
    from transformers import AutoTokenizer

    server.on("POST", "/generate_stream", sse_reply(tgi_events(["Red"])))
    result = await finished(make(server.url, tokenizer=str(REFUSING_TOKENIZER)), messages=WITH_SYSTEM)
    assert result.text == "Red"
    expected = AutoTokenizer.from_pretrained(REFUSING_TOKENIZER).apply_chat_template(
        fold_system(WITH_SYSTEM), tokenize=False, add_generation_prompt=True
    )
    assert "Be brief.\n\nName a colour." in expected
    assert server.requests_to("/generate_stream")[0].json["inputs"] == expected


async def test_a_conversation_the_template_refuses_is_a_clear_bad_request(server, make):
    backend = make(server.url, tokenizer=str(REFUSING_TOKENIZER))
    result = await drain(backend.stream([*WITH_SYSTEM, *MESSAGES], GREEDY))  # user, user: not alternating
    err = result.error
    assert type(err) is BadRequest and "\n" not in err.message and "Traceback" not in err.message
    assert "tokenizer_refuses_system" in err.message and "also with the system prompt folded" in err.message
    assert err.message.endswith("Conversation roles must alternate user/assistant/user/assistant/...")
    assert server.requests_to("/generate_stream") == []
