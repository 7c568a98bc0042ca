"""The `openai` backend against stand-ins of TGI's Messages API, vLLM, llama.cpp's server and hosted
APIs, over a real socket: what each sends on success and on failure."""

from __future__ import annotations

import json
import logging
import time
from contextlib import aclosing
from pathlib import Path

import pytest

from refine.backends.base import (
    THINK_CLOSE,
    THINK_OPEN,
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
from refine.backends.openai_compat import OpenAICompatBackend, chat_completions_endpoint
from refine.backends.retry import RetryingBackend
from tests.standin_servers import (
    SPECS,
    Cut,
    Pause,
    Drained,
    Recorded,
    Reply,
    StandinServer,
    check_openapi,
    drain,
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
    """(text deltas, error); the Finish is checked to come last (see `drain`) and left out."""
    result = await drain(backend.stream(MESSAGES, params))
    return result.deltas, result.error


async def finished(backend: Backend, params: GenerationParams = PARAMS, messages=MESSAGES) -> Drained:
    result = await drain(backend.stream(messages, params))
    assert result.error is None, result.error
    return result


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
    result = await finished(make(server.url))
    assert result.deltas == ["OK", "!"]  # the final usage chunk has no choices
    assert result.finish == Finish("stop", "stop", 3)  # tokens from that usage chunk


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


# --- why a generation ended -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("stop", Finish("stop", "stop")),
        ("length", Finish("length", "length")),
        ("content_filter", Finish("filtered", "content_filter")),
        ("tool_calls", Finish("tool_calls", "tool_calls")),
        ("function_call", Finish("tool_calls", "function_call")),
        ("eos", Finish("unknown", "eos")),  # not an OpenAI reason: kept as the detail
        (None, Finish("unknown")),  # [DONE] without any finish reason
    ],
)
async def test_finish_reason_ends_the_stream(server, make, reason, finish):
    server.on("POST", PATH, sse_reply(openai_chunks(PIECES, finish_reason=reason)))
    result = await finished(make(server.url))
    assert result.deltas == PIECES and result.finish == finish


async def test_retrying_backend_passes_the_finish_through(server, make):
    server.on("POST", PATH, sse_reply(openai_chunks(["Cut", " sh"], finish_reason="length")))
    result = await finished(RetryingBackend(make(server.url), retries=1))
    assert result.text == "Cut sh" and result.finish == Finish("length", "length")


# --- stop strings -----------------------------------------------------------------------------


async def test_at_most_four_stop_strings_are_sent_and_all_apply_client_side(server, make):
    stops = ("\nA:", "\nB:", "\nC:", "\nD:", "✓")
    server.on("POST", PATH, sse_reply(openai_chunks(PIECES)))
    result = await finished(make(server.url), GenerationParams(max_new_tokens=32, stop=stops))
    assert server.requests_to(PATH)[0].json["stop"] == list(stops[:4])
    assert result.text == "Deep red, like " and result.finish == Finish("stop", "stop_string")


async def test_a_server_that_ignores_stop_strings_is_cut_and_hung_up_on(server, make):
    # The stop string arrives split over two chunks, then the server would go on for seconds.
    pieces = ["Revision:", " Paris", ".\nCri", "tique:", " more"]
    server.on("POST", PATH, sse_reply([*openai_chunks(pieces)[:4], Pause(5), *openai_chunks(pieces)[4:]]))
    backend = make(server.url, timeout=10.0)
    started = time.monotonic()
    result = await finished(backend, GenerationParams(max_new_tokens=32, stop=("\nCritique:",)))
    assert result.text == "Revision: Paris." and result.finish == Finish("stop", "stop_string")
    assert time.monotonic() - started < 1.0  # the connection was closed, not read to its end


async def test_text_held_back_for_a_possible_stop_string_is_released_at_the_end(server, make):
    server.on("POST", PATH, sse_reply(openai_chunks(["Paris", ".\nCrit"])))
    result = await finished(make(server.url), GenerationParams(max_new_tokens=32, stop=("\nCritique:",)))
    assert result.deltas == ["Paris", ".", "\nCrit"] and result.finish == Finish("stop", "stop")


# --- reasoning sent apart from the answer ------------------------------------------------------

DATA = Path(__file__).parent / "data"


def reasoning_chunk(reasoning: str = "", content: str | None = None, *, field: str = "reasoning_content",
                    finish_reason: str | None = None) -> dict:
    delta = {"role": "assistant", "content": content, field: reasoning or None}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


async def test_a_stream_with_only_reasoning_is_text_in_think_tags_not_an_error(server, make):
    body = (DATA / "cases" / "reasoning-only-answer" / "base.sse").read_bytes()  # reasoning, then length
    server.on("POST", PATH, Reply(200, {"Content-Type": "text/event-stream"}, steps=[body]))
    result = await finished(make(server.url))
    reasoning = "The user wants a joke. Let me think The user wants a joke. Let me think "
    assert result.deltas == [THINK_OPEN, reasoning, THINK_CLOSE]
    assert result.finish == Finish("length", "length")


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_comes_first_in_think_tags_then_the_answer(server, make, field):
    chunks = [
        reasoning_chunk("Colours", field=field),
        reasoning_chunk(": red.", field=field),
        reasoning_chunk(content="Red", field=field),
        reasoning_chunk("late thought", content=".", field=field),  # after the answer began: dropped
        reasoning_chunk(content="", finish_reason="stop", field=field),
        "data: [DONE]\n\n",
    ]
    server.on("POST", PATH, sse_reply(chunks))
    result = await finished(make(server.url))
    assert result.deltas == [THINK_OPEN, "Colours", ": red.", THINK_CLOSE, "Red", "."]
    assert result.finish == Finish("stop", "stop")


async def test_a_stream_cut_while_reasoning_keeps_the_reasoning_as_partial(server, make):
    server.on("POST", PATH, sse_reply([reasoning_chunk("Hmm"), Cut()]))
    _, err = await collect(make(server.url))
    assert type(err) is StreamBroken and err.partial == THINK_OPEN + "Hmm"


# --- servers that refuse a system message ------------------------------------------------------


class RefusesSystem(StandinServer):
    """Answers 400 to any request with a system message (as vLLM serving Gemma does), else
    streams an answer."""

    def next_reply(self, request: Recorded) -> Reply:
        super().next_reply(request)
        if any(m["role"] == "system" for m in request.json["messages"]):
            return json_reply({"error": {"message": "System role not supported", "type": "BadRequestError",
                                         "code": 400}}, 400)
        return sse_reply(openai_chunks(PIECES))


async def test_a_refused_system_message_is_folded_and_remembered(make, caplog):
    caplog.set_level(logging.INFO, logger="refine.backends.openai_compat")
    with RefusesSystem() as server:
        backend = make(server.url)
        for _ in range(2):
            result = await finished(backend)
            assert result.text == "".join(PIECES) and result.finish == Finish("stop", "stop")
        sent = [r.json["messages"] for r in server.requests_to(PATH)]
    # the first request is refused and sent again folded; the second is folded straight away
    assert sent == [MESSAGES, fold_system(MESSAGES), fold_system(MESSAGES)]
    assert sent[1] == [{"role": "user", "content": "Be brief.\n\nName a colour."}]
    notes = [r.getMessage() for r in caplog.records if "folding system prompts" in r.getMessage()]
    assert len(notes) == 1 and "System role not supported" in notes[0] and KEY not in notes[0]


async def test_a_bad_request_that_folding_does_not_cure_is_raised(server, make):
    message = "temperature must be non-negative"
    refusal = {"error": {"message": message, "type": "BadRequestError", "code": 400}}
    server.on("POST", PATH, json_reply(refusal, 400))
    backend = make(server.url)
    _, err = await collect(backend)
    assert type(err) is BadRequest and message in err.message
    assert [r.json["messages"] for r in server.requests_to(PATH)] == [MESSAGES, fold_system(MESSAGES)]
    await collect(backend)
    assert len(server.requests_to(PATH)) == 4  # nothing remembered: folding did not help


async def test_no_folding_for_a_prompt_that_is_too_long_or_has_no_system_message(server, make):
    server.on("POST", PATH, json_reply(TOO_LONG_LLAMA_CPP, 400))
    backend = make(server.url)
    _, err = await collect(backend)
    assert type(err) is ContextTooLong and len(server.requests_to(PATH)) == 1
    refusal = {"error": {"message": "bad", "type": "BadRequestError", "code": 400}}
    server.on("POST", PATH, json_reply(refusal, 400))
    result = await drain(backend.stream(MESSAGES[1:], PARAMS))
    assert type(result.error) is BadRequest and len(server.requests_to(PATH)) == 2
