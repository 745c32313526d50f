"""Frame folders: natural order, the same sampling as mp4, lazy decoding and errors, on real files in tmp dirs.

The synthetic clip gives every frame its own flat colour, so a test reads back WHICH frame was decoded.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from videor1.data.frames import IMAGE_SUFFIXES, frame_files, load_clip, load_frame_folder
from videor1.data.media import MediaError, write_video
from videor1.data.sampling import FrameSampling, PixelBudget, sample_frame_indices, smart_resize
from videor1.models.inputs import video_metadata

FPS = 3  # TVQA's frames_fps3
N_FRAMES = 24  # 8 s
WIDTH, HEIGHT = 64, 48
BUDGET = PixelBudget(min_pixels=28 * 28, max_pixels=56 * 56, factor=28)
TARGET = smart_resize(HEIGHT, WIDTH, factor=28, min_pixels=BUDGET.min_pixels, max_pixels=BUDGET.max_pixels)


def colours(n: int = N_FRAMES) -> np.ndarray:
    """[n, 3] distinct, well-separated RGB colours (uint8)."""
    i = np.arange(n)
    return np.stack([(i * 10) % 256, 255 - (i * 10) % 256, (i * 97 + 40) % 256], axis=1).astype(np.uint8)


def colour_frames(n: int = N_FRAMES) -> np.ndarray:
    """[n, H, W, 3]: frame i is flat colours()[i]."""
    return np.broadcast_to(colours(n)[:, None, None, :], (n, HEIGHT, WIDTH, 3)).copy()


def write_folder(folder, frames: np.ndarray, *, name: str = "{:05d}.png", start: int = 1) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        paths.append(folder / name.format(i + start))
        Image.fromarray(frame).save(paths[-1])
    return paths


def which_frames(frames: torch.Tensor, n: int = N_FRAMES) -> list[int]:
    """The colours() index nearest each decoded frame's mean colour."""
    means = frames.float().mean(dim=(2, 3))  # [F, 3]
    return torch.cdist(means, torch.from_numpy(colours(n)).float()).argmin(dim=1).tolist()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The same 24 frames as a PNG folder and as an mp4 at the same fps."""
    root = tmp_path_factory.mktemp("frames")
    frames = colour_frames()
    write_folder(root / "clip", frames)
    write_video(root / "clip.mp4", frames, FPS)
    return root / "clip", root / "clip.mp4"


# ---------------------------------------------------------------------------------------------------
# Frame order


def touch(folder, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_frame_files_natural_order(tmp_path):
    touch(tmp_path / "a", "10.jpg", "2.jpg", "1.jpg")
    assert [p.name for p in frame_files(tmp_path / "a")] == ["1.jpg", "2.jpg", "10.jpg"]
    touch(tmp_path / "b", "frame_10.jpg", "frame_2.jpg", "frame_1.jpg", "frame_1_b.jpg")
    expected = ["frame_1.jpg", "frame_1_b.jpg", "frame_2.jpg", "frame_10.jpg"]
    assert [p.name for p in frame_files(tmp_path / "b")] == expected
    padded = [f"{i:05d}.jpg" for i in range(1, 13)]
    touch(tmp_path / "c", *reversed(padded))
    assert [p.name for p in frame_files(tmp_path / "c")] == padded
    # equal numbers: the plain name decides, so the order is total and stable
    touch(tmp_path / "d", "1.jpg", "01.jpg", "001.jpg")
    assert [p.name for p in frame_files(tmp_path / "d")] == ["001.jpg", "01.jpg", "1.jpg"]


def test_frame_files_only_image_files(tmp_path):
    touch(tmp_path, "2.JPG", "1.jpeg", "3.png", "4.bmp", "5.webp", ".DS_Store", "notes.txt", "6.jpg.txt", "._1.jpg")
    (tmp_path / "7.jpg").mkdir()  # a sub-folder named like a frame
    assert [p.name for p in frame_files(tmp_path)] == ["1.jpeg", "2.JPG", "3.png", "4.bmp", "5.webp"]
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


# ---------------------------------------------------------------------------------------------------
# Same sampling as mp4


@pytest.mark.parametrize(
    "sampling",
    [
        FrameSampling(fps=1.0, min_frames=4, max_frames=16),
        FrameSampling(fps=2.0, min_frames=4, max_frames=8, start=2.0, end=6.0),
        FrameSampling(nframes=6),
        FrameSampling(nframes=4, start=1.5, end=7.0),
    ],
)
def test_folder_matches_mp4(clip, sampling):
    folder, mp4 = clip
    a = load_frame_folder(folder, sampling, BUDGET, fps=FPS)
    b = load_clip(mp4, sampling, BUDGET, frame_fps=99)  # frame_fps is for folders only
    assert a.frame_indices == b.frame_indices == sample_frame_indices(N_FRAMES, FPS, sampling)
    assert a.timestamps == pytest.approx(b.timestamps, abs=1e-6)
    assert a.sample_fps == pytest.approx(b.sample_fps)
    assert (a.total_frames, a.video_fps) == (b.total_frames, b.video_fps) == (N_FRAMES, FPS)
    assert a.duration == pytest.approx(b.duration)
    assert a.frames.shape == b.frames.shape == (len(a.frame_indices), 3, *TARGET)
    assert a.frames.dtype == torch.uint8
    # H.264 (yuv420p, crf 18) is lossy: close, not equal
    assert (a.frames.float() - b.frames.float()).abs().mean() < 3
    assert video_metadata(a) == video_metadata(b)
    assert a.path == folder


def test_each_sampled_frame_is_the_right_file(clip):
    folder, _ = clip
    sampling = FrameSampling(nframes=8, start=1.0)
    video = load_frame_folder(folder, sampling, BUDGET, fps=FPS)
    assert which_frames(video.frames) == video.frame_indices
    # a flat colour stays exact through the resize
    expected = torch.from_numpy(colours()[video.frame_indices])[:, :, None, None].expand_as(video.frames)
    assert torch.equal(video.frames, expected)
    assert video.timestamps == [i / FPS for i in video.frame_indices]


def test_load_clip_dispatches(clip):
    folder, mp4 = clip
    sampling = FrameSampling(nframes=4)
    assert load_clip(folder, sampling, BUDGET, frame_fps=FPS).path == folder
    assert load_clip(str(mp4), sampling, BUDGET, frame_fps=FPS).path == mp4
    # a folder's fps comes from the caller: the same files at 6 fps are a 4 s clip
    fast = load_clip(folder, FrameSampling(fps=1.0), BUDGET, frame_fps=6)
    assert (fast.video_fps, fast.duration) == (6, 4.0)
    with pytest.raises(MediaError, match="missing file"):
        load_clip(folder.parent / "nope.mp4", sampling, BUDGET, frame_fps=FPS)


# ---------------------------------------------------------------------------------------------------
# Only sampled frames are opened


def test_only_sampled_frames_are_opened(tmp_path):
    paths = write_folder(tmp_path / "clip", colour_frames())
    sampling = FrameSampling(nframes=4)
    indices = sample_frame_indices(N_FRAMES, FPS, sampling)
    skipped = next(i for i in range(N_FRAMES) if i not in indices)
    paths[skipped].write_bytes(b"not a png at all")
    video = load_frame_folder(tmp_path / "clip", sampling, BUDGET, fps=FPS)
    assert which_frames(video.frames) == indices

    paths[indices[2]].write_bytes(paths[indices[2]].read_bytes()[:60])  # truncated
    with pytest.raises(MediaError, match=rf"frame {paths[indices[2]].name}: unreadable") as info:
        load_frame_folder(tmp_path / "clip", sampling, BUDGET, fps=FPS)
    assert info.value.path == tmp_path / "clip"


# ---------------------------------------------------------------------------------------------------
# Sizes and pixel formats


def test_frames_take_the_first_sampled_frames_size(tmp_path):
    frames = [Image.new("RGB", (WIDTH, HEIGHT), tuple(int(c) for c in colours()[i])) for i in range(8)]
    frames[0] = frames[0].resize((400, 40))  # not sampled below: must not set the size
    frames[5] = frames[5].resize((200, 300))
    frames[7] = frames[7].resize((30, 20))
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, image in enumerate(frames):
        image.save(folder / f"{i}.png")
    video = load_frame_folder(folder, FrameSampling(nframes=4, start=1 / FPS), BUDGET, fps=FPS)
    assert video.frame_indices[0] == 1
    assert video.frames.shape == (4, 3, *TARGET)
    assert which_frames(video.frames) == video.frame_indices


def test_transparency_and_exif(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(4):
        Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0)).save(folder / f"{i}.png")  # fully transparent
    video = load_frame_folder(folder, FrameSampling(nframes=2), BUDGET, fps=FPS)
    assert torch.all(video.frames == 255)  # onto white, as load_image

    rotated = tmp_path / "rotated"
    rotated.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    for i in range(4):
        Image.new("RGB", (WIDTH, HEIGHT), (200, 10, 10)).save(rotated / f"{i}.jpg", exif=exif)
    video = load_frame_folder(rotated, FrameSampling(nframes=2), BUDGET, fps=FPS)
    portrait = smart_resize(WIDTH, HEIGHT, factor=28, min_pixels=BUDGET.min_pixels, max_pixels=BUDGET.max_pixels)
    assert video.frames.shape[-2:] == portrait


def test_unusable_size(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (300, 1)).save(folder / f"{i}.png")
    with pytest.raises(MediaError, match="unusable size 300x1"):
        load_frame_folder(folder, FrameSampling(nframes=2), BUDGET, fps=FPS)


# ---------------------------------------------------------------------------------------------------
# Errors


def test_missing_and_empty_folders(tmp_path):
    sampling = FrameSampling()
    with pytest.raises(MediaError, match="missing folder") as info:
        load_frame_folder(tmp_path / "nope", sampling, BUDGET, fps=FPS)
    assert info.value.path == tmp_path / "nope"
    with pytest.raises(MediaError, match="missing folder"):
        frame_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match=r"no image frames \(\.jpg, \.jpeg, "):
        load_frame_folder(tmp_path / "empty", sampling, BUDGET, fps=FPS)
    touch(tmp_path / "text", "1.txt", "2.txt", ".DS_Store")
    with pytest.raises(MediaError, match="no image frames"):
        load_frame_folder(tmp_path / "text", sampling, BUDGET, fps=FPS)


def test_too_short(tmp_path):
    folder = tmp_path / "clip"
    write_folder(folder, colour_frames(3))
    with pytest.raises(MediaError, match="too short: 3 frames, need at least 4"):
        load_frame_folder(folder, FrameSampling(min_frames=4), BUDGET, fps=FPS)
    with pytest.raises(MediaError, match="too short: 3 frames, need at least 4"):
        load_frame_folder(folder, FrameSampling(nframes=4), BUDGET, fps=FPS)
    with pytest.raises(MediaError, match="too short: window"):
        load_frame_folder(folder, FrameSampling(min_frames=1, start=0.9), BUDGET, fps=FPS)
    assert load_frame_folder(folder, FrameSampling(min_frames=2), BUDGET, fps=FPS).frame_indices == [0, 2]


@pytest.mark.parametrize("fps", [0, -3, float("nan"), float("inf")])
def test_bad_fps(clip, fps):
    folder, _ = clip
    with pytest.raises(ValueError, match="fps must be positive"):
        load_frame_folder(folder, FrameSampling(), BUDGET, fps=fps)
    with pytest.raises(ValueError, match="fps must be positive"):
        load_clip(folder, FrameSampling(), BUDGET, frame_fps=fps)
