"""A minimal OpenAI chat-completions client on the standard library, with errors sorted by what to do next.

The standard library is enough here: one blocking JSON POST per call, run from a thread pool, and it adds
no dependency. Errors are classified so that one bad question never stops a run and a misconfigured run
stops at once:
- `PermanentError` (400, 413, 422): the question's own request is refused; retrying cannot help;
- `FatalError` (401, 403, 404, and any redirect): the key, the model name, the URL or the media directory
  is wrong for every question, so the run stops rather than marking every row;
- `TransientError` (timeouts, refused connections, 408, 429, 5xx, malformed or oversized replies): retried
  with exponential backoff, then left for the next run.

A request ends at its deadline (`timeout_s` for the whole exchange, not per socket read: a server that
sends one byte a second would otherwise hold it for ever), its reply is read up to `max_reply_bytes` and no
further, and redirects are not followed: urllib would send the `Authorization` header on to whatever
host the redirect names.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from videor1.data.dataset import loads_json
from videor1.models.generation import SamplingParams

_PERMANENT = frozenset({400, 413, 422})
_FATAL = frozenset({401, 403, 404})
MAX_REPLY_BYTES = 16 * 2**20
"""Default cap on a reply's body: a completion of a few thousand tokens is kilobytes; more is a broken server."""
_ERROR_BODY_BYTES = 64 * 2**10  # an error reply is read for its message only


class TeacherError(Exception):
    """A failed teacher request."""


class TransientError(TeacherError):
    """Worth retrying later: the server was unreachable, slow, overloaded or broken."""


class PermanentError(TeacherError):
    """The server refused this question's request; the same request will fail again."""


class FatalError(TeacherError):
    """The server refused the run's settings (key, model name, URL); no question can succeed."""


def chat_completions_url(endpoint: str) -> str:
    """The chat-completions URL from a base URL (`.../v1`) or the full URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/chat/completions") else endpoint + "/chat/completions"


def _error_message(body: bytes) -> str:
    try:
        error = loads_json(body).get("error")
        return str(error.get("message") if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def _content(reply: Any) -> str:
    """The assistant text of a chat-completion reply; TransientError when the reply has none."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise TransientError(f"malformed reply without choices[0].message.content: {str(reply)[:200]}") from exc
    if isinstance(content, list):  # some servers return content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise TransientError(f"reply content is {type(content).__name__}, not text")
    return content


class _Deadline:
    """Shuts the request's sockets down when its time is up, which wakes any read blocked on them.

    urllib's `timeout` bounds each socket operation, so a reply that trickles in never times out; this
    bounds the whole exchange, headers and body, whatever the server sends.
    """

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        """Seconds left, never below a millisecond (a socket timeout of 0 would mean non-blocking)."""
        return max(self.end - time.monotonic(), 1e-3)

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline (at once when it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def connection_class(self, base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
        """`base` (HTTP or HTTPS) whose socket this deadline watches from the moment it is connected."""
        deadline = self

        class Watched(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                self.timeout = deadline.remaining()  # connecting ends by the deadline too
                super().connect()
                deadline.watch(self.sock)

        return Watched


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to wake


class _WatchedHandler:
    """Mixin for urllib's HTTP(S) handlers: connections are built by the request's deadline."""

    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: type[http.client.HTTPConnection], req: Any, **kwargs: Any) -> Any:
        """urllib's own do_open with a connection class the deadline watches."""
        return super().do_open(self.deadline.connection_class(http_class), req, **kwargs)  # type: ignore[misc]


class _WatchedHTTPHandler(_WatchedHandler, urllib.request.HTTPHandler):
    pass


class _WatchedHTTPSHandler(_WatchedHandler, urllib.request.HTTPSHandler):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Every 3xx reaches the caller as an HTTPError instead of being followed with the same headers."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        """Follow nothing."""
        return None


def _read_capped(response: Any, limit: int) -> bytes:
    """The body, or TransientError as soon as it is known to exceed `limit` bytes (nothing more is read)."""
    length = response.headers.get("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise TransientError(f"reply of {int(length)} bytes is over the {limit}-byte limit (max_reply_bytes)")
    body = response.read(limit + 1)
    if len(body) > limit:
        raise TransientError(f"reply is over the {limit}-byte limit (max_reply_bytes)")
    return body


class ChatClient:
    """Blocking chat completions against one OpenAI-compatible endpoint."""

    def __init__(
        self, endpoint: str, model: str, *, api_key: str | None, timeout_s: float, max_retries: int,
        backoff_s: float, max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self.url = chat_completions_url(endpoint)
        self.model, self.api_key = model, api_key
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s
        self.max_reply_bytes = max_reply_bytes

    def complete(self, messages: list[dict[str, Any]], params: SamplingParams) -> str:
        """One completion's text; retries transient errors, raises TeacherError subclasses."""
        payload = {
            "model": self.model, "messages": messages, "max_tokens": params.max_new_tokens,
            "temperature": params.temperature, "top_p": params.top_p, "stream": False,
        }
        attempt = 0
        while True:
            try:
                return _content(self._post(payload))
            except TransientError:
                if attempt >= self.max_retries:
                    raise
                time.sleep(self.backoff_s * 2**attempt)
                attempt += 1

    def _post(self, payload: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(payload).encode(), headers, method="POST")
        with _Deadline(self.timeout_s) as deadline:
            opener = urllib.request.build_opener(
                _NoRedirects, _WatchedHTTPHandler(deadline), _WatchedHTTPSHandler(deadline)
            )
            try:
                with opener.open(request, timeout=deadline.remaining()) as response:
                    body = _read_capped(response, self.max_reply_bytes)
            except urllib.error.HTTPError as exc:
                try:
                    error = self._http_error(exc, deadline)
                finally:
                    exc.close()
                raise error from exc
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if deadline.expired:
                    raise self._timed_out() from exc
                raise TransientError(f"{self.url}: {getattr(exc, 'reason', exc)}") from exc
            if deadline.expired:  # a body cut by the deadline can look complete when the server sent no length
                raise self._timed_out()
        try:
            return loads_json(body)
        except ValueError as exc:
            raise TransientError(f"reply is not JSON ({exc}): {body[:200]!r}") from exc

    def _timed_out(self) -> TransientError:
        return TransientError(f"{self.url}: no complete reply within {self.timeout_s:g} s (request_timeout_s)")

    def _http_error(self, exc: urllib.error.HTTPError, deadline: _Deadline) -> TeacherError:
        """The TeacherError for an HTTP error status, sorted by what to do next."""
        if 300 <= exc.code < 400:
            location = exc.headers.get("Location", "?") if exc.headers else "?"
            return FatalError(
                f"{self.url}: HTTP {exc.code} redirect to {location}, not followed (it would carry the API key "
                "along); give the final URL as --endpoint"
            )
        try:
            detail = exc.read(_ERROR_BODY_BYTES)
        except (OSError, http.client.HTTPException):
            detail = b""
        if deadline.expired:
            return self._timed_out()
        message = f"HTTP {exc.code}: {_error_message(detail)}"
        if exc.code in _PERMANENT:
            return PermanentError(message)
        if exc.code in _FATAL:
            return FatalError(f"{self.url}: {message}")
        return TransientError(message)
