"""Media: frame sampling and smart_resize rules, and decoding real files written in tmp dirs.

The test clips carry a marker: frame i has a bright vertical bar at x = 2i, so a test reads back WHICH
frames were decoded, not just how many.
"""

import pickle
import wave

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from videor1.data import media
from videor1.data.media import MediaError, VideoInfo, load_image, load_video, probe_video, write_video
from videor1.data.sampling import FrameSampling, PixelBudget, frame_window, sample_frame_indices, smart_resize

FPS = 10
N_FRAMES = 30  # 3 s at 10 fps
SIZE = 64
# factor 32 (Qwen3-VL) keeps 64x64 frames at 64x64, so markers stay where they were drawn
KEEP = PixelBudget(min_pixels=32 * 32, max_pixels=SIZE * SIZE, factor=32)


def marker_frames(n: int = N_FRAMES, *, noise: int = 0) -> np.ndarray:
    """Frame i: black (or dim noise up to `noise`) with a white bar at x = 2 * (i % 32)."""
    frames = np.random.default_rng(0).integers(0, noise + 1, (n, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(n):
        x = 2 * (i % (SIZE // 2))
        frames[i, :, x : x + 2] = 255
    return frames


def markers(frames: torch.Tensor) -> list[int]:
    """The frame number drawn into each decoded frame [F, 3, H, W] (bar position // 2, scaled to 64 px)."""
    columns = frames.float().mean(dim=(1, 2))  # [F, W]
    scale = SIZE / frames.shape[-1]
    return [int(x * scale) // 2 for x in columns.argmax(dim=1).tolist()]


def remux(src, dst, **options) -> None:
    """Copy a file's packets into another container (e.g. mp4 with its index first: faststart)."""
    with av.open(str(src)) as inp, av.open(str(dst), mode="w", options=options) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)


def cut(src, dst, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    frames = marker_frames()
    paths = {}
    for name, gop in (("mp4", 12), ("mkv", 12), ("ts", 12), ("gop1.mp4", 1), ("gop250.mp4", 250)):
        paths[name] = root / f"clip.{name}"
        write_video(paths[name], frames, FPS, gop=gop)
    # a longer clip (10 s) for truncation; the noise spreads its bytes evenly over time, so cutting
    # the file at 60% cuts the stream at about 6 s
    paths["long.mp4"] = root / "long.mp4"
    write_video(paths["long.mp4"], marker_frames(100, noise=40), FPS, gop=10)
    return paths


# --------------------------------------------------------------------------------------------------
# sample_frame_indices: qwen-vl-utils' smart_nframes + linspace, by hand


@pytest.mark.parametrize(
    ("total", "video_fps", "kwargs", "expected"),
    [
        # 10 s at 2 fps = 20 frames, capped at max 16; linspace(0, 299, 16).round()
        (300, 30, {}, [0, 20, 40, 60, 80, 100, 120, 140, 159, 179, 199, 219, 239, 259, 279, 299]),
        # 1 s at 2 fps = 2 frames, raised to min 4: linspace(0, 29, 4) = 0, 9.67, 19.33, 29
        (30, 30, {}, [0, 10, 19, 29]),
        # 3 s at 2 fps = 6 frames: linspace(0, 89, 6) = 0, 17.8, 35.6, 53.4, 71.2, 89
        (90, 30, {}, [0, 18, 36, 53, 71, 89]),
        # 2.5 s at 2 fps = 5 frames, floored to even 4
        (75, 30, {}, [0, 25, 49, 74]),
        # odd min_frames 5 rounds up to 6
        (30, 30, {"min_frames": 5}, [0, 6, 12, 17, 23, 29]),
        # fps above the video's: 10/30 s * 60 = 20, capped by the 10 frames there are
        (10, 30, {"fps": 60}, list(range(10))),
        # odd max_frames 7 rounds down to 6
        (300, 30, {"max_frames": 7}, [0, 60, 120, 179, 239, 299]),
        # explicit nframes overrides fps and max: 6 frames of 10 s
        (300, 30, {"nframes": 6}, [0, 60, 120, 179, 239, 299]),
        # explicit odd nframes: Python's round(5 / 2) = 2 (half to even), so 4
        (300, 30, {"nframes": 5}, [0, 100, 199, 299]),
        # window 2-4 s: frames 60..120 (61 frames, 2.03 s -> 4 frames)
        (300, 30, {"start": 2.0, "end": 4.0}, [60, 80, 100, 120]),
        # start only: frames 270..299; 1 s -> 2, raised to min 4
        (300, 30, {"start": 9.0}, [270, 280, 289, 299]),
        # end past the clip is clamped to its last frame
        (90, 30, {"end": 99.0}, [0, 18, 36, 53, 71, 89]),
        # start = ceil(0.99 * 30) = 30, end = floor(2.01 * 30) = 60
        (300, 30, {"start": 0.99, "end": 2.01}, [30, 40, 50, 60]),
    ],
)
def test_sample_frame_indices(total, video_fps, kwargs, expected):
    assert sample_frame_indices(total, video_fps, FrameSampling(**kwargs)) == expected


@pytest.mark.parametrize("total", [2, 3, 5, 7, 30, 31, 61, 99, 1000, 9001])
@pytest.mark.parametrize("kwargs", [{}, {"fps": 1.0, "min_frames": 3, "max_frames": 9}, {"max_frames": 64}])
def test_frame_counts_are_even_and_within_the_clip(total, kwargs):
    indices = sample_frame_indices(total, 25.0, FrameSampling(**kwargs))
    assert len(indices) % 2 == 0 and len(indices) >= 2
    assert indices == sorted(set(indices)) and 0 <= indices[0] and indices[-1] == total - 1


@pytest.mark.parametrize(
    ("total", "kwargs"),
    [
        (1, {}),  # one frame: no even count >= 2
        (30, {"nframes": 40}),  # more frames asked than the clip has
        (300, {"start": 9.99}),  # ceil(299.7) = 300: the window is empty
        (300, {"start": 20.0, "end": 30.0}),  # window entirely past the end
    ],
)
def test_sample_frame_indices_refuses_impossible_requests(total, kwargs):
    with pytest.raises(ValueError):
        sample_frame_indices(total, 30, FrameSampling(**kwargs))


def test_frame_window():
    assert frame_window(300, 30, FrameSampling()) == (0, 299)
    assert frame_window(300, 30, FrameSampling(start=1.0, end=2.0)) == (30, 60)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fps": 0}, "fps"),
        ({"min_frames": 0}, "min_frames"),
        ({"min_frames": 8, "max_frames": 4}, "max_frames"),
        ({"nframes": 1}, "nframes"),
        ({"start": -1.0}, "start"),
        ({"end": 0.0}, "end"),
        ({"start": 3.0, "end": 2.0}, "start"),
    ],
)
def test_frame_sampling_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FrameSampling(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_pixels": 0, "max_pixels": 10}, "min_pixels"),
        ({"min_pixels": 10, "max_pixels": 5}, "max_pixels"),
        ({"min_pixels": 1, "max_pixels": 5, "factor": 0}, "factor"),
    ],
)
def test_pixel_budget_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PixelBudget(**kwargs)


# --------------------------------------------------------------------------------------------------
# smart_resize


def test_smart_resize_by_hand():
    # 448x448 = 200704 > 128*28*28 = 100352: beta = sqrt(2), 448 / sqrt(2) / 28 = 11.3 -> 11 * 28 = 308
    assert smart_resize(448, 448, factor=28, min_pixels=4 * 784, max_pixels=128 * 784) == (308, 308)
    # Qwen3-VL: factor 32, 448 / sqrt(200704 / 131072) / 32 = 11.3 -> 352
    assert smart_resize(448, 448, factor=32, min_pixels=4 * 1024, max_pixels=128 * 1024) == (352, 352)
    # under min_pixels: 20x20 -> beta = sqrt(3136 / 400) = 2.8, ceil(56 / 28) * 28 = 56
    assert smart_resize(20, 20, factor=28, min_pixels=4 * 784, max_pixels=128 * 784) == (56, 56)
    # in budget: only rounded, 42 / 28 = 1.5 -> 2 (half to even), 70 / 28 = 2.5 -> 2
    assert smart_resize(42, 70, factor=28, min_pixels=784, max_pixels=10**6) == (56, 56)


SIDES = [1, 3, 10, 14, 27, 28, 29, 42, 56, 64, 99, 224, 333, 448, 480, 640, 720, 1080, 1920, 3840]
BUDGETS = [(4 * 784, 128 * 784), (4 * 784, 256 * 784), (256 * 784, 16384 * 784), (56 * 56, 14 * 14 * 4 * 1280)]


@pytest.mark.parametrize("factor", [28, 32])
@pytest.mark.parametrize(("min_pixels", "max_pixels"), BUDGETS)
def test_smart_resize_matches_transformers(factor, min_pixels, max_pixels):
    for height in SIDES:
        for width in SIDES:
            try:
                expected = hf_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
            except ValueError:
                with pytest.raises(ValueError, match="aspect ratio"):
                    smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
                continue
            got = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
            assert got == expected, (height, width)


# --------------------------------------------------------------------------------------------------
# load_video on real files


@pytest.mark.parametrize("name", ["mp4", "mkv", "ts", "gop1.mp4", "gop250.mp4"])
def test_load_video_decodes_the_sampled_frames(clips, name):
    # 3 s at 2 fps = 6 frames: linspace(0, 29, 6) = 0, 5.8, 11.6, 17.4, 23.2, 29
    video = load_video(clips[name], FrameSampling(), KEEP)
    assert video.frame_indices == [0, 6, 12, 17, 23, 29]
    assert markers(video.frames) == video.frame_indices
    assert video.timestamps == pytest.approx([i / FPS for i in video.frame_indices], abs=1e-6)
    assert video.frames.shape == (6, 3, SIZE, SIZE) and video.frames.dtype == torch.uint8
    assert (video.video_fps, video.total_frames, video.duration) == (FPS, N_FRAMES, pytest.approx(3.0))
    assert video.sample_fps == pytest.approx(6 / 30 * FPS)
    assert video.path == clips[name]


@pytest.mark.parametrize("name", ["mp4", "ts"])
def test_every_frame_in_order(clips, name):
    video = load_video(clips[name], FrameSampling(nframes=N_FRAMES), KEEP)
    assert markers(video.frames) == list(range(N_FRAMES))
    assert video.sample_fps == pytest.approx(FPS)


@pytest.mark.parametrize("seek_cost", [0, 10**9])
def test_seeking_and_walking_give_the_same_pixels(clips, monkeypatch, seek_cost):
    # the reader's choice between seeking and decoding through must not change a single pixel
    sampling = FrameSampling(nframes=10)
    reference = load_video(clips["mp4"], sampling, KEEP).frames
    monkeypatch.setattr(media, "_SEEK_COST_FRAMES", seek_cost)
    assert torch.equal(load_video(clips["mp4"], sampling, KEEP).frames, reference)


def test_load_video_window(clips):
    # frames 10..20 (1-2 s): 11 frames, 1.1 s * 2 fps = 2.2 -> min 4; linspace(10, 20, 4) = 10, 13.3, 16.7, 20
    video = load_video(clips["mp4"], FrameSampling(start=1.0, end=2.0), KEEP)
    assert video.frame_indices == [10, 13, 17, 20]
    assert markers(video.frames) == [10, 13, 17, 20]
    assert video.timestamps == pytest.approx([1.0, 1.3, 1.7, 2.0])
    assert video.sample_fps == pytest.approx(4 / 11 * FPS)


def test_load_video_resizes_under_the_budget(clips):
    # 64x64 = 4096 > 1024: beta = 2, 64 / 2 / 16 = 2 -> 32x32
    video = load_video(clips["mp4"], FrameSampling(), PixelBudget(min_pixels=16 * 16, max_pixels=32 * 32, factor=16))
    assert video.frames.shape == (6, 3, 32, 32)
    assert markers(video.frames) == pytest.approx([0, 6, 12, 17, 23, 29], abs=1)


def test_probe_video(clips):
    assert probe_video(clips["mp4"]) == VideoInfo(fps=FPS, total_frames=N_FRAMES, duration=3.0, width=SIZE, height=SIZE)
    # matroska stores no frame count: it comes from duration * fps
    assert probe_video(clips["mkv"]).total_frames == N_FRAMES


def test_too_short(tmp_path):
    path = tmp_path / "three.mp4"
    write_video(path, marker_frames(3), FPS)
    with pytest.raises(MediaError, match="too short: 3 frames, need at least 4"):
        load_video(path, FrameSampling(), KEEP)


def test_missing_file(tmp_path):
    with pytest.raises(MediaError) as info:
        load_video(tmp_path / "nope.mp4", FrameSampling(), KEEP)
    assert info.value.reason == "missing file" and info.value.path == tmp_path / "nope.mp4"
    assert str(info.value) == f"{tmp_path / 'nope.mp4'}: missing file"


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, bytes(range(256)) * 40])
def test_garbage_is_unreadable(tmp_path, content):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(content)
    with pytest.raises(MediaError, match="unreadable"):
        load_video(path, FrameSampling(), KEEP)


def test_no_video_stream(tmp_path):
    # an allowed container (mp4) holding only sound
    path = tmp_path / "sound.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(MediaError, match="no video stream"):
        load_video(path, FrameSampling(), KEEP)
    # a WAVE file is no allowed video container at all: FFmpeg is not given it (it was, before the allow-list)
    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(bytes(16000))
    with pytest.raises(MediaError, match="unreadable: not an mp4/mov, webm/mkv, avi or mpeg-ts video"):
        load_video(path, FrameSampling(), KEEP)


def test_truncated_mp4_without_its_index(clips, tmp_path):
    # libx264 in mp4 writes the index (moov) last: cutting the file loses it
    cut(clips["long.mp4"], tmp_path / "cut.mp4", 0.6)
    with pytest.raises(MediaError, match="unreadable|truncated"):
        load_video(tmp_path / "cut.mp4", FrameSampling(), KEEP)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_truncated_stream_is_an_error_not_fewer_frames(clips, tmp_path, container):
    # the header still promises 10 s but the packets stop part-way
    whole = tmp_path / f"whole.{container}"
    remux(clips["long.mp4"], whole, **({"movflags": "faststart"} if container == "mp4" else {}))
    assert probe_video(whole).duration == pytest.approx(10.0, abs=0.1)
    cut(whole, tmp_path / f"cut.{container}", 0.6)
    with pytest.raises(MediaError, match="truncated"):
        load_video(tmp_path / f"cut.{container}", FrameSampling(max_frames=8), KEEP)
    # a window inside the intact part still decodes, with the right frames
    video = load_video(tmp_path / f"cut.{container}", FrameSampling(start=1.0, end=2.0), KEEP)
    assert markers(video.frames) == [10, 13, 17, 20]


def test_media_error_pickles(tmp_path):
    error = pickle.loads(pickle.dumps(MediaError(tmp_path / "x.mp4", "missing file")))
    assert (error.path, error.reason) == (tmp_path / "x.mp4", "missing file")


# --------------------------------------------------------------------------------------------------
# load_image


def test_load_image_resizes_to_smart_resize(tmp_path):
    path = tmp_path / "wide.png"
    Image.new("L", (300, 100), 128).save(path)
    # rounded: 100 / 28 = 3.57 -> 4 (112), 300 / 28 = 10.7 -> 11 (308); 112 * 308 fits 64 * 784
    image = load_image(path, PixelBudget(min_pixels=4 * 784, max_pixels=64 * 784))
    assert image.mode == "RGB" and image.size == (308, 112)
    # tighter: 112 * 308 > 16 * 784, beta = sqrt(30000 / 12544) = 1.546; floor(64.7 / 28) * 28 = 56,
    # floor(194 / 28) * 28 = 168
    image = load_image(path, PixelBudget(min_pixels=4 * 784, max_pixels=16 * 784))
    assert image.size == (168, 56)
    assert np.asarray(image)[10, 10].tolist() == [128, 128, 128]


def test_load_image_transparency_becomes_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (56, 56), (255, 0, 0, 0)).save(path)
    image = load_image(path, PixelBudget(min_pixels=784, max_pixels=56 * 56))
    assert image.size == (56, 56) and np.asarray(image)[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "extreme"])
def test_bad_images(tmp_path, damage):
    path = tmp_path / "bad.png"
    budget = PixelBudget(min_pixels=784, max_pixels=256 * 784)
    if damage == "extreme":
        Image.new("RGB", (1000, 4)).save(path)  # aspect ratio 250 > 200
    else:
        Image.effect_noise((64, 64), 50).save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x89PNG" + bytes(200))
    with pytest.raises(MediaError, match="unreadable|aspect ratio"):
        load_image(path, budget)
    with pytest.raises(MediaError, match="missing file"):
        load_image(tmp_path / "none.png", budget)
