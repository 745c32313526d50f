"""`stream: true` on `videor1 serve`: OpenAI chat-completion chunks over server-sent events.

A real server subprocess with a tiny model, spoken to with raw httpx (the SSE framing itself) and with the
official `openai` client: the streamed text equals the non-streaming greedy answer, streams share batches
with plain requests, a client that leaves mid-stream has its generation stopped, and requests the server
cannot honour are refused with a JSON 4xx before any stream starts. The stream's decoder and error event
are checked in-process too.
"""

import asyncio
import json
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from tests.test_serve import (
    API_KEY,
    LONG_TOKENS,
    REQUEST_S,
    call,
    chat,
    health,
    image_part,
    open_request,
    running_server,
    video_part,
    wait_for,
)
from tests.test_serve_worker import tiny  # noqa: F401  (a fixture)
from videor1.models.generation import GeneratedText, SamplingParams
from videor1.serve.errors import RequestError
from videor1.serve.stream import IncrementalDecoder, TokenFeed, chunk_events
from videor1.serve.worker import GenerationWorker, Job, _RowStop

TOKENS = 8


@pytest.fixture(scope="module")
def server(tiny_models, synth_root, tmp_path_factory):
    """The server of this module's tests."""
    with running_server(tiny_models(), synth_root, tmp_path_factory.mktemp("stream"),
                        "--default-max-tokens", str(TOKENS)) as running:
        yield running


@pytest.fixture(scope="module")
def greedy(server):
    """The non-streaming greedy answer to the video request every streaming test sends."""
    status, reply = call(server, body=chat(video_part(server["root"]), max_tokens=TOKENS, temperature=0))
    assert status == 200, reply
    return reply


def video_request(server, **fields):
    return chat(video_part(server["root"]), max_tokens=TOKENS, temperature=0, **fields)


def sse(server, body, *, key=API_KEY) -> tuple[httpx.Response, list]:
    """The response and its parsed `data:` events (JSON, or the string "[DONE]") of one streamed request."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(timeout=REQUEST_S) as client:
        with client.stream("POST", server["url"] + "/v1/chat/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                return response, []
            events, frame = [], []
            for line in response.iter_lines():
                if line:
                    frame.append(line)
                    continue
                # one event per blank-line-terminated frame, each a single data line
                assert len(frame) == 1 and frame[0].startswith("data: "), frame
                data = frame[0][len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
                frame = []
            assert not frame, frame
    return response, events


def content(events) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e != "[DONE]" and e["choices"])


def test_a_stream_is_role_content_finish_usage_done_and_equals_the_plain_answer(server, greedy):
    response, events = sse(server, video_request(server, stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    *chunks, finish, usage, done = events
    role, deltas = chunks[0], chunks[1:]
    assert done == "[DONE]"
    assert role["object"] == "chat.completion.chunk" and role["model"] == "tiny" and role["created"] > 0
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}]
    assert len(deltas) >= 2 and all(set(c["choices"][0]["delta"]) == {"content"} for c in deltas)
    assert all(c["choices"][0]["finish_reason"] is None and c["choices"][0]["delta"]["content"] for c in deltas)
    assert finish["choices"][0]["delta"] == {} and finish["choices"][0]["finish_reason"] == \
        greedy["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == greedy["usage"]
    assert len({e["id"] for e in events[:-1]}) == 1 and role["id"].startswith("chatcmpl-")
    assert content(events) == greedy["choices"][0]["message"]["content"]
    # without include_usage: no usage chunk, no usage key
    _, plain = sse(server, video_request(server, stream=True))
    assert plain[-1] == "[DONE]" and plain[-2]["choices"][0]["finish_reason"] and "usage" not in plain[-2]
    assert content(plain) == content(events)


def test_the_openai_client_streams_and_completes(server, greedy):
    client = openai.OpenAI(base_url=server["url"] + "/v1", api_key=API_KEY, max_retries=0, timeout=REQUEST_S)
    request = video_request(server)
    stream = client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy["choices"][0]["message"]["content"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == greedy["choices"][0]["finish_reason"]
    assert chunks[-1].usage.completion_tokens == greedy["usage"]["completion_tokens"]
    completion = client.chat.completions.create(**request)
    assert completion.choices[0].message.content == text
    assert completion.usage.prompt_tokens == greedy["usage"]["prompt_tokens"]
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        client.chat.completions.create(**request, stream=True, n=2)


def test_a_stream_and_a_plain_request_share_a_batch(server, greedy):
    root, before = server["root"], health(server)
    # a long request holds the model worker so that the pair queues up and is drained as one batch
    blocker = open_request(server, chat(image_part(root), max_tokens=LONG_TOKENS, temperature=0))
    wait_for(server, lambda now: now["running"] == 1)
    with ThreadPoolExecutor(2) as pool:
        streamed = pool.submit(sse, server, video_request(server, stream=True))
        plain = pool.submit(call, server, body=video_request(server))
        wait_for(server, lambda now: now["queued"] == 2)
        blocker.close()
        (response, events), (status, reply) = streamed.result(REQUEST_S), plain.result(REQUEST_S)
    assert response.status_code == 200 and events[-1] == "[DONE]" and status == 200
    assert content(events) == reply["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]
    after = wait_for(server, lambda now: now["running"] == 0)
    # the blocker's stopped batch, then one batch of the stream and the plain request
    assert (after["batches"] - before["batches"], after["requests"] - before["requests"]) == (2, 2)
    assert after["cancelled"] - before["cancelled"] == 1


def test_a_client_that_leaves_mid_stream_stops_its_generation(server):
    before = health(server)
    body = chat(image_part(server["root"]), max_tokens=LONG_TOKENS, temperature=0, stream=True)
    with httpx.Client(timeout=REQUEST_S) as client:
        with client.stream("POST", server["url"] + "/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {API_KEY}"}) as response:
            assert response.status_code == 200
            received = 0
            for line in response.iter_lines():
                received += '"content"' in line
                if received >= 3:
                    break  # leaving the block closes the connection mid-stream
    after = wait_for(server, lambda now: now["cancelled"] == before["cancelled"] + 1 and now["running"] == 0)
    assert after["requests"] == before["requests"]  # stopped, not answered
    stopped = re.findall(r"client left after (\d+) of (\d+) tokens", (server["logs"] / "serve.log").read_text())
    assert stopped and int(stopped[-1][1]) == LONG_TOKENS and int(stopped[-1][0]) < LONG_TOKENS // 2
    _, events = sse(server, chat(image_part(server["root"]), max_tokens=3, stream=True))
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"]  # the server still serves


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"n": 2}, 400, "n must be 1 (with stream=true too)"),
    ({"stop": ["\n"]}, 400, "stop sequences are not supported (with stream=true too)"),
    ({"stop": "x"}, 400, "stop sequences"),
    ({"stream_options": {"include_usage": "yes"}}, 400, "include_usage"),
    ({"model": "other"}, 404, "not served here"),
    ({"max_tokens": 10**6}, 400, "limit"),
])
def test_refused_streams_are_json_errors_not_streams(server, fields, status, words):
    response, events = sse(server, video_request(server, stream=True) | fields)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    assert words in response.json()["error"]["message"] and not events


def test_errors_before_generation_are_json_for_streams_too(server):
    bad_media = chat({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, stream=True)
    huge = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "word " * 60_000}]}
    for body, key, status, words in ((bad_media, API_KEY, 400, "cannot be used"), (huge, API_KEY, 400, "limit"),
                                     (video_request(server, stream=True), "wrong", 401, "API key")):
        response, events = sse(server, body, key=key)
        assert (response.status_code, response.headers["content-type"]) == (status, "application/json")
        assert words in response.json()["error"]["message"] and not events


class ByteTokenizer:
    """Token ids are UTF-8 bytes: a character of several bytes spans several tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_the_decoder_never_sends_half_a_character():
    text = "héllo 日本語 ✓!"
    decoder = IncrementalDecoder(ByteTokenizer())
    deltas = [decoder.add([byte]) for byte in text.encode()]
    assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas)
    assert deltas[1] == "" and deltas[2] == "é"  # held back until the character's second byte
    assert decoder.finish(text) == ""
    ended = IncrementalDecoder(ByteTokenizer())
    assert ended.add(list(b"ok") + [0xE6]) == "ok"
    assert ended.finish("ok\ufffd") == "\ufffd"  # a broken last character is sent as the model made it


def test_an_error_after_the_first_tokens_ends_the_stream_with_an_error_event():
    async def events(fail: bool) -> list[str]:
        feed, future = TokenFeed(asyncio.get_running_loop()), Future()
        feed.end_with(future)
        feed.push(list(b"ab"))
        if fail:
            future.set_exception(RequestError(500, "generation failed: out of memory"))
        else:
            future.set_result(GeneratedText("abc", 5, 3, "length"))
        first = await feed.queue.get()
        return [e async for e in chunk_events(feed, first, future, ByteTokenizer(), model="m", include_usage=True)]

    failed = asyncio.run(events(fail=True))
    assert failed[-1] == "data: [DONE]\n\n"
    error = json.loads(failed[-2][len("data: "):])
    assert error == {"error": {"message": "generation failed: out of memory", "type": "server_error", "param": None,
                               "code": 500}}
    assert json.loads(failed[1][len("data: "):])["choices"][0]["delta"] == {"content": "ab"}
    done = [json.loads(e[len("data: "):]) for e in asyncio.run(events(fail=False))[:-1]]
    assert content(done) == "abc" and done[-2]["choices"][0]["finish_reason"] == "length"
    assert done[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def test_the_row_tap_hands_out_each_rows_tokens_through_its_eos_and_within_its_limit():
    eos, got = 9, {0: [], 1: [], 2: []}
    jobs = [Job("", [], SamplingParams(limit, 0.0), Future(), on_tokens=got[i].extend if i != 2 else None)
            for i, limit in enumerate((5, 2, 5))]
    rows = _RowStop(jobs, prompt_length=2, eos_ids=[eos])
    steps = [[5, 7, 5], [9, 8, 6], [0, 3, 6]]  # row 0 ends with EOS (then HF pads), row 1 at its limit of 2
    ids = torch.tensor([[1, 2]] * 3)
    for step in steps:
        ids = torch.cat([ids, torch.tensor(step)[:, None]], 1)
        done = rows(ids, None)
    assert got == {0: [5, 9], 1: [7, 8], 2: []} and done.tolist() == [False, True, False]
    assert [job.streamed for job in jobs] == [2, 2, 0]


def test_the_worker_streams_some_rows_of_a_mixed_batch(tiny):  # noqa: F811
    worker = GenerationWorker(tiny["model"], tiny["processor"], max_batch_size=8, batch_wait_s=0, max_queue=16,
                              max_prompt_tokens=10_000)
    tokens: list[list[int]] = [[], []]
    jobs = [Job(*tiny["video"], SamplingParams(limit, 0.0), Future(), on_tokens=on)
            for limit, on in ((6, tokens[0].extend), (3, tokens[1].extend), (5, None))]
    for job in jobs:
        worker.enqueue(job)  # before start: one drain takes all three
    worker.start()
    try:
        results = [job.future.result(REQUEST_S) for job in jobs]
    finally:
        worker.stop(REQUEST_S)
    assert worker.batches == 1 and worker.requests == 3
    decode = tiny["processor"].tokenizer.decode
    for ids, result in zip(tokens, results, strict=False):
        assert len(ids) == result.completion_tokens and decode(ids, skip_special_tokens=True) == result.text


def test_the_server_still_serves(server):
    started = time.monotonic()
    status, reply = call(server, body=video_request(server) | {"max_tokens": 3})
    assert status == 200 and reply["usage"]["completion_tokens"] <= 3 and time.monotonic() - started < REQUEST_S
    assert " 500 " not in (server["logs"] / "serve.log").read_text()
