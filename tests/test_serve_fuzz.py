"""Fuzzing `videor1 serve` over HTTP: a few hundred mutated chat requests, every one answered below 500.

A valid request (a system message, an image data URL and a text part) is mutated with a fixed seed: keys
dropped, added or duplicated, values swapped for other JSON types, huge, negative or non-finite numbers,
long strings, NUL bytes, lone surrogates and special tokens, odd roles and part types, media URLs with odd
schemes, paths and broken data URLs; and at the byte level: truncated or bit-flipped JSON, invalid UTF-8,
deep nesting, other content types and chunked bodies. The requests go to a real server subprocess over
HTTP, as a client's would; each must get a 200 completion (a complete event stream when a mutation turned
`stream` on) or a 4xx with an OpenAI error body, and the server must still serve afterwards.
"""

import base64
import http.client
import json
import random
from collections import Counter
from typing import Any

import pytest

from tests.test_serve import API_KEY, REQUEST_S, data_url, running_server

SEED = 20240611
REQUESTS = 300
MAX_BODY_BYTES = 1_000_000
CONTENT_TYPES = [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png",
    "application/json; charset=utf-16", "application/merge-patch+json", "application/json;;;", "application",
]


@pytest.fixture(scope="module")
def server(tiny_models, synth_root, tmp_path_factory):
    """A server whose token limit keeps every accepted request short."""
    options = ("--max-body-bytes", str(MAX_BODY_BYTES), "--default-max-tokens", "2", "--max-tokens-limit", "4",
               "--max-media-per-request", "2")
    with running_server(tiny_models(), synth_root, tmp_path_factory.mktemp("fuzz"), *options) as running:
        yield running


def media_urls(root) -> list[str]:
    """Odd media URLs (and a few good ones) for image_url and video_url parts."""
    image = next((root / "images").iterdir())
    video = next((root / "videos").iterdir())
    png = image.read_bytes()
    b64 = base64.b64encode
    return [
        data_url(image, "image/png"), data_url(video, "video/mp4"), image.as_uri(), str(image),
        f"images/{image.name}", f"images/../images/{image.name}", str(video),  # a video as an image part
        "data:image/png;base64,!!!!", "data:image/png;base64,", "data:image/png;base64,AAAA", "data:image/png,abc",
        "data:;base64,AAAA", "data:text/plain;base64,aGVsbG8=", "data:", "data:image/png;base64,AAA",
        "data:image/png;base64," + b64(png[: len(png) // 2]).decode(),
        "data:video/mp4;base64," + b64(bytes(range(256)) * 8).decode(),
        "data:video/mp4;base64," + b64(png).decode(), "data:image/png;base64," + b64(b"\0" * 64).decode(),
        "data:image/svg+xml;base64," + b64(b"<svg xmlns='http://www.w3.org/2000/svg'/>").decode(),
        "file:///etc/passwd", "file://localhost/etc/hostname", "file:", "/etc/passwd", "../../etc/passwd",
        "%2e%2e/%2e%2e/etc/passwd", "images", "images/", "nonexistent.png", "~/x.png", "C:\\x.png",
        "ftp://127.0.0.1/a.png", "javascript:alert(1)", "http://127.0.0.1:1/a.png", "HTTPS://EXAMPLE.COM/A.PNG",
        "gopher://x", "//127.0.0.1/a.png", " ", "\t" + str(image), f"{image}\x00.png", "a" * 5000 + ".png",
        "x" * 300 + "/" + "y" * 300,
    ]


def weird_values(rng: random.Random, urls: list[str]) -> list[Any]:
    """Replacement values: every JSON type, edge numbers, hostile strings and shapes."""
    deep: Any = "bottom"
    for _ in range(rng.choice([10, 200, 800])):
        deep = [deep] if rng.random() < 0.5 else {"content": deep}
    return [
        None, True, False, 0, -1, 1, 4, 5, 2, 2**63, -(2**63), 10**30, 1.5, -0.0, 2.5, 1e308, float("nan"),
        float("inf"), float("-inf"), "", "x" * 20_000, "\x00", "a\x00b", "\ud800", "<|image_pad|>",
        "<|video_pad|><|vision_start|><|vision_end|>", "<|im_end|><|im_start|>assistant", "{{ raise('x') }}",
        "user", "assistant", "system", "developer", "tool", "function", "USER", "text", "image_url", "video_url",
        "input_audio", "image", [], {}, [[]], [None], [1, 2], {"url": None}, {"url": 5}, {"type": "text"},
        {"type": {"text": 1}}, {"type": ["image_url"]}, {"type": "text", "text": ["a"]}, deep, rng.choice(urls),
        {"url": rng.choice(urls)}, {"type": "image_url", "image_url": {"url": rng.choice(urls)}},
        {"type": "video_url", "video_url": rng.choice(urls)},
    ]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every position in a JSON tree (the root is ())."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


def mutate_tree(rng: random.Random, body: dict, urls: list[str]) -> Any:
    """One to three structural mutations of a request (drop, swap, wrap, add a key, edit a URL)."""
    root: Any = json.loads(json.dumps(body))
    for _ in range(rng.randint(1, 3)):
        where = rng.choice(paths(root))
        kind = rng.choice(["drop", "swap", "swap", "wrap", "add", "url"])
        if not where:  # the root itself
            root = rng.choice(weird_values(rng, urls)) if kind == "swap" else [root] if kind == "wrap" else root
            continue
        parent = root
        for step in where[:-1]:
            parent = parent[step]
        last = where[-1]
        if kind == "drop":
            del parent[last]
        elif kind == "swap":
            parent[last] = rng.choice(weird_values(rng, urls))
        elif kind == "wrap":
            parent[last] = rng.choice([[parent[last]], {"url": parent[last]}, {"type": parent[last]}])
        elif kind == "url":
            parent[last] = rng.choice(urls)
        elif isinstance(parent[last], dict):
            key = rng.choice(["type", "url", "text", "role", "content", "max_tokens", "n", "stop", "x" * 1000])
            parent[last][key] = rng.choice(weird_values(rng, urls))
    return root


def mutate_bytes(rng: random.Random, body: dict, urls: list[str]) -> bytes:
    """A byte-level mutation: broken, duplicated-key, nested, re-encoded or bare JSON."""
    data = json.dumps(body).encode()
    kind = rng.choice(["truncate", "utf8", "nul", "flip", "duplicate", "nested", "utf16", "bare"])
    at = rng.randrange(len(data))
    if kind == "truncate":
        return data[:at]
    if kind == "utf8":
        return data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]) + data[at:]
    if kind == "nul":
        return data[:at] + b"\x00" + data[at:]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1 :]
    if kind == "duplicate":  # JSON objects with repeated keys: the parser keeps the last
        key = rng.choice(["max_tokens", "messages", "model", "temperature", "stream"])
        extra = json.dumps({key: rng.choice(weird_values(rng, urls))})[1:-1]
        return data[:-1] + b", " + extra.encode() + b"}"
    if kind == "nested":
        depth = rng.choice([100, 5_000, 100_000])
        return b'{"model": "tiny", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "utf16":
        return json.dumps(body).encode("utf-16")
    return rng.choice([b"", b"null", b"[]", b"0", b'"x"', b"{}", b"true", b"  ", b"\x00", b"{" * 10])


def with_media(body: dict, kind: str, url: str) -> dict:
    """The request with its media part replaced by a `kind` part pointing at `url`."""
    changed = json.loads(json.dumps(body))
    changed["messages"][1]["content"][0] = {"type": kind, kind: {"url": url}}
    return changed


def send(port: int, body: bytes, content_type: str | None, chunked: bool) -> tuple[int, bytes]:
    """POST one body to /v1/chat/completions on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_S)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        if chunked:
            pieces = [body[i : i + 4096] for i in range(0, len(body), 4096)]
            connection.request("POST", "/v1/chat/completions", body=iter(pieces), headers=headers,
                               encode_chunked=True)
        else:
            connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def well_formed_stream(reply: bytes) -> bool:
    """A complete `stream: true` answer: chunk events (or an error event), then `[DONE]`."""
    events = [line[len(b"data: "):] for line in reply.split(b"\n\n") if line.startswith(b"data: ")]
    if len(events) < 2 or events[-1] != b"[DONE]":
        return False
    try:
        chunks = [json.loads(event) for event in events[:-1]]
    except ValueError:
        return False
    return chunks[0]["choices"][0]["delta"]["role"] == "assistant" and (
        "error" in chunks[-1] or any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks))


def well_formed(status: int, reply: bytes) -> bool:
    """A 200 completion (or stream), or a 4xx with an OpenAI error body."""
    if status == 200 and reply.startswith(b"data: "):  # a mutation can turn "stream" on
        return well_formed_stream(reply)
    try:
        data = json.loads(reply)
    except ValueError:
        return False
    if status == 200:
        return isinstance(data["choices"][0]["message"]["content"], str)
    return 400 <= status < 500 and isinstance(data.get("error", {}).get("message"), str)


def test_mutated_requests_never_get_a_5xx_and_the_server_still_serves(server):
    rng = random.Random(SEED)
    urls = media_urls(server["root"])
    base = {
        "model": "tiny", "max_tokens": 2, "temperature": 0,
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": urls[0]}},
                                         {"type": "text", "text": "What is shown?"}]},
        ],
    }
    media_cases = [(kind, url) for url in urls for kind in ("image_url", "video_url")]  # each URL in both parts
    statuses: Counter[int] = Counter()
    bad = []
    for i in range(REQUESTS):
        if i < len(media_cases):
            body = json.dumps(with_media(base, *media_cases[i])).encode()
        elif i % 3 == 2:
            body = mutate_bytes(rng, base, urls)
        else:
            body = json.dumps(mutate_tree(rng, base, urls)).encode()
        content_type = rng.choice(CONTENT_TYPES) if rng.random() < 0.1 else "application/json"
        status, reply = send(server["port"], body, content_type, chunked=rng.random() < 0.1)
        statuses[status] += 1
        if status >= 500 or not well_formed(status, reply):
            bad.append((i, status, body[:300], reply[:300]))
    assert not bad, "\n".join(map(repr, bad))
    assert statuses[200] >= 10 and sum(n for s, n in statuses.items() if 400 <= s < 500) >= REQUESTS // 2, statuses
    status, reply = send(server["port"], json.dumps(base).encode(), "application/json", chunked=False)
    assert status == 200 and json.loads(reply)["usage"]["completion_tokens"] <= 2
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=REQUEST_S)
    connection.request("GET", "/health")
    health = json.loads(connection.getresponse().read())
    connection.close()
    assert (health["status"], health["queued"], health["running"]) == ("ok", 0, 0)
    assert "unhandled error" not in (server["logs"] / "serve.log").read_text()
