"""OpenAI messages -> chat-template messages and media references; request settings -> sampling parameters."""

import base64
import os

import pytest

from videor1.config import MediaConfig
from videor1.serve.app import ChatCompletionRequest, sampling_params
from videor1.serve.config import ServeConfig
from videor1.serve.errors import RequestError
from videor1.serve.messages import decode_refs, parse_messages

PNG_URL = "data:image/png;base64," + base64.b64encode(b"\x89PNG not really").decode()
SMALL = MediaConfig(max_frames=4, video_min_pixels=3136, video_max_pixels=3136, image_min_pixels=3136,
                    image_max_pixels=3136)


def user(*parts):
    return {"role": "user", "content": list(parts)}


def status_of(messages, allowed_dir=None, max_media=8):
    with pytest.raises(RequestError) as caught:
        parse_messages(messages, allowed_dir=allowed_dir, max_media=max_media)
    return caught.value.status, caught.value.message


def test_parts_become_placeholders_in_order_with_their_media():
    video = "data:video/mp4;base64," + base64.b64encode(b"mp4 bytes").decode()
    parsed = parse_messages([
        {"role": "system", "content": "be brief"},
        user({"type": "video_url", "video_url": {"url": video}}, {"type": "text", "text": "What moves?"},
             {"type": "image_url", "image_url": PNG_URL}),  # the url as a bare string is accepted too
        {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
    ], allowed_dir=None, max_media=8)
    assert parsed.messages == [
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A"}]},
    ]
    # the suffix comes from the bytes, not the MIME type: these are no mp4 or PNG, so they get none
    assert [(m.kind, m.data, m.suffix) for m in parsed.media] == [
        ("video", b"mp4 bytes", ""), ("image", b"\x89PNG not really", "")
    ]


def test_developer_role_is_a_system_message():
    parsed = parse_messages([{"role": "developer", "content": "x"}], allowed_dir=None, max_media=0)
    assert parsed.messages[0]["role"] == "system"


@pytest.mark.parametrize(("messages", "status", "words"), [
    ([], 400, "non-empty"),
    (["hello"], 400, "must be an object"),
    ([{"role": "tool", "content": "x"}], 400, "role 'tool'"),
    ([{"role": ["user"], "content": "x"}], 400, "not supported"),
    ([{"role": "user", "content": 3}], 400, "string or a list"),
    ([user({"type": "audio_url", "audio_url": {"url": "x"}})], 400, "unsupported content part type 'audio_url'"),
    ([user({"type": "text", "text": 5})], 400, "string 'text'"),
    ([user({"type": "image_url", "image_url": 5})], 400, "object with a url"),
    ([user({"type": "image_url", "image_url": {"url": ""}})], 400, "non-empty string"),
    ([user({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}})], 400, "remote URLs"),
    ([user({"type": "image_url", "image_url": {"url": "ftp://host/a.png"}})], 400, "scheme 'ftp'"),
    ([user({"type": "image_url", "image_url": {"url": "data:image/png,abc"}})], 400, "base64"),
    ([user({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}})], 400, "invalid base64"),
    ([user({"type": "image_url", "image_url": {"url": "data:image/png;base64,"}})], 400, "empty data URL"),
    ([user({"type": "video_url", "video_url": {"url": PNG_URL}})], 400, "video part but its data URL holds image/png"),
    ([user({"type": "image_url", "image_url": {"url": "/etc/hostname"}})], 403, "disabled"),
    ([{"role": "assistant", "content": [{"type": "image_url", "image_url": PNG_URL}]}], 400, "only user messages"),
    ([user(*[{"type": "image_url", "image_url": PNG_URL}] * 3)], 400, "more than 2"),
])
def test_bad_messages_get_a_4xx_naming_the_problem(messages, status, words):
    got_status, message = status_of(messages, max_media=2)
    assert got_status == status and words in message


def test_local_files_only_under_the_allowed_directory(tmp_path):
    allowed, outside = tmp_path / "media", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "a.png").write_bytes(b"x")
    (outside / "s.png").write_bytes(b"x")
    os.symlink(outside / "s.png", allowed / "link.png")

    def image(url):
        return [user({"type": "image_url", "image_url": {"url": url}})]

    for url in (str(allowed / "a.png"), (allowed / "a.png").as_uri(), "a.png", "./sub/../a.png"):
        ref = parse_messages(image(url), allowed_dir=allowed, max_media=1).media[0]
        assert ref.path == (allowed / "a.png").resolve() and ref.data is None
    for url in (str(outside / "s.png"), "../secret/s.png", (outside / "s.png").as_uri(), "link.png"):
        assert status_of(image(url), allowed)[0] == 403  # a symlink out of the directory is refused too
    assert status_of(image("missing.png"), allowed) == (
        400, "messages[0].content[0]: no such file 'missing.png' in the allowed media directory"
    )


def test_undecodable_media_is_a_400_that_hides_server_paths():
    refs = parse_messages([user({"type": "image_url", "image_url": PNG_URL})], allowed_dir=None, max_media=1).media
    with pytest.raises(RequestError) as caught:
        decode_refs(refs, SMALL, 28)
    assert caught.value.status == 400 and caught.value.message.startswith("image 1 of the request cannot be used")
    assert "/tmp" not in caught.value.message


def test_real_media_decodes_under_the_servers_budget(synth_root):
    video = next((synth_root / "videos").iterdir())
    url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    refs = parse_messages([user({"type": "video_url", "video_url": {"url": url}})], allowed_dir=None,
                          max_media=1).media
    (media,) = decode_refs(refs, SMALL, 28)
    assert tuple(media.video.frames.shape) == (4, 3, 56, 56)  # 4 frames of 56 x 56 = 3136 pixels
    assert media.video.sample_fps > 0


def request(**fields):
    return ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], **fields)


def test_sampling_params_follow_the_request_then_the_server_defaults():
    cfg = ServeConfig(model="m", default_max_tokens=64, max_tokens_limit=100, default_temperature=0.7)
    params = sampling_params(request(), cfg)
    assert (params.max_new_tokens, params.temperature, params.top_p, params.greedy) == (64, 0.7, 1.0, False)
    greedy = sampling_params(request(temperature=0, max_tokens=10, top_p=0.5), cfg)
    assert greedy.greedy and greedy.max_new_tokens == 10 and greedy.batch_key == (0.0, 1.0)  # + repetition penalty
    assert sampling_params(request(max_completion_tokens=20, max_tokens=10), cfg).max_new_tokens == 20


@pytest.mark.parametrize(("fields", "words"), [
    ({"stream": True, "n": 2}, "n must be 1 (with stream=true too)"), ({"n": 2}, "n must be 1"),
    ({"stop": ["\n"]}, "stop"), ({"stream": True, "stop": "x"}, "stop sequences are not supported (with stream"),
    ({"stream_options": {"include_usage": True}}, "only allowed with stream=true"),
    ({"tools": [{"type": "function"}]}, "tools"), ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"), ({"max_tokens": 101}, "exceeds this server's limit 100"),
])
def test_unsupported_settings_are_refused_not_ignored(fields, words):
    with pytest.raises(RequestError) as caught:
        sampling_params(request(**fields), ServeConfig(model="m", max_tokens_limit=100))
    assert caught.value.status == 400 and words in caught.value.message
