"""The teacher client against hostile servers on loopback: a reply that trickles in ends at the request's
deadline, an oversized reply is refused without being read or written anywhere, and a redirect never takes
the API key to another server."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from tests.fake_teacher import FakeTeacher
from videor1.annotate.client import MAX_REPLY_BYTES, ChatClient, FatalError, TransientError
from videor1.cli import app
from videor1.models.generation import SamplingParams

DEADLINE_S = 1.0
DRIP_S = 0.1  # one byte per DRIP_S, for DRIP_BYTES bytes: 6 s, six times the deadline
DRIP_BYTES = 60
LATE_S = 4.0  # a request that ends after this did not stop at its 1 s deadline
HUGE = 400 * 2**20
CHUNK = 2**20
PARAMS = SamplingParams(8, 0.0, 1.0)
MESSAGES = [{"role": "user", "content": "hi"}]
KEY = "secret-key"


def _sysctl_max(name: str, default: int) -> int:
    try:
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return default


# Bytes a server gets out before a client that stopped reading hangs up: the kernel's socket buffers, which on
# loopback grow (autotuning) up to tcp_rmem's max on the client side and tcp_wmem's max on the server side
# (32 MiB + 4 MiB here); that is what a refused reply may cost, never HUGE.
IN_FLIGHT_BYTES = _sysctl_max("tcp_rmem", 32 * 2**20) + _sysctl_max("tcp_wmem", 4 * 2**20)
COMPLETION = json.dumps({"choices": [{"message": {"role": "assistant", "content": "<answer>A</answer>"}}]}).encode()


class Server:
    """A loopback HTTP server in a thread whose POST handler is `respond(handler)`; records what it saw."""

    def __init__(self, respond):
        self.respond = respond
        self.headers: list[dict] = []
        self.sent = 0  # body bytes the handler managed to write
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.headers.append(dict(self.headers))
                try:
                    server.respond(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up, as it should

            do_GET = do_POST  # noqa: N815 (urllib turns a redirected POST into a GET; that must be seen too)

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._http.shutdown()
        self._http.server_close()

    def write(self, handler, data: bytes):
        handler.wfile.write(data)
        handler.wfile.flush()
        self.sent += len(data)


def client(url, **changes):
    settings = {"api_key": KEY, "timeout_s": DEADLINE_S, "max_retries": 0, "backoff_s": 0.0, **changes}
    return ChatClient(url, "teacher", **settings)


def timed(fn):
    start = time.monotonic()
    try:
        fn()
    except Exception as exc:  # returned for the test to check
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


# --- a total deadline per request ---------------------------------------------------------------------------


def drip_body(server):
    def respond(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(DRIP_BYTES))
        handler.end_headers()
        for _ in range(DRIP_BYTES):
            server.write(handler, b" ")
            time.sleep(DRIP_S)

    return respond


def drip_headers(server):
    def respond(handler):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * DRIP_BYTES:
            server.write(handler, bytes([byte]))
            time.sleep(DRIP_S)

    return respond


@pytest.mark.parametrize("drip", [drip_body, drip_headers], ids=["body", "headers"])
def test_a_trickling_reply_ends_at_the_deadline(drip):
    server = Server(None)
    server.respond = drip(server)
    with server:
        error, took = timed(lambda: client(server.url).complete(MESSAGES, PARAMS))
    # each byte arrives well within a 1 s socket timeout: only a deadline on the whole request ends it
    assert isinstance(error, TransientError), error
    assert "no complete reply within 1 s" in str(error)
    assert took < LATE_S, f"took {took:.1f} s"
    assert server.sent < DRIP_BYTES * 3 // 4  # the client left long before the server was done


def test_a_prompt_reply_within_the_deadline_is_answered():
    # half the deadline spent before answering; the key reaches the server asked (else a 401, a FatalError)
    with FakeTeacher(lambda data, prompt: "<answer>A</answer>", api_key=KEY, delay_s=DEADLINE_S / 2) as teacher:
        media = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        messages = [{"role": "user", "content": [media, {"type": "text", "text": "q"}]}]
        assert client(teacher.url).complete(messages, PARAMS) == "<answer>A</answer>"


# --- a cap on the reply's size ------------------------------------------------------------------------------


def stream(server, status, *, declared):
    """A reply of HUGE bytes, with that Content-Length (declared) or chunked with no length given."""

    def respond(handler):
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if declared:
            handler.send_header("Content-Length", str(HUGE))
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"[" + b" " * (CHUNK - 1)
        for _ in range(HUGE // CHUNK):
            server.write(handler, chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))

    return respond


@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_reply_is_refused_unread(status, declared):
    server = Server(None)
    server.respond = stream(server, status, declared=declared)
    cap = 2 * CHUNK
    with server:
        error, took = timed(lambda: client(server.url, timeout_s=30, max_reply_bytes=cap).complete(MESSAGES, PARAMS))
    assert isinstance(error, TransientError), error
    assert len(str(error)) < 500  # the error names the limit; it does not carry the reply
    if status == 200:
        assert f"over the {cap}-byte limit (max_reply_bytes)" in str(error)
    assert took < LATE_S
    # what the server got out before the client hung up: the cap and socket buffers, not 400 MB
    assert server.sent <= cap + IN_FLIGHT_BYTES + CHUNK < HUGE


def test_annotate_writes_nothing_huge_for_a_huge_reply(tmp_path, synth_root):
    server = Server(None)
    server.respond = stream(server, 200, declared=False)
    out = tmp_path / "cot.json"
    with server:
        result = CliRunner().invoke(app, [
            "annotate", "--data", str(synth_root / "train.json"), "--media-root", str(synth_root), "--out", str(out),
            "--endpoint", server.url, "--teacher-name", "t", "--max-questions", "2", "--max-retries", "0",
            "--concurrency", "1", "--request-timeout-s", "60",
        ])
    assert result.exit_code == 1, result.output  # failed questions, left for the next run
    failed = [json.loads(line) for line in (tmp_path / "cot.failed.jsonl").read_text().splitlines()]
    assert len(failed) == 2 and all("max_reply_bytes" in line["detail"] for line in failed)
    written = sum(path.stat().st_size for path in tmp_path.iterdir())
    assert written < 2**20, f"{written} bytes written"
    # each request read up to the default cap, then the connection was dropped: 400 MB were never sent
    assert len(server.headers) == 2
    assert server.sent <= 2 * (MAX_REPLY_BYTES + IN_FLIGHT_BYTES + CHUNK) < 2 * HUGE


def test_a_deeply_nested_reply_is_a_transient_error():
    def respond(handler):
        body = b"[" * 200_000
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with Server(respond) as server:
        with pytest.raises(TransientError, match="reply is not JSON \\(JSON nested deeper than"):
            client(server.url).complete(MESSAGES, PARAMS)


# --- redirects never carry the key ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_with_the_key(code):
    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(COMPLETION)))
        handler.end_headers()
        handler.wfile.write(COMPLETION)

    with Server(answer) as elsewhere:
        def redirect(handler):
            handler.send_response(code)
            handler.send_header("Location", elsewhere.url + "/chat/completions")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with Server(redirect) as origin:
            with pytest.raises(FatalError, match=f"HTTP {code} redirect to {elsewhere.url}/chat/completions, "
                                                 "not followed"):
                client(origin.url).complete(MESSAGES, PARAMS)
            assert origin.headers[0]["Authorization"] == f"Bearer {KEY}"  # the origin itself gets the key
    assert elsewhere.headers == []  # the other server heard nothing, so no key either
