"""A minimal OpenAI chat-completions client on the standard library, with errors sorted by what to do next.

The standard library is enough here: one blocking JSON POST per call, run from a thread pool, and it adds
no dependency. Errors are classified so that one bad question never stops a run and a misconfigured run
stops at once:
- `PermanentError` (400, 413, 422): the question's own request is refused; retrying cannot help;
- `FatalError` (401, 403, 404): the key, the model name, the URL or the media directory is wrong for every
  question, so the run stops rather than marking every row;
- `TransientError` (timeouts, refused connections, 408, 429, 5xx, malformed replies): retried with
  exponential backoff, then left for the next run.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from videor1.models.generation import SamplingParams

_PERMANENT = frozenset({400, 413, 422})
_FATAL = frozenset({401, 403, 404})


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
        error = json.loads(body).get("error")
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


class ChatClient:
    """Blocking chat completions against one OpenAI-compatible endpoint."""

    def __init__(
        self, endpoint: str, model: str, *, api_key: str | None, timeout_s: float, max_retries: int,
        backoff_s: float,
    ) -> None:
        self.url = chat_completions_url(endpoint)
        self.model, self.api_key = model, api_key
        self.timeout_s, self.max_retries, self.backoff_s = timeout_s, max_retries, backoff_s

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
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code}: {_error_message(exc.read())}"
            if exc.code in _PERMANENT:
                raise PermanentError(message) from exc
            if exc.code in _FATAL:
                raise FatalError(f"{self.url}: {message}") from exc
            raise TransientError(message) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise TransientError(f"{self.url}: {getattr(exc, 'reason', exc)}") from exc
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TransientError(f"reply is not JSON: {body[:200]!r}") from exc
