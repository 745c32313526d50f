"""The HTTP layer of `videor1 serve`: OpenAI-compatible `/v1/chat/completions`, `/v1/models` and `/health`.

Bad input is answered with a 4xx and an OpenAI-style error body (`{"error": {"message", "type", "param",
"code"}}`), never a 500. The API key and the declared body size are checked by a pure ASGI guard before
anything reads the body, and a body without a declared size is bounded while it is read. Parsing, media
decoding, prompt rendering and the prompt-length check run in a bounded thread pool, and generation runs in
the single model worker, so the event loop only moves bytes and stays responsive (`/health` answers while a
batch is generating) and an oversized prompt never costs the model worker anything. A client that
disconnects has its request cancelled: dropped if it is still queued, stopped between tokens if it runs.

`stream: true` answers with server-sent events in OpenAI's chat-completion chunk format (see
`videor1.serve.stream`), batched with the other requests like any request. The stream starts once the first
token exists, so every error found before generation (bad request, media, prompt length, auth, a full queue)
is still a JSON 4xx; an error during generation ends the stream with an `{"error": {...}}` event and `[DONE]`.
`n > 1` and `stop` are refused (400) whether streaming or not.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from videor1.config_errors import validation_message
from videor1.models.generation import GeneratedText, SamplingParams
from videor1.models.inputs import SampleMedia, processor_inputs
from videor1.serve.config import MIB, ServeConfig
from videor1.serve.errors import RequestError
from videor1.serve.messages import decode_refs, parse_messages
from videor1.serve.page import register_page
from videor1.serve.stream import END, LEFT, SSE_HEADERS, TokenFeed, chunk_events
from videor1.serve.worker import CLIENT_LEFT, GenerationWorker, Job

logger = logging.getLogger("videor1.serve")

_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 413: "invalid_request_error", 503: "overloaded_error",
}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def error_response(status: int, message: str, *, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    """An OpenAI-style error body."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


class StreamOptions(BaseModel):
    """OpenAI's `stream_options`."""

    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool | None = False


class ChatCompletionRequest(BaseModel):
    """The fields of an OpenAI chat-completion request that this server reads; others are ignored."""

    # strict: lax mode would read `max_tokens: true` as 1 and `"stream": "yes"` as true
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    messages: list[Any]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = 1
    stop: str | list[str] | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = False


def _unsupported(request: ChatCompletionRequest) -> str | None:
    """Why a request asks for something this server does not do (rather than silently ignoring it)."""
    streaming = " (with stream=true too)" if request.stream else ""
    if request.n not in (None, 1):
        return f"n must be 1{streaming}; send several requests for several completions"
    if request.stop:
        return f"stop sequences are not supported{streaming}; cut the text on the client"
    if request.stream_options is not None and not request.stream:
        return "stream_options is only allowed with stream=true"
    if request.tools:
        return "tools are not supported"
    if request.response_format and request.response_format.get("type") != "text":
        return "only response_format {'type': 'text'} is supported"
    if request.logprobs:
        return "logprobs are not supported"
    return None


def sampling_params(request: ChatCompletionRequest, cfg: ServeConfig) -> SamplingParams:
    """The request's decoding settings, with the server's defaults and limits."""
    problem = _unsupported(request)
    if problem:
        raise RequestError(400, problem)
    max_tokens = request.max_completion_tokens or request.max_tokens or cfg.default_max_tokens
    if max_tokens > cfg.max_tokens_limit:
        raise RequestError(400, f"max_tokens {max_tokens} exceeds this server's limit {cfg.max_tokens_limit}",
                           param="max_tokens")
    return SamplingParams(
        max_new_tokens=max_tokens,
        temperature=cfg.default_temperature if request.temperature is None else request.temperature,
        top_p=cfg.default_top_p if request.top_p is None else request.top_p,
    )


def _bearer_ok(scope: dict[str, Any], api_key: str) -> bool:
    headers = dict(scope.get("headers") or [])
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), api_key.encode())


LINGER_BYTES = MIB
"""After answering before the body was read, the server discards a body up to this size (declared by
Content-Length) so that a client still sending can read the answer; a larger one closes the connection."""


def _unread_body_headers(scope: dict[str, Any]) -> dict[str, str]:
    """Headers for an answer sent without reading the body: close the connection unless the body is small."""
    headers = dict(scope.get("headers") or [])
    declared = headers.get(b"content-length")
    if headers.get(b"expect", b"").lower() == b"100-continue":
        close = True  # the client waits for a 100 before sending the body and may never send it
    elif declared is None:
        close = b"transfer-encoding" in headers  # a chunked body of unknown size (none at all otherwise)
    else:
        close = not declared.isdigit() or int(declared) > LINGER_BYTES
    # uvicorn discards the rest of a body that arrives after the answer, so a kept connection stays usable
    return {"Connection": "close"} if close else {}


class Guard:
    """Pure ASGI middleware: the API key on /v1/* and a bound on the body, before the body is read."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        if api_key is not None and not api_key.strip():
            raise ValueError("an empty API key would turn authentication off")  # ServeConfig.auth_problem says so
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.api_key and scope["path"].startswith("/v1/") and not _bearer_ok(scope, self.api_key):
            # answered before a byte of the body is read: an unauthenticated client costs no reading
            headers = {"WWW-Authenticate": "Bearer", **_unread_body_headers(scope)}
            await error_response(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                 headers=headers)(scope, receive, send)
            return
        body, problem = await self._read_body(scope, receive)
        if problem is not None:
            await problem(scope, receive, send)
            return
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return await receive()  # later calls wait for the disconnect, as the server's own would
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, scope: dict[str, Any], receive: Receive) -> tuple[bytes, JSONResponse | None]:
        too_large = f"request body exceeds {self.max_body_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return b"", error_response(400, "invalid Content-Length header", headers={"Connection": "close"})
            if int(declared) > self.max_body_bytes:  # refused before reading it
                return b"", error_response(413, too_large, headers=_unread_body_headers(scope))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", None  # the client went away; the app sees the disconnect
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:  # a chunked body without Content-Length: stop reading at the bound
                return b"", error_response(413, too_large)  # uvicorn discards the rest for this authorised client
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks), None


@dataclass
class ServerState:
    """What the routes need: settings, the model worker, the processor and the media grid factor."""

    cfg: ServeConfig
    worker: GenerationWorker
    processor: Any
    factor: int
    name: str
    limiter: anyio.CapacityLimiter | None = field(default=None)


def _prepare(state: ServerState, messages: list[Any]) -> tuple[str, list[SampleMedia]]:
    """Parse messages, decode their media, render the prompt and check its length (runs in a worker thread)."""
    cfg = state.cfg
    allowed = Path(cfg.allowed_media_dir) if cfg.allowed_media_dir else None
    parsed = parse_messages(messages, allowed_dir=allowed, max_media=cfg.max_media_per_request)
    media = decode_refs(parsed.media, cfg.media, state.factor)
    try:
        text = state.processor.apply_chat_template(parsed.messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja raises its own types for conversations the template refuses
        raise RequestError(400, f"the chat template refused these messages: {exc}") from exc
    # the full processor counts the vision tokens too; here a huge prompt costs a pool thread, not the model
    # worker (which processes the batch again: cheap next to generating, and it keeps batches simple)
    try:
        tokens = int(processor_inputs(state.processor, [text], media)["attention_mask"].sum())
    except Exception as exc:  # the processor raises many types for unusable inputs
        raise RequestError(400, f"the request's inputs cannot be processed: {exc}") from exc
    if tokens > cfg.max_prompt_tokens:
        limit = cfg.max_prompt_tokens
        raise RequestError(400, f"the prompt has {tokens} tokens (text and media); the limit is {limit}")
    return text, media


async def _client_left(receive: Receive) -> None:
    """Return once the client disconnects (the body has been read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _completion_body(name: str, generation: GeneratedText) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [{
            "index": 0, "message": {"role": "assistant", "content": generation.text},
            "finish_reason": generation.finish_reason, "logprobs": None,
        }],
        "usage": {
            "prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        },
    }


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI app over a started worker; the worker is stopped when the app shuts down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # anyio limiters belong to the running event loop, so it is made here rather than up front
        state.limiter = anyio.CapacityLimiter(state.cfg.decode_workers)
        yield
        state.worker.stop()

    app = FastAPI(title="videor1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, api_key=state.cfg.api_key, max_body_bytes=state.cfg.max_body_bytes)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.message, param=exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI puts the body's fields under "body": a client knows them by their own names
        return error_response(400, validation_message(exc, whole="body", drop={"body"}) or "invalid request")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # only a bug gets here (bad input is a RequestError); the body still follows the OpenAI error shape
        logger.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health() -> JSONResponse:
        if not state.worker.alive:
            return error_response(503, "the model worker is not running")
        worker = state.worker
        return JSONResponse({
            "status": "ok", "model": state.name, "queued": worker.pending, "running": worker.running,
            "batches": worker.batches, "requests": worker.requests, "submitted": worker.submitted,
            "cancelled": worker.cancelled,
        })

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": state.name, "object": "model", "created": 0, "owned_by": "videor1"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, connection: Request) -> Any:
        start = time.perf_counter()
        if request.model is not None and request.model != state.name:
            raise RequestError(404, f"model {request.model!r} is not served here; this server serves {state.name!r}",
                               param="model")
        params = sampling_params(request, state.cfg)
        left = asyncio.ensure_future(_client_left(connection.receive))
        job: Job | None = None
        result: asyncio.Future | None = None
        streaming = False  # once the response has the stream, its generator owns `left` and the job
        try:
            text, media = await anyio.to_thread.run_sync(_prepare, state, request.messages, limiter=state.limiter)
            if left.done():  # a client that left while its media was decoded is not queued at all
                pass
            elif request.stream:
                queued = Job(text, media, params, Future())
                feed = _enqueue_streaming(state, queued, left)
                job = queued  # only once queued: a job refused with 503 is not counted as cancelled
                first = await feed.queue.get()
                # a job that failed before its first token is answered as JSON below, like a plain request
                failed = first == END and (job.future.cancelled() or job.future.exception(timeout=0) is not None)
                if first != LEFT and not failed:
                    streaming = True
                    return _stream_response(state, request, job, feed, first, left, start, len(media))
            else:
                job = state.worker.enqueue(Job(text, media, params, Future()))
                result = asyncio.wrap_future(job.future)
                await asyncio.wait({result, left}, return_when=asyncio.FIRST_COMPLETED)
            if job is None or not job.future.done() or job.future.cancelled():
                logger.info("the client left before its completion; the request is cancelled")
                return error_response(CLIENT_LEFT, "the client closed the request")
            generation = job.future.result()
        finally:
            if not streaming:
                left.cancel()
                if job is not None and not job.future.done():  # the client left, or this handler was cancelled
                    state.worker.cancel(job)
                    if result is not None:
                        result.cancel()  # nobody reads the 499 the worker may still set
        body = _completion_body(state.name, generation)
        _log_completion(body["id"], len(media), generation, start)
        return body

    register_page(app, state)
    return app


def _log_completion(name: str, media: int, generation: GeneratedText, start: float) -> None:
    logger.info(
        "%s: %d media, %d prompt + %d completion tokens (%s) in %.2f s", name, media, generation.prompt_tokens,
        generation.completion_tokens, generation.finish_reason, time.perf_counter() - start,
    )


def _enqueue_streaming(state: ServerState, job: Job, left: asyncio.Future) -> TokenFeed:
    """Queue a streaming job; its feed yields its token ids, then `END`, or `LEFT` when the client leaves."""
    feed = TokenFeed(asyncio.get_running_loop())
    job.on_tokens = feed.push
    state.worker.enqueue(job)
    feed.end_with(job.future)

    def client_left(watcher: asyncio.Future) -> None:
        if not watcher.cancelled():  # cancelled = the request ended first
            feed.client_left()  # first: cancelling a queued job ends its feed too
            # here rather than in the stream's generator, which never runs if the client leaves before it starts
            state.worker.cancel(job)

    left.add_done_callback(client_left)
    return feed


def _stream_response(
    state: ServerState, request: ChatCompletionRequest, job: Job, feed: TokenFeed, first: list[int] | str,
    left: asyncio.Future, start: float, media: int,
) -> StreamingResponse:
    """The SSE response of a job whose first tokens exist; leaving or closing it cancels the job."""
    include_usage = bool(request.stream_options and request.stream_options.include_usage)

    async def events() -> Any:
        try:
            async for event in chunk_events(
                feed, first, job.future, state.processor.tokenizer, model=state.name, include_usage=include_usage,
                on_done=lambda name, generation: _log_completion(name, media, generation, start),
            ):
                yield event
        finally:  # the client left (our watcher or Starlette's saw it), or the stream ended
            left.cancel()
            if not job.future.done():
                logger.info("the client left during its stream; the request is cancelled")
                state.worker.cancel(job)

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
