"""`videor1 serve`'s bounds on the work one client can make it do, on real server subprocesses over sockets.

Two servers with a tiny model: one with an API key and small in-flight limits (requests and body bytes in
flight answered 503 before a body is read, the decode budget, any Host accepted with a key), and one
without a key whose process starts with few file descriptors (idle and half-sent connections closed at the
header deadline while /health answers, a slow body cut at the body deadline, only loopback Host names
answered, decoding stopped when its client leaves). The settings that cannot work (a non-ASCII key, an
in-flight byte bound below one body) refuse to start.
"""

import json
import resource
import selectors
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_annotate import SMALL_MEDIA
from tests.test_serve import (
    API_KEY,
    REQUEST_S,
    call,
    chat,
    free_port,
    health,
    image_part,
    open_request,
    read_answer,
    request_head,
    running_server,
    served,
    video_part,
    wait_for,
)
from videor1.cli import app
from videor1.serve.config import ServeConfig
from videor1.serve.server import serve as serve_config

MAX_IN_FLIGHT = 3
MAX_BODY_BYTES = 400_000
MAX_DECODE_PACKETS = 5  # the synthetic clips have 8 packets
TEXT_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

FEW_FILES = 256  # the keyless server's soft open-files limit at exec: fewer than the connections below
IDLE, HALF_SENT = 300, 20
HEADER_TIMEOUT_S = 8.0  # long enough that /health answers well before it on a loaded machine
BODY_TIMEOUT_S = 2.0
LONG_VIDEO_PACKETS = 100_000  # ~30 s to decode at 1280x720 on one core: far longer than any step of a test
LEFT_LOG = "the client left while its media was decoded"


@pytest.fixture(scope="module")
def limited(tiny_models, synth_root, tmp_path_factory):
    """A server with a key and small in-flight and decode limits."""
    options = ("--max-in-flight", str(MAX_IN_FLIGHT), "--max-body-bytes", str(MAX_BODY_BYTES),
               "--max-body-bytes-in-flight", str(MAX_BODY_BYTES), "--max-decode-packets", str(MAX_DECODE_PACKETS),
               "--default-max-tokens", "2")
    with running_server(tiny_models(), synth_root, tmp_path_factory.mktemp("limited"), *options) as running:
        yield running


def long_video(path: Path, packets: int, width: int = 1280, height: int = 720, fps: int = 25) -> None:
    """An h264 clip of `packets` frames written in a second: one keyframe, then one P-frame packet repeated."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # one keyframe for the whole clip: reaching a late frame means decoding every packet before it
        stream.options = {"g": str(packets), "keyint_min": str(packets), "bf": "0", "sc_threshold": "0"}
        black = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        encoded = []
        for pts in range(2):
            black.pts = pts
            encoded += stream.encode(black)
        encoded += stream.encode()
        key, unchanged = bytes(encoded[0]), bytes(encoded[1])
        time_base = encoded[0].time_base
        step = int(1 / (fps * time_base))
        for i in range(packets):
            packet = av.Packet(key if i == 0 else unchanged)
            packet.pts = packet.dts = i * step
            packet.time_base, packet.stream, packet.is_keyframe = time_base, stream, i == 0
            container.mux(packet)


def few_files() -> None:
    """In the server's process before exec: the soft open-files limit many systems start with, made smaller."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FEW_FILES, hard))


@contextmanager
def keyless_server(model: Path, root: Path, logs: Path, *options: str) -> Iterator[dict]:
    """`videor1 serve` without an API key (running_server always sets one), started with FEW_FILES open files."""
    port = free_port()
    command = [
        sys.executable, "-m", "videor1.cli", "serve", "--model", str(model), "--port", str(port),
        "--allowed-media-dir", str(root), "--served-model-name", "tiny", "--log-dir", str(logs), *SMALL_MEDIA,
        "--torch-threads", "1", *options,
    ]
    with served(command, port, logs, preexec_fn=few_files) as base:
        yield {"url": base, "port": port, "logs": logs, "root": root}


@pytest.fixture(scope="module")
def keyless(tiny_models, tmp_path_factory):
    """A server without a key: short timeouts, one decode thread, a long video in its media directory."""
    root = tmp_path_factory.mktemp("keyless-media")
    long_video(root / "long.mp4", LONG_VIDEO_PACKETS)
    options = ("--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S),
               "--decode-workers", "1", "--max-decode-packets", str(2 * LONG_VIDEO_PACKETS),
               "--max-decode-seconds", "600", "--allowed-host", "allowed.example", "--default-max-tokens", "2")
    with keyless_server(tiny_models(), root, tmp_path_factory.mktemp("keyless"), *options) as running:
        yield running


def hold(server, length: int) -> socket.socket:
    """A connection that announced a `length`-byte chat body and sends none of it: one request in flight."""
    connection = socket.create_connection(("127.0.0.1", server["port"]), timeout=REQUEST_S)
    connection.sendall(request_head(server, length))
    return connection


def raw_answer(server, request: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers and JSON body of one raw request on a fresh connection."""
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=REQUEST_S) as connection:
        connection.sendall(request)
        status, headers, body = read_answer(connection)
    return status, headers, json.loads(body)


def get(path: str, host: str | None, *, key: str | None = None, version: str = "1.1") -> bytes:
    """A raw GET with this Host header (none when None)."""
    lines = [f"GET {path} HTTP/{version}", "Connection: close"]
    lines += [f"Host: {host}"] if host is not None else []
    lines += [f"Authorization: Bearer {key}"] if key is not None else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def busy_error(headers: dict[str, str], reply: dict, setting: str) -> bool:
    """A 503 body and headers as the guard sends them: Retry-After and an overloaded_error naming the setting."""
    error = reply["error"]
    return headers.get("retry-after") == "1" and error["type"] == "overloaded_error" and setting in error["message"]


def test_requests_past_max_in_flight_get_503_before_their_body_is_read(limited):
    holders = [hold(limited, 100) for _ in range(MAX_IN_FLIGHT)]
    try:
        wait_for(limited, lambda now: now["in_flight"] == MAX_IN_FLIGHT)
        assert health(limited)["status"] == "ok"  # /health is not counted: it answers while the server is full
        with socket.create_connection(("127.0.0.1", limited["port"]), timeout=REQUEST_S) as connection:
            connection.sendall(request_head(limited, 10**12))  # announced, never sent: reading it would hang
            status, headers, body = read_answer(connection)
            assert (status, headers.get("connection")) == (503, "close"), body
            assert busy_error(headers, json.loads(body), "--max-in-flight")
            assert connection.recv(1) == b""
    finally:
        for holder in holders:
            holder.close()
    wait_for(limited, lambda now: now["in_flight"] == 0 and now["in_flight_bytes"] == 0)
    status, reply = call(limited, body=TEXT_CHAT)
    assert status == 200 and reply["usage"]["completion_tokens"] <= 2


def test_body_bytes_in_flight_are_bounded_before_and_while_reading(limited):
    held = MAX_BODY_BYTES - 1000  # the bound is MAX_BODY_BYTES too: 1000 bytes are left for others
    holder = hold(limited, held)
    try:
        wait_for(limited, lambda now: now["in_flight_bytes"] == held)
        # a declared body that does not fit is refused before it is read
        status, headers, reply = raw_answer(limited, request_head(limited, 2000))
        assert status == 503 and busy_error(headers, reply, "--max-body-bytes-in-flight")
        # a chunked body is counted as it arrives, and refused once it passes the bound
        chunked = request_head(limited, 0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
        chunks = b"1f4\r\n" + b" " * 500 + b"\r\n320\r\n" + b" " * 800 + b"\r\n0\r\n\r\n"
        status, headers, reply = raw_answer(limited, chunked + chunks)
        assert (status, headers.get("connection")) == (503, "close")
        assert busy_error(headers, reply, "--max-body-bytes-in-flight")
        status, reply = call(limited, body=TEXT_CHAT)  # a small body still fits beside the holder
        assert status == 200, reply
    finally:
        holder.close()
    wait_for(limited, lambda now: now["in_flight"] == 0 and now["in_flight_bytes"] == 0)


def test_a_video_over_the_decode_budget_is_413_naming_the_setting(limited):
    status, reply = call(limited, body=chat(video_part(limited["root"])))
    assert status == 413 and "--max-decode-packets" in reply["error"]["message"], reply
    status, reply = call(limited, body=chat(image_part(limited["root"])))  # an image reads no packets
    assert status == 200, reply


def test_with_a_key_any_host_is_answered_as_before(limited):
    status, _, reply = raw_answer(limited, get("/v1/models", "evil.example", key=API_KEY))
    assert status == 200 and reply["data"][0]["id"] == "tiny"
    status, _, reply = raw_answer(limited, get("/v1/models", "evil.example"))
    assert status == 401 and "API key" in reply["error"]["message"]


@pytest.mark.parametrize("host", [
    "localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1", "127.0.0.1:1", "127.1.2.3:80", "[::1]", "[::1]:9",
    "allowed.example", "Allowed.Example:8000",
])
def test_without_a_key_loopback_hosts_are_answered(keyless, host):
    status, _, reply = raw_answer(keyless, get("/health", host))
    assert status == 200 and reply["status"] == "ok"


@pytest.mark.parametrize("host", [
    "evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example", "[::2]", "0.0.0.0",
    "", "[::1",
])
def test_without_a_key_other_hosts_get_403_naming_the_settings(keyless, host):
    for path in ("/health", "/v1/models", "/"):
        status, _, reply = raw_answer(keyless, get(path, host))
        message = reply["error"]["message"]
        assert status == 403 and "--allowed-host" in message and "--api-key" in message, reply
        assert "\n" not in message


def test_without_a_key_a_request_without_host_is_answered(keyless):
    status, _, reply = raw_answer(keyless, get("/health", None, version="1.0"))  # HTTP/1.0 may omit Host
    assert status == 200 and reply["status"] == "ok"


def closed_times(connections: list[socket.socket], limit_s: float) -> list[float]:
    """When the server closed each connection (it sends nothing before), waiting at most `limit_s`."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for connection in connections:
            selector.register(connection, selectors.EVENT_READ)
        deadline = time.monotonic() + limit_s
        while len(closed) < len(connections):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(connections) - len(closed)} connections still open"
            for key, _ in selector.select(remaining):
                now = time.monotonic()
                try:
                    assert key.fileobj.recv(1) == b""
                except ConnectionResetError:
                    pass
                closed[key.fileobj] = now
                selector.unregister(key.fileobj)
    return [closed[connection] for connection in connections]


def test_idle_and_half_sent_connections_are_closed_while_health_answers(keyless):
    # more connections than the open files the server was started with: it raised its own limit
    connections, opened = [], []
    try:
        for i in range(IDLE + HALF_SENT):
            opened.append(time.monotonic())  # before connecting: the server's deadline starts after this
            connection = socket.create_connection(("127.0.0.1", keyless["port"]), timeout=REQUEST_S)
            connections.append(connection)
            if i >= IDLE:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert health(keyless)["status"] == "ok"
        # answered before any of those connections reached its deadline, so not thanks to it
        assert time.monotonic() - opened[0] < HEADER_TIMEOUT_S
        closed = closed_times(connections, HEADER_TIMEOUT_S + REQUEST_S)
        assert all(end - start >= HEADER_TIMEOUT_S for start, end in zip(opened, closed, strict=True))
    finally:
        for connection in connections:
            connection.close()
    assert health(keyless)["status"] == "ok"


def test_a_body_that_does_not_arrive_in_time_gets_408_and_is_cut(keyless):
    with socket.create_connection(("127.0.0.1", keyless["port"]), timeout=REQUEST_S) as connection:
        start = time.monotonic()
        connection.sendall(request_head(keyless, 1000, key=None) + b'{"model": ')  # and the rest never
        status, headers, body = read_answer(connection)
        waited = time.monotonic() - start
        assert (status, headers.get("connection")) == (408, "close"), body
        assert "--body-timeout-s" in json.loads(body)["error"]["message"]
        assert waited >= BODY_TIMEOUT_S
        assert connection.recv(1) == b""
    assert health(keyless)["in_flight"] == 0


def test_decoding_stops_when_the_client_leaves(keyless):
    part = {"type": "video_url", "video_url": {"url": "long.mp4"}}
    # one decode thread: the first request decodes the long video, the second waits for the thread
    decoding = open_request(keyless, chat(part, text="first"))
    wait_for(keyless, lambda now: now["decoding"] == 1)
    waiting = open_request(keyless, chat(part, text="second"))
    wait_for(keyless, lambda now: now["decoding"] == 2)
    waiting.close()  # gone before its decode starts
    decoding.close()  # gone mid-decode, tens of seconds before it would end
    wait_for(keyless, lambda now: now["decoding"] == 0 and now["in_flight"] == 0)
    log = (keyless["logs"] / "serve.log").read_text()
    left = [line for line in log.splitlines() if LEFT_LOG in line]
    assert len(left) == 2 and all(" INFO " in line for line in left), log[-2000:]
    assert "unhandled error" not in log
    assert health(keyless)["submitted"] == 0  # neither reached the model


@pytest.fixture
def started(monkeypatch):
    """The settings `videor1 serve` would run with; the server itself is not started."""
    runs: list[ServeConfig] = []
    monkeypatch.setattr("videor1.serve.server.serve", runs.append)
    return runs


@pytest.mark.parametrize(("options", "env"), [
    (["--api-key", "clé-secrète"], None),
    (["--api-key", "ключ"], None),
    (["--api-key", "key\u00a0with-nbsp"], None),
    (["--api-key", "tab\tinside"], None),
    ([], "clé"),
])
def test_an_api_key_outside_printable_ascii_refuses_to_start(started, options, env):
    result = CliRunner().invoke(app, ["serve", "--model", "m", *options], env={"VIDEOR1_API_KEY": env})
    assert (result.exit_code, started) == (2, []), result.output
    assert result.output.startswith("error: ") and "printable ASCII" in result.output
    assert result.output.count("\n") == 1


def test_the_server_refuses_a_non_ascii_key_without_the_command_line_too():
    with pytest.raises(ValueError, match="printable ASCII"):
        serve_config(ServeConfig(model="m", api_key="clé"))  # before loading anything: "m" is no model


def test_the_limit_options_reach_the_settings(started):
    result = CliRunner().invoke(app, [
        "serve", "--model", "m", "--allowed-host", "a.example", "--allowed-host", "b.example", "--max-in-flight", "5",
        "--max-body-bytes-in-flight", str(2**27), "--max-decode-packets", "100", "--max-decode-seconds", "2.5",
        "--max-connections", "64", "--keep-alive-timeout-s", "3", "--header-timeout-s", "4", "--body-timeout-s", "6",
    ])
    assert result.exit_code == 0, result.output
    (cfg,) = started
    assert cfg.allowed_hosts == ["a.example", "b.example"]
    assert (cfg.in_flight_limit(), cfg.in_flight_bytes_limit()) == (5, 2**27)
    assert (cfg.max_decode_packets, cfg.max_decode_seconds, cfg.max_connections) == (100, 2.5, 64)
    assert (cfg.keep_alive_timeout_s, cfg.header_timeout_s, cfg.body_timeout_s) == (3, 4.0, 6.0)


def test_the_derived_limits_follow_the_settings_they_come_from():
    cfg = ServeConfig(model="m", max_queue=10, max_batch_size=4, decode_workers=2, max_body_bytes=1000)
    # 10 waiting for the model + 4 generating + 2 decoding: a request past those would be refused anyway
    assert (cfg.in_flight_limit(), cfg.in_flight_bytes_limit()) == (16, 2000)


def test_an_in_flight_byte_bound_below_one_body_refuses_to_start(started):
    result = CliRunner().invoke(app, ["serve", "--model", "m", "--max-body-bytes", "1000",
                                      "--max-body-bytes-in-flight", "999"])
    assert (result.exit_code, started) == (2, []), result.output
    assert "max_body_bytes_in_flight (999) is below max_body_bytes (1000)" in result.output
    assert result.output.count("\n") == 1
