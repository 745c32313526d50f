"""Odd and hostile media: every failure is a MediaError naming the file, and decoding work is bounded.

The odd files are real mp4s written by `write_video` and byte-patched; each test first shows that PyAV
itself raises on them (UnicodeDecodeError, a stream without a decoder), so a test cannot pass because
the file went stale. The long clip is 3,000 16x16 frames after one keyframe: small to write, but every
sampled frame past the first needs every packet before it decoded, like the 100k-frame file that held
the server for 30-47 s.
"""

import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from videor1.config import MediaConfig
from videor1.data import media
from videor1.data.frames import load_clip, load_frame_folder
from videor1.data.media import (
    DecodeBudgetExceeded,
    DecodeCancelled,
    DecodeLimits,
    MediaError,
    MediaTooLarge,
    load_image,
    load_video,
    probe_video,
    write_video,
)
from videor1.data.sampling import FrameSampling, PixelBudget
from videor1.data.schema import parse_row
from videor1.data.validate import check_media
from videor1.models.inputs import load_sample_media
from videor1.rl.data import PromptStream
from videor1.serve.errors import RequestError
from videor1.serve.messages import decode_refs, parse_messages
from videor1.serve.worker import CLIENT_LEFT

from .rows import good_row

BUDGET = PixelBudget(min_pixels=28 * 28, max_pixels=56 * 56, factor=28)
SAMPLING = FrameSampling(nframes=4)
SERVER = MediaConfig(max_frames=4, nframes=4, video_min_pixels=784, video_max_pixels=3136,
                     image_min_pixels=784, image_max_pixels=3136)
LONG_FRAMES, LONG_FPS = 3000, 30
NO_DECODER = "unreadable: no decoder for its video codec"


def clip(n: int = 24, size: int = 32) -> np.ndarray:
    """n frames [n, size, size, 3] uint8 whose left half brightens frame by frame (frames differ)."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i, :, : size // 2] = 10 * i % 256
    return frames


def patched(source: Path, target: Path, old: bytes, new: bytes, *, after: bytes = b"") -> Path:
    """`source`'s bytes with the first `old` after `after` replaced by `new` (same length: atom sizes hold)."""
    assert len(old) == len(new)
    data = source.read_bytes()
    at = data.index(old, data.index(after) if after else 0)
    target.write_bytes(data[:at] + new + data[at + len(old):])
    return target


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A good mp4 and two odd ones made from it: a Latin-1 metadata tag, an unknown stsd fourcc."""
    root = tmp_path_factory.mktemp("odd")
    good = root / "good.mp4"
    write_video(good, clip(), 12)
    with av.open(str(good)) as container:
        # FFmpeg tags its files with encoder=Lavf<version> (udta/meta/ilst/©too); old cameras wrote Latin-1
        # in such tags: é in Latin-1 is the byte 0xe9, which cannot start a UTF-8 continuation
        assert container.metadata["encoder"].startswith("Lavf")
    latin1 = patched(good, root / "latin1_tag.mp4", b"Lavf", "Lévf".encode("latin-1"))
    # the one sample entry of the video track's sample description: avc1 -> a fourcc nobody decodes
    fourcc = patched(good, root / "unknown_fourcc.mp4", b"avc1", b"zzzz", after=b"stsd")
    return {"good": good, "latin1": latin1, "fourcc": fourcc, "root": root}


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    frames = np.zeros((LONG_FRAMES, 16, 16, 3), np.uint8)
    frames[:, :, :8] = 200
    write_video(path, frames, LONG_FPS, gop=LONG_FRAMES)  # one keyframe: no seek can skip the decoding
    return path


# ------------------------------------------------------------------------------------------------ odd files


def test_the_odd_files_make_pyav_itself_raise(odd):
    # what `_open` / `_video_stream` met before: these escaped as UnicodeDecodeError and AttributeError
    with pytest.raises(UnicodeDecodeError):
        av.open(str(odd["latin1"]))
    with av.open(str(odd["fourcc"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context is None
        with pytest.raises(AttributeError):
            stream.codec_context.width  # noqa: B018 - the old size read


def test_a_video_whose_metadata_is_not_utf8_decodes_as_the_same_video(odd):
    # PyAV reads tags as UTF-8 by default and refused the file (above); no tag is used, so it plays as it is
    good = load_video(odd["good"], SAMPLING, BUDGET)
    latin1 = load_video(odd["latin1"], SAMPLING, BUDGET)
    assert torch.equal(latin1.frames, good.frames) and latin1.frame_indices == good.frame_indices
    assert probe_video(odd["latin1"]) == probe_video(odd["good"])


@pytest.mark.parametrize(("name", "reason"), [("fourcc", NO_DECODER)])
def test_odd_mp4s_are_media_errors_naming_the_file(odd, name, reason):
    path = odd[name]
    for attempt in (lambda: probe_video(path), lambda: load_video(path, SAMPLING, BUDGET)):
        with pytest.raises(MediaError) as caught:
            attempt()
        assert type(caught.value) is MediaError
        assert (caught.value.path, caught.value.reason) == (path, reason)
        assert str(caught.value) == f"{path}: {reason}"
    with path.open("rb") as file:  # read through a handle (as the server does), still named by its path
        with pytest.raises(MediaError) as caught:
            load_video(path, SAMPLING, BUDGET, file=file)
    assert (caught.value.path, caught.value.reason) == (path, reason)
    assert load_video(odd["good"], SAMPLING, BUDGET).frames.shape == (4, 3, 28, 28)  # the source file is fine


def test_odd_files_are_skipped_and_counted_in_training_and_named_by_validate(odd):
    rows = [good_row(problem_id=i, path=name) for i, name in enumerate(
        ("latin1_tag.mp4", "unknown_fourcc.mp4", "good.mp4"))]
    samples = [parse_row(row, row_number=i + 1, media_root=odd["root"]) for i, row in enumerate(rows)]
    failures: list[MediaError] = []
    stream = PromptStream(
        samples, lambda sample: load_sample_media(sample, SERVER, 28), seed=0, shuffle=False,
        max_failure_fraction=1.0, on_failure=lambda sample, error: failures.append(error),
    )
    first, second = stream.next_batch(2)  # the Latin-1-tagged video is a good one; the unknown codec is not
    assert (first.sample.problem_id, second.sample.problem_id) == (0, 2)
    assert first.media.video.frames.shape[0] == 4 and second.media.video.frames.shape[0] == 4
    assert (stream.attempted, stream.failed) == (3, 1)
    assert [(e.path, e.reason) for e in failures] == [(odd["fourcc"], NO_DECODER)]

    problems, checked = check_media(samples, SERVER)  # `videor1 data validate --check-media`
    assert checked == 3
    assert [str(problem) for problem in problems] == [f"{odd['fourcc']}: {NO_DECODER} (used by row 2)"]


def test_an_odd_local_file_is_a_400_naming_what_the_client_sent(odd):
    refs = parse_messages(
        [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "unknown_fourcc.mp4"}}]}],
        allowed_dir=odd["root"], max_media=1,
    ).media
    with pytest.raises(RequestError) as caught:
        decode_refs(refs, SERVER, 28)
    assert caught.value.status == 400
    assert caught.value.message == f"video 1 of the request cannot be used: {NO_DECODER}"


def test_whatever_pil_or_pyav_raise_becomes_a_media_error_but_memory_and_interrupts_pass(tmp_path, monkeypatch):
    image, video = tmp_path / "a.png", tmp_path / "a.mp4"
    Image.new("RGB", (40, 30), (9, 9, 9)).save(image)
    write_video(video, clip(4, 16), 4)

    def broken_transpose(opened):
        raise KeyError(274)  # older PIL raised KeyError on some EXIF orientation tags

    monkeypatch.setattr(ImageOps, "exif_transpose", broken_transpose)
    with pytest.raises(MediaError) as caught:
        load_image(image, BUDGET)
    assert (caught.value.path, caught.value.reason) == (image, "unreadable: KeyError: 274")
    monkeypatch.undo()

    for escaping in (MemoryError, KeyboardInterrupt):
        def raising(*args, error=escaping, **kwargs):
            raise error()

        with monkeypatch.context() as patch:
            patch.setattr(av, "open", raising)
            with pytest.raises(escaping):
                load_video(video, SAMPLING, BUDGET)
        with monkeypatch.context() as patch:
            patch.setattr(Image, "open", raising)
            with pytest.raises(escaping):
                load_image(image, BUDGET)
    # MediaTooLarge raised inside the guarded region stays itself, with its limit
    with pytest.raises(MediaTooLarge) as too_large:
        load_image(image, PixelBudget(min_pixels=784, max_pixels=3136, max_decode_pixels=1000))
    assert too_large.value.limit == 1000


# ----------------------------------------------------------------------------------------------- decode limits


def test_the_packet_limit_stops_a_long_decode_and_names_the_setting(long_clip):
    video = load_video(long_clip, SAMPLING, BUDGET)  # without limits the clip decodes: it is a valid file
    assert video.frame_indices == [0, 1000, 1999, 2999]
    limits = DecodeLimits(max_packets=500, packets_setting="serve max_decode_packets")
    with pytest.raises(DecodeBudgetExceeded) as caught:
        load_video(long_clip, SAMPLING, BUDGET, limits=limits)
    assert caught.value.path == long_clip and caught.value.setting == "serve max_decode_packets"
    assert caught.value.reason == "decoding stopped after 500 packets (serve max_decode_packets)"
    with pytest.raises(DecodeBudgetExceeded, match=r"after 1,001 packets \(max_packets\)$"):
        load_video(long_clip, SAMPLING, BUDGET, limits=DecodeLimits(max_packets=1001))
    # the whole clip is its 3,000 packets and the demuxer's closing empty one, which flushes the decoder
    enough = DecodeLimits(max_packets=LONG_FRAMES + 1)
    assert load_video(long_clip, SAMPLING, BUDGET, limits=enough).frame_indices == video.frame_indices
    with pytest.raises(DecodeBudgetExceeded):
        load_video(long_clip, SAMPLING, BUDGET, limits=DecodeLimits(max_packets=LONG_FRAMES - 1))


def test_cancelled_is_polled_while_decoding_and_stops_it(long_clip):
    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) == 3  # the client "leaves" at the third poll

    with pytest.raises(DecodeCancelled) as caught:
        load_video(long_clip, SAMPLING, BUDGET, limits=DecodeLimits(cancelled=cancelled))
    # polled once before opening, then every _POLL_EVERY_PACKETS packets: the third poll, and no other after it
    every = media._POLL_EVERY_PACKETS
    assert len(calls) == 3
    assert (caught.value.path, caught.value.reason) == (long_clip, f"decoding cancelled after {2 * every} packets")


def test_the_time_limit_stops_a_long_decode(long_clip, monkeypatch):
    class Clock:
        """time.monotonic advancing 0.1 s per reading: the decode 'takes' 0.1 s per poll."""

        now = 0.0

        def monotonic(self) -> float:
            self.now += 0.1
            return self.now

    monkeypatch.setattr(media, "time", Clock())
    limits = DecodeLimits(max_seconds=1.0, seconds_setting="serve max_decode_seconds")
    with pytest.raises(DecodeBudgetExceeded) as caught:
        load_video(long_clip, SAMPLING, BUDGET, limits=limits)
    # start 0.1; polls read 0.2, 0.3, ... so the 11th poll is the first past 1 s, 1.1 s after the start
    assert caught.value.reason == "decoding stopped after 1.10 s, over the limit of 1 s (serve max_decode_seconds)"
    assert caught.value.setting == "serve max_decode_seconds"


def test_generous_limits_decode_exactly_what_no_limits_decode(tmp_path):
    path = tmp_path / "seeks.mp4"
    write_video(path, clip(120, 32), 12, gop=6)  # keyframes every 6 frames: sampling seeks between them
    sampling = FrameSampling(nframes=8)
    free = load_video(path, sampling, BUDGET)
    bounded = load_video(path, sampling, BUDGET, limits=DecodeLimits(
        max_packets=10**6, max_seconds=3600.0, cancelled=lambda: False))
    assert torch.equal(bounded.frames, free.frames)
    assert (bounded.frame_indices, bounded.timestamps, bounded.sample_fps) == (
        free.frame_indices, free.timestamps, free.sample_fps)
    assert len(set(free.frames[:, 0, 0, 0].tolist())) > 1  # the frames differ: equality means the same frames


def test_images_and_frame_folders_check_cancelled_before_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(folder / f"{i:05d}.png")
    polls = []

    def after_two() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(DecodeCancelled) as caught:
        load_frame_folder(folder, SAMPLING, BUDGET, fps=3.0, limits=DecodeLimits(cancelled=after_two))
    assert (caught.value.path, caught.value.reason) == (folder, "decoding cancelled")
    assert len(polls) == 3  # one poll per sampled frame: two frames decoded, the third refused
    with pytest.raises(DecodeCancelled):
        load_clip(folder, SAMPLING, BUDGET, frame_fps=3.0, limits=DecodeLimits(cancelled=lambda: True))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(DecodeCancelled) as image_caught:
        load_image(folder / "00000.png", BUDGET, limits=DecodeLimits(cancelled=lambda: True))
    assert image_caught.value.path == folder / "00000.png"


def test_limit_errors_survive_pickling_and_relabelling():
    budget = DecodeBudgetExceeded("a.mp4", "decoding stopped after 5 packets (serve max_decode_packets)",
                                  "serve max_decode_packets")
    cancelled = DecodeCancelled("a.mp4", "decoding cancelled")
    for error in (budget, cancelled):
        # DataLoader workers and the server's threads hand errors back pickled
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and (copy.path, copy.reason, str(copy)) == (
            error.path, error.reason, str(error))
    assert pickle.loads(pickle.dumps(budget)).setting == "serve max_decode_packets"
    relabelled = budget.relabel("<video data URL>", "other reason")
    assert type(relabelled) is DecodeBudgetExceeded and relabelled.setting == "serve max_decode_packets"
    assert str(relabelled) == "<video data URL>: other reason"


def test_limits_refuse_nonsense_naming_the_setting():
    with pytest.raises(ValueError, match="serve max_decode_packets must be >= 1, got 0"):
        DecodeLimits(max_packets=0, packets_setting="serve max_decode_packets")
    with pytest.raises(ValueError, match="max_seconds must be positive, got -1"):
        DecodeLimits(max_seconds=-1)


# ------------------------------------------------------------------------------------------------ serve


def _video_request(path: Path):
    return parse_messages(
        [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": path.name}}]}],
        allowed_dir=path.parent, max_media=1,
    ).media


def test_serve_answers_413_past_the_limits_and_499_once_cancelled(long_clip):
    refs = _video_request(long_clip)
    limits = DecodeLimits(max_packets=500, packets_setting="serve max_decode_packets")
    with pytest.raises(RequestError) as caught:
        decode_refs(refs, SERVER, 28, limits=limits)
    assert (caught.value.status, caught.value.message) == (
        413, "video 1 of the request cannot be used: decoding stopped after 500 packets (serve max_decode_packets)")

    with pytest.raises(RequestError) as left:
        decode_refs(refs, SERVER, 28, cancelled=lambda: True)
    assert (left.value.status, left.value.message) == (CLIENT_LEFT, "video 1 of the request: decoding cancelled")

    # `cancelled` and limits.cancelled combine: either one stops the decode; neither leaves it whole
    polled = []
    limits = DecodeLimits(max_packets=LONG_FRAMES + 1, cancelled=lambda: polled.append("limits") or False)
    with pytest.raises(RequestError) as both:
        decode_refs(refs, SERVER, 28, limits=limits, cancelled=lambda: polled.append("request") or True)
    assert both.value.status == CLIENT_LEFT and polled == ["limits", "request"]
    (decoded,) = decode_refs(refs, SERVER, 28, limits=limits, cancelled=lambda: False)
    assert decoded.video.frame_indices == [0, 1000, 1999, 2999]
