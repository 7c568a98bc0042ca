"""The `openai` backend against stand-ins of TGI's Messages API, vLLM, llama.cpp's server and hosted
APIs, over a real socket: what each sends on success and on failure."""

from __future__ import annotations

import json
import time
from contextlib import aclosing

import pytest

from refine.backends.base import (
    Backend,
    BackendError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextTooLong,
    GenerationParams,
    StreamBroken,
)
from refine.backends.openai_compat import OpenAICompatBackend, chat_completions_endpoint
from refine.backends.retry import RetryingBackend
from tests.standin_servers import (
    SPECS,
    Cut,
    Pause,
    Reply,
    StandinServer,
    check_openapi,
    json_reply,
    openai_chunks,
    refused_url,
    sse_reply,
    text_reply,
)

KEY = "sk-standin-SECRET-91b7e3"
PATH = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
PIECES = ["Deep", " red", ",", " like", " ✓", "\n"]
PARAMS = GenerationParams(max_new_tokens=32)
TOO_LONG_VLLM = (
    "This model's maximum context length is 4096 tokens. However, you requested 5021 tokens "
    "(4509 in the messages, 512 in the completion). Please reduce the length of the messages or completion."
)
TOO_LONG_LLAMA_CPP = {
    "error": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 5000,
        "n_ctx": 4096,
    }
}


@pytest.fixture
def server():
    with StandinServer() as s:
        yield s


@pytest.fixture
async def make():
    made: list[Backend] = []

    def _make(url: str, **kwargs) -> OpenAICompatBackend:
        kwargs = {"model": "served-model", "api_key": KEY, "timeout": 2.0, "connect_timeout": 1.0, **kwargs}
        made.append(OpenAICompatBackend(url, **kwargs))
        return made[-1]

    yield _make
    for backend in made:
        await backend.aclose()


async def collect(
    backend: Backend, params: GenerationParams = PARAMS
) -> tuple[list[str], BackendError | None]:
    deltas: list[str] = []
    try:
        async for delta in backend.stream(MESSAGES, params):
            deltas.append(delta)
    except BackendError as err:
        return deltas, err
    return deltas, None


def recorded_chunks() -> list[dict]:
    return json.loads((SPECS / "tgi-snapshots" / "test_chat_hfhub_usage.json").read_text())


def test_standin_chunks_match_the_spec_and_the_recording():
    recorded = recorded_chunks()[0]
    for chunk in [c for c in openai_chunks(PIECES) if isinstance(c, dict)]:
        check_openapi(chunk, "ChatCompletionChunk", strict=False)
        assert chunk.keys() == recorded.keys()
        assert chunk["choices"][0].keys() == recorded["choices"][0].keys()
        assert chunk["choices"][0]["delta"].keys() == recorded["choices"][0]["delta"].keys()
    for chunk in recorded_chunks():
        check_openapi(chunk, "ChatCompletionChunk", strict=False)


async def test_replays_a_recorded_tgi_stream(server, make):
    server.on("POST", PATH, sse_reply([*recorded_chunks(), "data: [DONE]\n\n"]))
    deltas, err = await collect(make(server.url))
    assert err is None and deltas == ["OK", "!"]  # the final usage chunk has no choices


async def test_streams_one_delta_per_chunk_and_sends_the_request(server, make, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.on("POST", PATH, sse_reply([": keep-alive\n\n", *openai_chunks(PIECES)]))
    backend = make(server.url + "/v1", api_key=None)
    deltas, err = await collect(backend, GenerationParams(max_new_tokens=32, stop=("\n\n",), seed=3))
    assert err is None and deltas == PIECES
    [request] = server.requests_to(PATH)
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json == {
        "model": "served-model",
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 32,
        "temperature": 0.0,
        "stop": ["\n\n"],
        "seed": 3,
    }
    check_openapi(request.json, "ChatRequest")
    assert backend.model_id == "served-model"


async def test_without_a_model_name_the_server_picks_and_names_it(server, make):
    server.on("POST", PATH, sse_reply(openai_chunks(["hi"], model="Qwen/Qwen2.5-0.5B-Instruct")))
    backend = make(server.url, model="", api_key="")
    await collect(backend, GenerationParams(max_new_tokens=8, temperature=0.8, top_p=0.95))
    body = server.requests_to(PATH)[0].json
    assert "model" not in body and body["top_p"] == 0.95
    assert "authorization" not in server.requests_to(PATH)[0].headers
    assert backend.model_id == "Qwen/Qwen2.5-0.5B-Instruct"


def test_endpoint_from_any_base_url():
    assert chat_completions_endpoint("http://h:8000") == ("http://h:8000", PATH)
    assert chat_completions_endpoint("http://h:8000/v1/") == ("http://h:8000/v1", "/chat/completions")
    assert chat_completions_endpoint("https://api.example.com/v1/chat/completions") == (
        "https://api.example.com/v1",
        "/chat/completions",
    )


async def test_an_empty_answer_with_a_finish_reason_is_not_an_error(server, make):
    server.on("POST", PATH, sse_reply(openai_chunks([])))
    assert await collect(make(server.url)) == ([], None)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        # vLLM (current and older error bodies), before any event
        (
            json_reply(
                {"error": {"message": TOO_LONG_VLLM, "type": "BadRequestError", "param": None, "code": 400}},
                400,
            ),
            ContextTooLong,
        ),
        (
            json_reply(
                {
                    "object": "error",
                    "message": TOO_LONG_VLLM,
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                400,
            ),
            ContextTooLong,
        ),
        (
            json_reply(
                {
                    "error": {
                        "message": "temperature must be non-negative, got -1.0.",
                        "type": "BadRequestError",
                        "code": 400,
                    }
                },
                400,
            ),
            BadRequest,
        ),
        # TGI's Messages API
        (
            json_reply(
                {
                    "error": {
                        "message": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 512 `max_new_tokens`",
                        "http_status_code": 422,
                    }
                },
                422,
            ),
            ContextTooLong,
        ),
        (
            json_reply(
                {
                    "error": {
                        "message": "Input validation error: `top_p` must be > 0.0 and < 1.0",
                        "http_status_code": 422,
                    }
                },
                422,
            ),
            BadRequest,
        ),
        # llama.cpp's server: 400 for a too-long prompt, 500 in some versions and for other failures
        (json_reply(TOO_LONG_LLAMA_CPP, 400), ContextTooLong),
        (
            json_reply(
                {
                    "error": {
                        "code": 500,
                        "message": "Context size has been exceeded.",
                        "type": "server_error",
                    }
                },
                500,
            ),
            ContextTooLong,
        ),
        (
            json_reply(
                {"error": {"code": 500, "message": "Invalid input batch.", "type": "server_error"}}, 500
            ),
            BackendUnavailable,
        ),
        # hosted APIs and proxies
        (
            json_reply(
                {
                    "error": {
                        "message": "Rate limit reached for model on tokens per min (TPM): Limit 30000, Requested 8000.",
                        "type": "tokens",
                        "code": "rate_limit_exceeded",
                    }
                },
                429,
            ),
            BackendOverloaded,
        ),
        (
            json_reply(
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                401,
            ),
            BackendError,
        ),
        (
            json_reply(
                {
                    "error": {
                        "message": "The model `served-model` does not exist.",
                        "type": "NotFoundError",
                        "code": 404,
                    }
                },
                404,
            ),
            BackendError,
        ),
        (
            text_reply("<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", 502),
            BackendUnavailable,
        ),
        (json_reply({"error": "upstream timed out"}, 504), BackendTimeout),
    ],
)
async def test_http_errors_map_to_typed_errors(server, make, reply, error):
    server.on("POST", PATH, reply)
    deltas, err = await collect(make(server.url))
    assert deltas == [] and type(err) is error
    assert err.status == reply.status and str(reply.status) in err.message and server.url in err.message
    assert KEY not in err.message


async def test_llama_cpp_error_line_in_a_200_stream(server, make):
    # llama.cpp builds of 2025 answer a too-long streaming prompt with 200, a non-standard
    # `error:` line and [DONE]; a plain SSE reader sees an empty answer.
    server.on(
        "POST", PATH, sse_reply([f"error: {json.dumps(TOO_LONG_LLAMA_CPP['error'])}\n\n", "data: [DONE]\n\n"])
    )
    deltas, err = await collect(make(server.url))
    assert deltas == [] and type(err) is ContextTooLong and "available context size" in err.message


async def test_llama_cpp_json_error_with_status_200(server, make):
    server.on("POST", PATH, json_reply(TOO_LONG_LLAMA_CPP, 200))
    deltas, err = await collect(make(server.url))
    assert deltas == [] and type(err) is ContextTooLong


async def test_a_200_stream_with_nothing_in_it_is_an_error_not_an_empty_answer(server, make):
    server.on("POST", PATH, sse_reply([]))
    _, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == ""
    assert "without any text or finish reason" in err.message and "llama.cpp" in err.message


async def test_error_event_before_any_text(server, make):
    server.on(
        "POST",
        PATH,
        sse_reply([{"error": {"message": TOO_LONG_VLLM, "type": "BadRequestError", "code": 400}}]),
    )
    deltas, err = await collect(make(server.url))
    assert deltas == [] and type(err) is ContextTooLong


async def test_error_event_mid_stream_is_broken_stream_with_partial(server, make):
    chunks = openai_chunks(PIECES)
    failure = {
        "error": {"message": "Request failed during generation: CUDA out of memory", "http_status_code": 424}
    }
    server.on("POST", PATH, sse_reply([*chunks[:3], failure]))
    deltas, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == "".join(deltas) == "Deep red,"
    assert "CUDA out of memory" in err.message


async def test_stream_cut_mid_answer(server, make):
    server.on("POST", PATH, sse_reply([*openai_chunks(PIECES)[:2], Cut()]))
    _, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == "Deep red" and server.url in err.message


async def test_stream_closed_cleanly_before_the_end(server, make):
    server.on("POST", PATH, sse_reply(openai_chunks(PIECES)[:2]))
    _, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == "Deep red"


async def test_stalled_server_times_out(server, make):
    server.on("POST", PATH, sse_reply([*openai_chunks(PIECES)[:1], Pause(5)]))
    started = time.monotonic()
    _, err = await collect(make(server.url, timeout=0.3))
    assert type(err) is BackendTimeout and err.partial == "Deep"
    assert time.monotonic() - started < 1.5


async def test_server_that_never_answers_times_out(server, make):
    server.on("POST", PATH, Reply(200, {"Content-Type": "text/event-stream"}, steps=[Pause(5)]))
    deltas, err = await collect(make(server.url, timeout=0.3))
    assert deltas == [] and type(err) is BackendTimeout


async def test_connection_refused(make):
    url = refused_url()
    _, err = await collect(make(url))
    assert type(err) is BackendUnavailable and url in err.message


async def test_retries_transient_failures_but_not_after_text(server, make):
    server.on(
        "POST",
        PATH,
        json_reply({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}, 429),
        text_reply("Service Unavailable", 503, "text/plain"),
        sse_reply([*openai_chunks(PIECES)[:2], Cut()]),
        sse_reply(openai_chunks(PIECES)),
    )
    backend = RetryingBackend(make(server.url), retries=3, base_delay=0.01, max_delay=0.05)
    _, err = await collect(backend)
    assert type(err) is StreamBroken and err.partial == "Deep red"
    assert len(server.requests_to(PATH)) == 3  # two retries, none after the first delta
    assert await collect(backend) == (PIECES, None)


async def test_api_key_never_appears_in_errors(server, make):
    server.on("POST", PATH, json_reply({"error": {"message": f"Incorrect API key provided: {KEY}."}}, 401))
    backend = make(f"http://user:{KEY}@{server.url.removeprefix('http://')}/v1")
    _, err = await collect(backend)
    assert type(err) is BackendError and "check the API key" in err.message
    for text in (str(err), repr(err), repr(backend), backend.model_id):
        assert KEY not in text


async def test_a_consumer_that_stops_early_releases_the_stream(server, make):
    server.on(
        "POST", PATH, sse_reply([*openai_chunks(PIECES)[:2], Pause(5)]), sse_reply(openai_chunks(PIECES))
    )
    backend = make(server.url, timeout=10.0)
    started = time.monotonic()
    async with aclosing(backend.stream(MESSAGES, PARAMS)) as deltas:
        async for _ in deltas:
            break  # e.g. the user pressed stop
    assert time.monotonic() - started < 1.0
    assert await collect(backend) == (PIECES, None)
