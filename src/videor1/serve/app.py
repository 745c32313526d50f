"""The HTTP layer of `videor1 serve`: OpenAI-compatible `/v1/chat/completions`, `/v1/models` and `/health`.

Bad input is answered with a 4xx and an OpenAI-style error body (`{"error": {"message", "type", "param",
"code"}}`), never a 500. A pure ASGI guard checks, before anything reads the body: the Host header when there
is no API key (loopback names only, against DNS rebinding), the API key, the declared body size, and the
requests and body bytes in flight (503 with Retry-After past either bound); a body without a declared size is
bounded while it is read, and every body must arrive within `body_timeout_s`. Parsing, media
decoding, prompt rendering and the prompt-length check run in a bounded thread pool, and generation runs in
the single model worker, so the event loop only moves bytes and stays responsive (`/health` answers while a
batch is generating) and an oversized prompt never costs the model worker anything. Decoding is bounded per
video (`max_decode_packets`, `max_decode_seconds`). A client that disconnects has its request cancelled: its
media decode stopped, dropped if it is still queued, stopped between tokens if it runs.

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
import threading
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
from videor1.serve.config import MIB, ServeConfig, api_key_problem, is_loopback
from videor1.serve.errors import RequestError
from videor1.serve.messages import decode_refs, parse_messages
from videor1.serve.page import register_page
from videor1.serve.stream import END, LEFT, SSE_HEADERS, TokenFeed, chunk_events
from videor1.serve.worker import CLIENT_LEFT, GenerationWorker, Job

logger = logging.getLogger("videor1.serve")

_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 408: "invalid_request_error", 413: "invalid_request_error",
    503: "overloaded_error",
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


def host_name(scope: dict[str, Any]) -> str | None:
    """The Host header's name, lower-case, without port, brackets or a final dot; None without a Host header."""
    raw = dict(scope.get("headers") or []).get(b"host")
    if raw is None:
        return None
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):  # an IPv6 literal: [::1]:8000 (an unclosed one stays as it is: no loopback name)
        inside, bracket, _ = host[1:].partition("]")
        return inside if bracket else host
    name, colon, _ = host.rpartition(":")
    return (name if colon else host).rstrip(".")


LINGER_BYTES = MIB
"""After answering before the body was read, the server discards a body up to this size (declared by
Content-Length) so that a client still sending can read the answer; a larger one closes the connection."""

RETRY_AFTER_S = 1
"""The Retry-After of a 503: a slot frees as soon as any request in flight ends, so a second is plenty."""

HEALTH_PATH = "/health"


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


def _busy(message: str, headers: dict[str, str]) -> JSONResponse:
    return error_response(503, f"the server is busy: {message}; retry later",
                          headers={"Retry-After": str(RETRY_AFTER_S), **headers})


@dataclass
class Admission:
    """Requests in flight and the request-body bytes they hold, each bounded. Only the event loop touches it."""

    max_requests: int
    max_bytes: int
    requests: int = 0
    body_bytes: int = 0

    def admit(self) -> Ticket | None:
        """A ticket for one more request, or None when `max_requests` are in flight."""
        if self.requests >= self.max_requests:
            return None
        self.requests += 1
        return Ticket(self)


@dataclass
class Ticket:
    """One admitted request's share of the bounds; `close` gives it back."""

    admission: Admission
    body_bytes: int = 0

    def reserve(self, size: int) -> bool:
        """Hold `size` more body bytes; False (holding nothing more) when that would pass the bound."""
        if self.admission.body_bytes + size > self.admission.max_bytes:
            return False
        self.admission.body_bytes += size
        self.body_bytes += size
        return True

    def close(self) -> None:
        """Leave the requests in flight."""
        self.admission.body_bytes -= self.body_bytes
        self.admission.requests -= 1
        self.body_bytes = 0


class Guard:
    """Pure ASGI middleware: Host, API key and in-flight bounds before the body is read, then the bounded body."""

    def __init__(
        self, app: Any, *, api_key: str | None, allowed_hosts: list[str], max_body_bytes: int, body_timeout_s: float,
        admission: Admission,
    ) -> None:
        problem = api_key_problem(api_key)
        if problem is not None:
            raise ValueError(problem)  # ServeConfig.auth_problem refuses these settings before the app is made
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes
        self.allowed_hosts = {host.lower() for host in allowed_hosts}
        self.body_timeout_s, self.admission = body_timeout_s, admission

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["path"] == HEALTH_PATH:  # never counted: it must answer while the server is full
            await self.app(scope, receive, send)
            return
        ticket = self.admission.admit()
        if ticket is None:
            limit = self.admission.max_requests
            await _busy(f"{limit} requests in flight (--max-in-flight)", _unread_body_headers(scope))(
                scope, receive, send)
            return
        try:
            await self._serve(scope, receive, send, ticket)
        finally:
            ticket.close()

    def _refusal(self, scope: dict[str, Any]) -> JSONResponse | None:
        """The answer to a request refused on its head alone: a foreign Host without a key, or a wrong key."""
        if self.api_key is None:
            name = host_name(scope)
            if name is not None and not (is_loopback(name) or name in self.allowed_hosts or "*" in self.allowed_hosts):
                # a page on another site that resolves its name to 127.0.0.1 (DNS rebinding) sends its own Host
                return error_response(
                    403, f"Host {name[:100]!r} is not a loopback name, and without an API key this server answers "
                    "only localhost, 127.0.0.1 and [::1] (against DNS rebinding): set --api-key, or add the name "
                    "with --allowed-host", headers=_unread_body_headers(scope))
        if self.api_key and scope["path"].startswith("/v1/") and not _bearer_ok(scope, self.api_key):
            # answered before a byte of the body is read: an unauthenticated client costs no reading
            headers = {"WWW-Authenticate": "Bearer", **_unread_body_headers(scope)}
            return error_response(401, "missing or wrong API key (Authorization: Bearer KEY)", headers=headers)
        return None

    async def _serve(self, scope: dict[str, Any], receive: Receive, send: Send, ticket: Ticket) -> None:
        body, problem = await self._read_body(scope, receive, ticket)
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

    async def _read_body(
        self, scope: dict[str, Any], receive: Receive, ticket: Ticket,
    ) -> tuple[bytes, JSONResponse | None]:
        """The whole body, or the answer refusing it; a body still arriving after `body_timeout_s` gets 408."""
        try:
            with anyio.fail_after(self.body_timeout_s):
                return await self._receive_body(scope, receive, ticket)
        except TimeoutError:  # a client sending slowly (or not at all) would hold its slot for ever
            message = f"the request body did not arrive within {self.body_timeout_s:g} s (--body-timeout-s)"
            return b"", error_response(408, message, headers={"Connection": "close"})

    async def _receive_body(
        self, scope: dict[str, Any], receive: Receive, ticket: Ticket,
    ) -> tuple[bytes, JSONResponse | None]:
        too_large = f"request body exceeds {self.max_body_bytes} bytes"
        too_many = f"request bodies in flight would pass {self.admission.max_bytes} bytes (--max-body-bytes-in-flight)"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return b"", error_response(400, "invalid Content-Length header", headers={"Connection": "close"})
            if int(declared) > self.max_body_bytes:  # refused before reading it
                return b"", error_response(413, too_large, headers=_unread_body_headers(scope))
            if not ticket.reserve(int(declared)):  # held from now on, before a byte of it arrives
                return b"", _busy(too_many, _unread_body_headers(scope))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"", None  # the client went away; the app sees the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:  # a chunked body without Content-Length: stop reading at the bound
                return b"", error_response(413, too_large)  # uvicorn discards the rest for this authorised client
            if declared is None and not ticket.reserve(len(chunk)):
                return b"", _busy(too_many, {"Connection": "close"})
            chunks.append(chunk)
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
    decoding: int = 0
    """Requests in `_prepare` or waiting for a decode thread (counted on the event loop)."""


def _prepare(state: ServerState, messages: list[Any], cancelled: Callable[[], bool]) -> tuple[str, list[SampleMedia]]:
    """Parse messages, decode their media, render the prompt and check its length (runs in a worker thread)."""
    cfg = state.cfg
    allowed = Path(cfg.allowed_media_dir) if cfg.allowed_media_dir else None
    parsed = parse_messages(messages, allowed_dir=allowed, max_media=cfg.max_media_per_request)
    # a decode whose client has gone stops within a few packets, as a RequestError 499
    media = decode_refs(parsed.media, cfg.media, state.factor, cancelled=cancelled, limits=cfg.decode_limits())
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


def left_flag(left: asyncio.Future) -> Callable[[], bool]:
    """A flag any thread may read: true once `left` (a `_client_left` watcher) saw the client disconnect."""
    gone = threading.Event()

    def watched(watcher: asyncio.Future) -> None:
        if not watcher.cancelled():  # cancelled = the request ended first
            gone.set()

    left.add_done_callback(watched)
    return gone.is_set


async def _prepare_request(
    state: ServerState, messages: list[Any], cancelled: Callable[[], bool]
) -> tuple[str, list[SampleMedia]]:
    """`_prepare` in the bounded decode pool, counted in /health's `decoding`."""
    state.decoding += 1
    try:
        return await anyio.to_thread.run_sync(_prepare, state, messages, cancelled, limiter=state.limiter)
    finally:
        state.decoding -= 1


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

    cfg = state.cfg
    admission = Admission(max_requests=cfg.in_flight_limit(), max_bytes=cfg.in_flight_bytes_limit())
    app = FastAPI(title="videor1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        Guard, api_key=cfg.api_key, allowed_hosts=[cfg.host, *cfg.allowed_hosts], max_body_bytes=cfg.max_body_bytes,
        body_timeout_s=cfg.body_timeout_s, admission=admission,
    )

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None  # a full queue, as a full guard
        return error_response(exc.status, exc.message, param=exc.param, headers=headers)

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
            "cancelled": worker.cancelled, "decoding": state.decoding, "in_flight": admission.requests,
            "in_flight_bytes": admission.body_bytes,
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
            try:
                text, media = await _prepare_request(state, request.messages, left_flag(left))
            except RequestError as exc:
                if exc.status != CLIENT_LEFT:  # decode_refs answers a cancelled decode with a 499
                    raise
                logger.info("the client left while its media was decoded; decoding stopped (%s)", exc.message)
                return error_response(CLIENT_LEFT, "the client closed the request")
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
