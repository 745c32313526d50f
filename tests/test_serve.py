"""`videor1 serve` as a real subprocess on loopback with a tiny model, spoken to over HTTP.

Covers video and image completions, concurrent requests, every kind of bad request (each a 4xx with a
message), auth and body limits answered before the body is read, clients that leave mid-request, the
start-up refusals of unsafe settings, and `videor1 annotate --endpoint` against this server; the server
never answers 500 and still serves afterwards.
"""

import base64
import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_annotate import SMALL_MEDIA, outcomes
from tests.test_serve_messages import SMALL
from videor1.annotate.filter import FilterRules, judge
from videor1.cli import app
from videor1.data.media import load_video
from videor1.models.inputs import SampleMedia, processor_inputs, vision_factor
from videor1.models.load import load_processor
from videor1.rewards import extract_answer
from videor1.serve.config import ServeConfig
from videor1.serve.server import serve as serve_config

API_KEY = "test-key"
MAX_BODY_BYTES = 400_000
STARTUP_S = 90
REQUEST_S = 60
CONCURRENT = 8
LONG_TOKENS = 2000  # one to two seconds of generation for the tiny model on one CPU thread
POLL_S = 0.01
STATUSES: list[int] = []  # every status this module received from the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(model: Path, root: Path, logs: Path, *options: str) -> Iterator[dict]:
    """`videor1 serve` as a subprocess on a free loopback port; waits for /health (bounded), always terminated."""
    port = free_port()
    command = [
        sys.executable, "-m", "videor1.cli", "serve", "--model", str(model), "--port", str(port),
        "--api-key", API_KEY, "--allowed-media-dir", str(root), "--served-model-name", "tiny",
        "--log-dir", str(logs), *SMALL_MEDIA,
        # one thread: on a busy 2-core machine two spinning torch threads make the tiny model ~20x slower
        "--torch-threads", "1", *options,
    ]
    with served(command, port, logs) as base:
        yield {"url": base, "port": port, "logs": logs, "root": root}


@contextmanager
def served(command: list[str], port: int, logs: Path, **popen: object) -> Iterator[str]:
    """Run a serve `command` (output to logs/stdout.txt), wait for /health (bounded); its base URL; always ended."""
    with (logs / "stdout.txt").open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **popen)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, (logs / "stdout.txt").read_text()
            assert time.monotonic() < deadline, "no /health within the startup limit"
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(REQUEST_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tiny_models, synth_root, tmp_path_factory):
    """The server of this module's tests."""
    options = ("--max-body-bytes", str(MAX_BODY_BYTES), "--default-max-tokens", "8")
    with running_server(tiny_models(), synth_root, tmp_path_factory.mktemp("serve"), *options) as running:
        yield running


def call(server, path="/v1/chat/completions", body=None, *, raw=None, key=API_KEY, method=None):
    """(status, JSON body) of one request; the status is recorded for the no-500 check."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(server["url"] + path, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_S) as response:
            status, reply = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, reply = error.code, json.loads(error.read())
    STATUSES.append(status)
    return status, reply


def health(server) -> dict:
    with urllib.request.urlopen(server["url"] + "/health", timeout=REQUEST_S) as response:
        return json.loads(response.read())


def wait_for(server, ready) -> dict:
    """Poll /health until `ready(health)` holds (bounded)."""
    deadline = time.monotonic() + REQUEST_S
    while not ready(state := health(server)):
        assert time.monotonic() < deadline, state
        time.sleep(POLL_S)
    return state


def request_head(server, length: int, *, key: str | None = API_KEY, extra: str = "") -> bytes:
    """The head of a chat request announcing a `length`-byte body."""
    auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server['port']}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n").encode()


def open_request(server, body) -> socket.socket:
    """A connection that has sent one chat request and reads nothing: closing it is the client leaving."""
    data = json.dumps(body).encode()
    connection = socket.create_connection(("127.0.0.1", server["port"]), timeout=REQUEST_S)
    connection.sendall(request_head(server, len(data)) + data)
    return connection


def read_answer(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    return int(status_line.split()[1]), headers, body


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def chat(part, text="What happens?", **fields):
    return {"model": "tiny", "messages": [{"role": "user", "content": [part, {"type": "text", "text": text}]}],
            **fields}


def video_part(root):
    return {"type": "video_url", "video_url": {"url": data_url(next((root / "videos").iterdir()), "video/mp4")}}


def image_part(root):
    return {"type": "image_url", "image_url": {"url": data_url(next((root / "images").iterdir()), "image/png")}}


def test_health_and_models(server):
    with urllib.request.urlopen(server["url"] + "/health", timeout=REQUEST_S) as response:
        assert json.loads(response.read())["status"] == "ok"
    status, models = call(server, "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]


def test_video_completion_counts_tokens_and_honours_max_tokens(server, tiny_models):
    body = chat(video_part(server["root"]), max_tokens=5, temperature=0)
    status, reply = call(server, body=body)
    assert status == 200, reply
    usage, choice = reply["usage"], reply["choices"][0]
    # the prompt the server built: our decode under its media settings, the chat template, processor_inputs
    processor = load_processor(tiny_models())
    video = next((server["root"] / "videos").iterdir())
    media = SampleMedia(video=load_video(video, SMALL.sampling(), SMALL.video_budget(vision_factor(processor))))
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = processor_inputs(processor, [text], [media])
    assert usage["prompt_tokens"] == int(expected["attention_mask"].sum())
    assert 0 < usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length") and reply["model"] == "tiny"
    again = call(server, body=chat(video_part(server["root"]), max_tokens=5, temperature=0))[1]
    assert again["choices"][0]["message"] == choice["message"]  # temperature 0 is greedy: deterministic


def test_image_completion_from_a_data_url_and_from_an_allowed_file(server):
    status, reply = call(server, body=chat(image_part(server["root"]), temperature=0.7, top_p=0.9))
    assert status == 200 and 0 < reply["usage"]["completion_tokens"] <= 8  # the server's default max tokens
    image = next((server["root"] / "images").iterdir())
    part = {"type": "image_url", "image_url": {"url": image.as_uri()}}
    status, by_path = call(server, body=chat(part, temperature=0))
    assert status == 200 and by_path["usage"]["prompt_tokens"] == reply["usage"]["prompt_tokens"]


def test_concurrent_requests_are_all_answered(server):
    bodies = [chat(video_part(server["root"]) if i % 2 else image_part(server["root"]), text=f"question {i}",
                   max_tokens=4 + i % 3, temperature=0 if i % 3 else 1.0) for i in range(CONCURRENT)]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(lambda body: call(server, body=body), bodies))
    assert [status for status, _ in results] == [200] * CONCURRENT
    assert all(r["usage"]["completion_tokens"] <= 4 + i % 3 for i, (_, r) in enumerate(results))
    assert len({r["id"] for _, r in results}) == CONCURRENT


def test_health_answers_while_a_long_generation_runs(server):
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(call, server, body=chat(image_part(server["root"]), max_tokens=LONG_TOKENS, temperature=0))
        deadline, running = time.monotonic() + REQUEST_S, 0
        while not running and time.monotonic() < deadline:
            with urllib.request.urlopen(server["url"] + "/health", timeout=REQUEST_S) as response:
                running = json.loads(response.read())["running"]
            time.sleep(POLL_S)
        # that /health reply came from the event loop while the model worker was generating
        assert running == 1 and not long.done()
        status, reply = long.result(REQUEST_S)
    assert status == 200 and reply["usage"]["completion_tokens"] <= LONG_TOKENS


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("wrong", 401)])
def test_a_missing_or_wrong_api_key_is_401(server, key, status):
    got, reply = call(server, body=chat(image_part(server["root"])), key=key)
    assert got == status and "API key" in reply["error"]["message"]
    assert call(server, "/v1/models", key=key)[0] == status


def test_bad_requests_get_a_4xx_with_a_message(server, tmp_path):
    root = server["root"]
    outside = tmp_path / "outside.png"
    outside.write_bytes(next((root / "images").iterdir()).read_bytes())
    cases = [
        (chat({"type": "image_url", "image_url": {"url": outside.as_uri()}}), 403, "outside the allowed"),
        (chat({"type": "image_url", "image_url": {"url": "../" + outside.name}}), 403, "outside the allowed"),
        (chat({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}), 400, "cannot be used"),
        (chat({"type": "image_url", "image_url": {"url": "http://127.0.0.1/a.png"}}), 400, "remote URLs"),
        (chat(image_part(root), stream=True, n=2), 400, "n must be 1 (with stream=true too)"),
        (chat(image_part(root), model="other"), 404, "not served here"),
        (chat(image_part(root), max_tokens=0), 400, "max_tokens"),
        (chat(image_part(root), max_tokens=True), 400, "max_tokens"),  # a bool is an int to Python, not to us
        (chat(image_part(root), temperature=False), 400, "temperature"),
        (chat(image_part(root), stream="false"), 400, "stream"),
        (chat(image_part(root), max_tokens=10**6), 400, "limit"),
        ({"messages": "hello"}, 400, "messages"),
        ({"model": "tiny"}, 400, "messages: Field required"),
        ([1, 2], 400, "dictionary"),
    ]
    for body, status, words in cases:
        got, reply = call(server, body=body)
        assert (got, words in reply["error"]["message"]) == (status, True), (body, reply)
    for raw in (b"{not json", b"", b"\xff\xfe"):
        got, reply = call(server, raw=raw)
        assert got == 400 and reply["error"]["message"], raw
    got, reply = call(server, raw=b"x" * (MAX_BODY_BYTES + 1))
    assert got == 413 and str(MAX_BODY_BYTES) in reply["error"]["message"]
    # without Content-Length (chunked), the bound is counted while reading
    connection = http.client.HTTPConnection("127.0.0.1", int(server["url"].rsplit(":", 1)[1]), timeout=REQUEST_S)
    chunks = (b"x" * (MAX_BODY_BYTES // 4) for _ in range(5))
    connection.request("POST", "/v1/chat/completions", body=chunks, encode_chunked=True,
                       headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    response = connection.getresponse()
    STATUSES.append(response.status)
    assert response.status == 413 and str(MAX_BODY_BYTES) in json.loads(response.read())["error"]["message"]
    connection.close()
    assert call(server, "/v1/nowhere", body={})[0] == 404
    assert call(server, "/v1/chat/completions", method="GET")[0] == 405


def test_auth_and_a_declared_size_are_answered_before_the_body_is_read(server):
    huge = 10**12  # announced, never sent: reading it first would hang this test until its timeout
    for key, status in ((None, 401), ("wrong", 401), (API_KEY, 413)):
        with socket.create_connection(("127.0.0.1", server["port"]), timeout=REQUEST_S) as connection:
            connection.sendall(request_head(server, huge, key=key))
            got, headers, body = read_answer(connection)
            assert (got, headers.get("connection")) == (status, "close"), body
            assert connection.recv(1) == b""  # and the server hung up instead of reading the body
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=REQUEST_S) as connection:
        # a client that waits for "100 Continue" gets the answer instead and never sends its body
        connection.sendall(request_head(server, huge, extra="Expect: 100-continue\r\n"))
        assert read_answer(connection)[0] == 413
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=REQUEST_S) as connection:
        # a small body is answered first too; it is then discarded, so the connection stays usable
        body = json.dumps(chat(image_part(server["root"]))).encode()
        connection.sendall(request_head(server, len(body), key=None))
        got, headers, _ = read_answer(connection)
        assert got == 401 and "connection" not in headers
        connection.sendall(body + f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server['port']}\r\n\r\n".encode())
        assert read_answer(connection)[0] == 200


def test_a_huge_prompt_is_refused_before_the_model_worker(server):
    before = health(server)
    text = "word " * (MAX_BODY_BYTES // 6)  # ~66k tokens, over the default limit of 16384
    status, reply = call(server, body={"model": "tiny", "messages": [{"role": "user", "content": text}]})
    assert status == 400 and "the limit is 16384" in reply["error"]["message"]
    assert health(server)["submitted"] == before["submitted"]  # counted in the request handler, never queued


def test_clients_that_leave_have_their_requests_cancelled(server):
    root, before = server["root"], health(server)
    running = open_request(server, chat(image_part(root), max_tokens=LONG_TOKENS, temperature=0))
    wait_for(server, lambda now: now["running"] == 1)
    queued = open_request(server, chat(image_part(root), max_tokens=3, temperature=0))
    wait_for(server, lambda now: now["queued"] == 1)
    queued.close()
    wait_for(server, lambda now: now["cancelled"] == before["cancelled"] + 1)  # dropped while still queued
    running.close()
    wait_for(server, lambda now: now["cancelled"] == before["cancelled"] + 2 and now["running"] == 0)
    status, reply = call(server, body=chat(image_part(root), max_tokens=3))
    assert status == 200 and reply["usage"]["completion_tokens"] <= 3
    after = health(server)
    assert after["submitted"] - before["submitted"] == 3
    # two generate calls (the one stopped, the last one) and one answer: the queued request never reached the model
    assert (after["batches"] - before["batches"], after["requests"] - before["requests"]) == (2, 1)
    stopped = re.findall(r"client left after (\d+) of (\d+) tokens", (server["logs"] / "serve.log").read_text())
    assert len(stopped) == 1 and int(stopped[0][1]) == LONG_TOKENS and int(stopped[0][0]) < LONG_TOKENS // 2


@pytest.fixture
def started(monkeypatch):
    """The settings `videor1 serve` would run with; the server itself is not started."""
    runs: list[ServeConfig] = []
    monkeypatch.setattr("videor1.serve.server.serve", runs.append)
    return runs


@pytest.mark.parametrize(("options", "env", "words"), [
    (["--api-key", ""], None, "is empty"),
    (["--api-key", "  "], None, "is empty"),
    ([], "", "is empty"),  # click reads an empty variable as unset, which would turn authentication off
    ([], " \t", "is empty"),
    (["--api-key", " key"], None, "whitespace"),
    (["--host", "0.0.0.0"], None, "--insecure-no-auth"),
    (["--host", "::"], None, "--insecure-no-auth"),
    (["--host", "example.org"], None, "--insecure-no-auth"),
    (["--host", "0.0.0.0", "--insecure-no-auth", "--api-key", ""], None, "is empty"),
])
def test_unsafe_auth_settings_refuse_to_start(started, options, env, words):
    result = CliRunner().invoke(app, ["serve", "--model", "m", *options], env={"VIDEOR1_API_KEY": env})
    assert (result.exit_code, started) == (2, []), result.output
    assert result.output.startswith("error: ") and words in result.output and result.output.count("\n") == 1


def test_the_server_refuses_unsafe_settings_without_the_command_line_too():
    for cfg, words in ((ServeConfig(model="m", api_key=""), "is empty"), (ServeConfig(model="m", host="::"), "::")):
        with pytest.raises(ValueError, match=words):
            serve_config(cfg)  # before loading anything: "m" is no model


@pytest.mark.parametrize(("options", "env", "key"), [
    ([], None, None),
    (["--host", "localhost"], None, None),
    (["--host", "127.0.0.2"], None, None),
    (["--host", "::1"], None, None),
    (["--host", "0.0.0.0", "--api-key", "k"], None, "k"),
    (["--host", "0.0.0.0"], "from-env", "from-env"),
    (["--host", "0.0.0.0", "--insecure-no-auth"], None, None),
])
def test_safe_auth_settings_start(started, options, env, key):
    result = CliRunner().invoke(app, ["serve", "--model", "m", *options], env={"VIDEOR1_API_KEY": env})
    assert result.exit_code == 0, result.output
    assert [cfg.api_key for cfg in started] == [key]


def test_annotate_against_the_served_model(server, tmp_path):
    root = server["root"]
    rows = json.loads((root / "train.json").read_text())
    out = tmp_path / "cot.json"
    base = ["annotate", "--data", str(root / "train.json"), "--media-root", str(root), "--out", str(out),
            "--endpoint", server["url"] + "/v1", "--teacher-name", "tiny", "--api-key", API_KEY, "--threshold", "0",
            "--max-new-tokens", "8", "--concurrency", "4"]
    first = CliRunner().invoke(app, [*base, "--max-questions", "6", "--media-as", "file-url"])
    assert first.exit_code == 0, first.output
    kept, rejected = outcomes(out)
    assert len(set(kept) | {line["problem_id"] for line in rejected}) == 6
    rest = CliRunner().invoke(app, base)
    assert rest.exit_code == 0, rest.output
    kept, rejected = outcomes(out)
    assert len(kept) == len(set(kept))
    assert set(kept) | {line["problem_id"] for line in rejected} == {row["problem_id"] for row in rows}
    assert not set(kept) & {line["problem_id"] for line in rejected}
    by_id = {row["problem_id"]: row for row in rows}
    for line in rejected:  # the random model's real outputs, judged as the filter judges them
        row = by_id[line["problem_id"]]
        verdict = judge(line["output"], truth=extract_answer(row["solution"]), problem_type=row["problem_type"],
                        rules=FilterRules(threshold=0.0))
        assert line["reason"] == verdict.reason and line["reason"] != "media"


def test_the_server_never_answered_500_and_still_serves(server):
    status, reply = call(server, body=chat(video_part(server["root"]), max_tokens=3))
    assert status == 200 and reply["usage"]["completion_tokens"] <= 3
    assert 500 not in STATUSES and len(STATUSES) > 1
    log = (server["logs"] / "serve.log").read_text()
    assert " 500 " not in log and "chatcmpl-" in log
    settings = (server["logs"] / "serve.yaml").read_text()
    assert API_KEY not in settings and "max_frames: 4" in settings
