"""`stream: true` for `/v1/chat/completions`: the model worker's tokens as OpenAI chat-completion chunks (SSE).

The model worker hands each streaming job's new token ids to a `TokenFeed` between tokens (`Job.on_tokens`,
called from the worker thread); the feed moves them onto the event loop with `call_soon_threadsafe` into an
`asyncio.Queue`, so the worker never waits for a client and the event loop never touches the model. The job's
future marks the end: its done-callback runs in the worker thread after the job's last tokens were pushed, so
its end marker queues behind them.

`chunk_events` turns the feed into server-sent events: a role chunk, content deltas (`IncrementalDecoder`
decodes the whole generated prefix and sends the new suffix, holding back a trailing U+FFFD until the rest of
its character arrives), a final chunk with the finish reason, a usage chunk when `stream_options.include_usage`
is set, then `data: [DONE]`. An error after the stream started (generation failed) cannot change the 200
already sent: it is sent as one `{"error": {...}}` event, then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from videor1.models.generation import GeneratedText
from videor1.serve.errors import RequestError

logger = logging.getLogger("videor1.serve")

END = "end"
"""The feed's item after the job's last tokens: its future is done."""
LEFT = "left"
"""The feed's item when the client disconnected: the stream ends there."""

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies must not buffer the stream


class TokenFeed:
    """A job's new token ids, pushed by the model worker thread and read on the event loop; `END` comes last."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # unbounded: the worker must never wait for a slow reader, and a job's tokens are bounded by max_tokens
        self.queue: asyncio.Queue[list[int] | str] = asyncio.Queue()

    def push(self, ids: list[int]) -> None:
        """Queue new token ids (called from the model worker thread)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ids)

    def end_with(self, future: Future[Any]) -> None:
        """Queue `END` once `future` is done, behind every token pushed before it."""
        future.add_done_callback(self._end)

    def client_left(self) -> None:
        """Queue `LEFT` (called on the event loop when the client disconnected)."""
        self.queue.put_nowait(LEFT)

    def _end(self, _: Future[Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, END)
        except RuntimeError:  # the event loop is closed: the server is shutting down and nobody reads
            pass

    def take(self, first: list[int] | str) -> tuple[list[int], str | None]:
        """`first` and the ids queued behind it (one decode for a burst), and the marker that ended them, if any."""
        ids: list[int] = []
        item = first
        while not isinstance(item, str):
            ids.extend(item)
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                return ids, None
        return ids, item


class IncrementalDecoder:
    """The text of a growing list of token ids, handed out as new suffixes."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    def add(self, ids: list[int]) -> str:
        """The text that `ids` add to what was sent (empty while a character or a merge is incomplete)."""
        self.ids.extend(ids)
        # the whole prefix: a token's text can depend on its neighbours (byte-level pieces of one character,
        # leading-space rules), so decoding tokens one by one would garble multi-byte characters
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).rstrip("\ufffd")
        if not text.startswith(self.sent):  # an earlier piece decodes differently now: wait for the final text
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def finish(self, text: str) -> str:
        """What is left to send of the completion's final `text`."""
        if not text.startswith(self.sent):
            logger.warning("the streamed text is not a prefix of the completion; its end is not sent")
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def error_event(error: RequestError) -> str:
    """The SSE event of an error that happened after the stream started."""
    return _event({"error": {"message": error.message, "type": "server_error" if error.status >= 500 else
                             "invalid_request_error", "param": error.param, "code": error.status}})


async def chunk_events(
    feed: TokenFeed, first: list[int] | str, future: Future[GeneratedText], tokenizer: Any, *, model: str,
    include_usage: bool, on_done: Callable[[str, GeneratedText], None] | None = None,
) -> AsyncIterator[str]:
    """The SSE events of one streamed completion whose first feed item (token ids) is `first`."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, **({"usage": None} if include_usage else {})}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _event({**head, "choices": [choice]})

    yield chunk({"role": "assistant", "content": ""})
    decoder = IncrementalDecoder(tokenizer)
    ids, marker = feed.take(first)
    while True:
        text = decoder.add(ids) if ids else ""
        if text:
            yield chunk({"content": text})
        if marker == LEFT:
            return  # nobody reads on; the caller cancels the job
        if marker == END:
            break
        ids, marker = feed.take(await feed.queue.get())
    try:
        generation = future.result()
    except RequestError as exc:
        logger.info("a streamed completion failed after its first tokens: %s", exc.message)
        yield error_event(exc)
        yield DONE
        return
    rest = decoder.finish(generation.text)
    if rest:  # a held-back U+FFFD that is the model's own, or text whose decoding settled at the end
        yield chunk({"content": rest})
    yield chunk({}, generation.finish_reason)
    if include_usage:
        usage = {"prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
                 "total_tokens": generation.prompt_tokens + generation.completion_tokens}
        yield _event({**head, "choices": [], "usage": usage})
    yield DONE
    if on_done is not None:
        on_done(head["id"], generation)
