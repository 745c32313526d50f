"""The try-it page of `videor1 serve` (`GET /`) and its API routes, with and without a browser.

Without a browser (the app in-process, no model loaded): the page and its files are public, embed no key and
load nothing from elsewhere; `/v1/videor1/info` and `/v1/videor1/frames` need the key, and the frames are
exactly those a chat request's media decodes to. With Debian's headless chromium (driven by playwright, no
browser download) against a real server with a tiny model: enter the key, upload a clip, see its frames and
timestamps, ask, read the streamed answer, and on a 375 px wide screen nothing scrolls sideways. A screenshot
goes under tmp_path and, when VIDEOR1_SCREENSHOT is set, to that path too.
"""

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.test_serve import API_KEY, running_server
from tests.test_serve_messages import SMALL
from videor1.data.media import load_video
from videor1.serve.app import ServerState, create_app
from videor1.serve.config import ServeConfig

CHROMIUM = "/usr/bin/chromium"
# the sandbox needs privileges a container lacks; the rest keeps chromium from calling home on a closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FACTOR = 28  # Qwen2.5-VL's pixel multiple, the tiny model's family
UI_TIMEOUT_MS = 60_000
PHONE = {"width": 375, "height": 800}


class _IdleWorker:
    """Stands in for the model worker: these routes never generate."""

    alive = True

    def stop(self) -> None:
        pass


@pytest.fixture
def client(synth_root):
    """The app in-process with a key, an allowed media directory and small media settings."""
    cfg = ServeConfig(model="tiny", api_key=API_KEY, allowed_media_dir=str(synth_root), media=SMALL)
    state = ServerState(cfg=cfg, worker=_IdleWorker(), processor=None, factor=FACTOR, name="tiny")
    with TestClient(create_app(state)) as test_client:
        yield test_client


def first_video(root: Path) -> Path:
    return sorted((root / "videos").glob("*.mp4"))[0]


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_page_is_public_and_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert API_KEY not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path, kind in (("/static/page.js", "text/javascript"), ("/static/page.css", "text/css")):
        asset = client.get(path)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert API_KEY not in asset.text
        assert not re.search(r"https?://", asset.text), f"{path} refers to another site"
    assert not re.search(r"https?://", page.text)
    assert client.get("/static/../app.py").status_code == 404


def test_info_needs_the_key_and_describes_the_server(client):
    assert client.get("/v1/videor1/info").status_code == 401
    info = client.get("/v1/videor1/info", headers=AUTH).json()
    assert info["model"] == "tiny" and info["auth_required"] is True and info["local_media"] is True
    assert info["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 1024, "max_tokens_limit": 8192}
    assert info["media"]["max_frames"] == SMALL.max_frames
    assert "multiple choice" in info["prompts"]["type_templates"]
    assert "{Question}" in info["prompts"]["question_template"]
    assert "synth" not in str(info), "the allowed directory is the server's business"


def test_frames_need_the_key_and_match_the_media_settings(client, synth_root):
    video = first_video(synth_root)
    part = {"type": "video_url", "video_url": {"url": data_url(video, "video/mp4")}}
    assert client.post("/v1/videor1/frames", json=part).status_code == 401
    reply = client.post("/v1/videor1/frames", json=part, headers=AUTH)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = load_video(video, SMALL.sampling(), SMALL.video_budget(FACTOR))
    assert body["kind"] == "video" and body["count"] == len(body["frames"]) == expected.frames.shape[0] >= 2
    assert [f["timestamp"] for f in body["frames"]] == [round(t, 3) for t in expected.timestamps]
    stamps = [f["timestamp"] for f in body["frames"]]
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))
    assert (body["height"], body["width"]) == tuple(expected.frames.shape[2:])
    for frame in body["frames"]:
        head, _, payload = frame["image"].partition(",")
        assert head == "data:image/jpeg;base64"
        assert Image.open(io.BytesIO(base64.b64decode(payload))).format == "JPEG"

    # a path under the allowed directory decodes the same; an image is one frame without a timestamp
    by_path = client.post("/v1/videor1/frames", json={"type": "video_url", "video_url": str(video)}, headers=AUTH)
    assert [f["timestamp"] for f in by_path.json()["frames"]] == stamps
    image = sorted((synth_root / "images").iterdir())[0]
    image_part = {"type": "image_url", "image_url": {"url": data_url(image, "image/png")}}
    one = client.post("/v1/videor1/frames", json=image_part, headers=AUTH).json()
    assert one["kind"] == "image" and one["count"] == 1 and one["frames"][0]["timestamp"] is None


@pytest.mark.parametrize("part", [
    {"type": "text", "text": "hi"}, {"type": "video_url"}, {"type": "video_url", "video_url": {"url": "/etc/passwd"}},
    {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, ["video_url"],
])
def test_frames_refuse_bad_parts_with_a_4xx(client, part):
    reply = client.post("/v1/videor1/frames", json=part, headers=AUTH)
    assert 400 <= reply.status_code < 500 and reply.json()["error"]["message"]


# ---- in a browser


def _playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser at {CHROMIUM}: install Debian's chromium: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -c constraints.txt -e '.[dev]'")
    return sync_playwright


@pytest.fixture(scope="module")
def page_server(tiny_models, synth_root, tmp_path_factory):
    """A real server with a key and a tiny model whose answers are a few tokens long."""
    options = ("--default-max-tokens", "8", "--max-tokens-limit", "64")
    with running_server(tiny_models(), synth_root, tmp_path_factory.mktemp("page"), *options) as running:
        yield running


SPLIT_CHECK = """() => [
    '<think>let me think</think> <answer>B</answer> ', '<think>still thinking', 'no opening tag</think><answer>3.14',
    '<answer>first</answer><answer>last</answer>',
].map(splitOutput)"""

# three events, cut mid-line, mid-UTF-8 character and between "\r\n" pairs, then [DONE] and a stray event
SSE_CHECK = """async () => {
    const bytes = new TextEncoder().encode(
        'data: {"choices":[{"delta":{"content":"Hel"}}]}\\r\\n\\r\\n: a comment\\n\\n' +
        'data: {"choices":[{"delta":{"content":"lo \u00e9\\\\n"}}]}\\n\\n' +
        'event: message\\ndata: {"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]}\\n\\n' +
        'data: [DONE]\\n\\ndata: {"choices":[{"delta":{"content":"after"}}]}\\n\\n');
    const body = new ReadableStream({start(controller) {
        for (let i = 0; i < bytes.length; i += 7) controller.enqueue(bytes.slice(i, i + 7));
        controller.close();
    }});
    const pieces = [];
    for await (const chunk of sseEvents(new Response(body))) pieces.push(chunk.choices[0].delta.content);
    return pieces;
}"""


def _unlabelled_controls(page) -> list[str]:
    """Form controls that assistive technology could not name."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !el.closest('[hidden]'))
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                        && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
        .map((el) => el.outerHTML)""")


@pytest.mark.slow
def test_page_in_a_browser(page_server, synth_root, tmp_path):
    sync_playwright = _playwright()
    base = page_server["url"]
    video = first_video(synth_root)
    outside: list[str] = []
    console_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1300})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
            # a script error or a content-security-policy violation shows up as a console error
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))
            page.goto(base + "/")

            # the server has a key: the page asks for it, then shows the model and its defaults
            page.get_by_role("textbox", name="API key").fill(API_KEY)
            page.get_by_role("textbox", name="API key").press("Enter")
            page.wait_for_function("() => document.getElementById('server-line').textContent.includes('Model: tiny')")
            assert page.evaluate("sessionStorage.getItem('videor1.apiKey')") == API_KEY
            assert page.get_by_label("max_tokens").input_value() == "8"

            # a real clip: its sampled frames appear as thumbnails with increasing timestamps
            page.get_by_label("Upload a video or image").set_input_files(str(video))
            page.wait_for_selector("#frames[data-count]")
            stamps = page.eval_on_selector_all("#frames li", "els => els.map(e => Number(e.dataset.timestamp))")
            captions = page.eval_on_selector_all("#frames figcaption", "els => els.map(e => e.textContent)")
            assert 2 <= len(stamps) <= 4 and all(a < b for a, b in zip(stamps, stamps[1:], strict=False))
            assert captions == [f"{t:.2f} s" for t in stamps]
            assert page.eval_on_selector_all("#frames img", "els => els.every(e => e.complete && e.naturalWidth > 0)")

            # a multiple-choice question with Video-R1's instruction, sent with Enter and streamed
            page.get_by_label("Problem type").select_option("multiple choice")
            page.get_by_label("Options, one per line").fill("A. a red square\nB. a blue circle")
            page.get_by_label("max_tokens").fill("12")
            page.locator("#question").fill("What moves in the video?")
            preview = page.text_content("#prompt-preview")
            assert preview.startswith("What moves in the video?Options:\nA. a red square\nB. a blue circle\n")
            assert preview.endswith("single option letter (e.g., A, B, C, D, etc.) within the <answer> </answer> tags.")
            page.locator("#question").press("Enter")
            turn = page.locator("#history .turn").last
            page.wait_for_function("() => ['done', 'error', 'stopped'].includes("
                                   "document.querySelector('#history .turn:last-child').dataset.state)")
            error = page.text_content("#error")
            assert turn.get_attribute("data-state") == "done", error
            assert turn.get_attribute("data-transport") == "sse", "the answer was not streamed"
            assert int(turn.get_attribute("data-chunks")) >= 1, "no streamed text arrived"
            assert turn.locator("details.thinking summary").count() == 1
            assert turn.locator(".answer").count() == 1 and turn.locator(".output[aria-live=polite]").count() == 1
            assert turn.locator(".raw-text").text_content() != ""
            meta = turn.locator(".meta").text_content()
            assert "tiny" in meta and "temperature 1" in meta and "max_tokens 12" in meta and "finish:" in meta
            assert turn.locator(".question").text_content().startswith("What moves in the video?")
            assert _unlabelled_controls(page) == []

            # the page's own parsers on crafted input: think/answer split and SSE events cut anywhere
            assert page.evaluate(SPLIT_CHECK) == [
                {"thinking": "let me think", "answer": "B", "outside": "  "},
                {"thinking": "still thinking", "answer": None, "outside": ""},
                {"thinking": "no opening tag", "answer": "3.14", "outside": ""},
                {"thinking": None, "answer": "last", "outside": "<answer>first</answer>"},
            ]
            assert page.evaluate(SSE_CHECK) == ["Hel", "lo \u00e9\n", "x"]

            # the tiny model's random tokens carry no <think>/<answer> tags; a trained model's do. The same page
            # reading a scripted stream of that shape (the route answered in the browser, in OpenAI chunks cut
            # mid-tag) shows the reasoning block and the answer apart
            scripted = ["<thi", "nk>The square starts on the left ", "and ends on the right, ",
                        "so it moves right.</think>", "<answer>", "A", "</answer>"]
            body = "".join(f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n"
                           for piece in scripted) + "data: [DONE]\n\n"
            page.route("**/v1/chat/completions", lambda route: route.fulfill(
                status=200, headers={"content-type": "text/event-stream"}, body=body))
            page.locator("#question").fill("Which way does the square move?")
            page.locator("#question").press("Enter")
            page.wait_for_function("() => document.querySelectorAll('#history .turn').length === 2 && "
                                   "document.querySelector('#history .turn:last-child').dataset.state === 'done'")
            reasoned = page.locator("#history .turn").last
            assert reasoned.locator(".answer").text_content().strip().endswith("A")
            thinking = reasoned.locator("details.thinking")
            if thinking.get_attribute("open") is None:
                thinking.locator("summary").click()
            assert "so it moves right." in thinking.text_content()
            page.unroute("**/v1/chat/completions")

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("VIDEOR1_SCREENSHOT"):
                Path(os.environ["VIDEOR1_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, os.environ["VIDEOR1_SCREENSHOT"])

            # a phone: everything fits in 375 px, frames and streamed answer included
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(100)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        finally:
            browser.close()
    assert outside == [], "the page fetched something from elsewhere"
    # the page's own 401 before the key is entered is the only error the browser reports
    assert [e for e in console_errors if "401" not in e] == []
