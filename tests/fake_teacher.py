"""A scripted OpenAI-compatible teacher on loopback (standard-library http.server) for annotation tests.

It answers each chat completion with `reply(media_bytes, prompt_text)`, so a test knows every output in
advance; it can fail every request after the first `fail_after` (an outage mid-run) and delay each answer.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeTeacher:
    """Context manager running the server in a thread; `url` is its /v1 base URL."""

    def __init__(
        self, reply: Callable[[bytes, str], str], *, fail_after: int | None = None, fail_status: int = 503,
        delay_s: float = 0.0, api_key: str | None = None,
    ) -> None:
        self.reply, self.fail_after, self.fail_status = reply, fail_after, fail_status
        self.delay_s, self.api_key = delay_s, api_key
        self.requests = 0
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeTeacher:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
        """(status, JSON reply) for one request body."""
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            count = self.requests
        time.sleep(self.delay_s)
        if self.fail_after is not None and count > self.fail_after:
            return self.fail_status, {"error": {"message": "teacher unavailable", "code": self.fail_status}}
        content = body["messages"][-1]["content"]
        media = next(part for part in content if part["type"] in ("image_url", "video_url"))
        url = media[media["type"]]["url"]
        data = base64.b64decode(url.partition(",")[2])
        text = next(part["text"] for part in content if part["type"] == "text")
        message = {"role": "assistant", "content": self.reply(data, text)}
        return 200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if teacher.api_key and self.headers.get("Authorization") != f"Bearer {teacher.api_key}":
                    status, reply = 401, {"error": {"message": "bad key"}}
                else:
                    status, reply = teacher.answer(body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass  # keep test output quiet

        return Handler
