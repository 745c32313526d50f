"""Videos stored as folders of image frames, sampled exactly like video files.

Benchmarks often ship pre-extracted frames instead of video files: MVBench's TVQA subset is folders of
JPEG frames at 3 fps (`tvqa/frames_fps3_hq/<clip>/00001.jpg`), and Something-Something and NExT-QA
extractions come the same way. Such a folder is read as a video whose frame i is the i-th file in
natural name order, and it goes through the same window, too-short check and index sampling as
`load_video` (`sampled_frames`), so a folder and an mp4 with the same frame count
and fps give the same frame indices, timestamps and `sample_fps`, and temporal positions (the
processor's time ids, answers about "when") stay right.

A folder has no header, so its frame rate must come from the caller (the benchmark's documentation, e.g.
3 for TVQA); it is never guessed. Only the sampled frames are opened: a 3,000-frame clip sampled at 16
frames reads 16 files. Frames are decoded as `load_image` decodes images (`open_rgb`: an allowed format
by content, its header size checked against `max_decode_pixels` before decoding, EXIF-transposed,
transparent pixels onto white) and all resized to the size `smart_resize` gives the first sampled frame, as
MVBench's reference loaders do, even where a later frame has a different size. `DecodeLimits` apply as to
a video file: the clock and the cancel callback are checked before each frame (a frame reads no packets).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from videor1.data.media import (
    DecodedVideo,
    DecodeLimits,
    DecodeMeter,
    MediaError,
    load_video,
    open_rgb,
    resize_frames,
    sampled_frames,
)
from videor1.data.sampling import FrameSampling, PixelBudget, smart_resize

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_DIGITS = re.compile(r"([0-9]+)")


def _natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    # re.split with a capture group alternates text and digit runs (text first, possibly empty), so
    # two keys compare text with text and numbers with numbers; the plain name breaks ties ("01" vs "1")
    parts = _DIGITS.split(name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder in frame order: sorted by name, numbers compared as numbers."""
    folder = Path(folder)
    if not folder.exists():
        raise MediaError(folder, "missing folder")
    if not folder.is_dir():
        raise MediaError(folder, "not a folder")
    try:
        files = [
            p
            for p in folder.iterdir()
            # dot-files are skipped too: macOS archives carry "._00001.jpg" resource forks that are not images
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ]
    except OSError as e:  # a folder we may not list is a bad sample like an unreadable file, not a crash
        raise MediaError(folder, f"unreadable folder: {e.strerror or e}") from e
    return sorted(files, key=lambda p: _natural_key(p.name))


def load_frame_folder(
    folder: str | Path, sampling: FrameSampling, budget: PixelBudget, *, fps: float, limits: DecodeLimits | None = None
) -> DecodedVideo:
    """Sample and decode frames of an image folder as a video at `fps`; raises MediaError on any failure."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive and finite, got {fps}")
    fps = float(fps)
    folder = Path(folder)
    meter = DecodeMeter(folder, limits)
    files = frame_files(folder)
    if not files:
        raise MediaError(folder, f"no image frames ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    total = len(files)
    indices, window_frames = sampled_frames(folder, total, fps, sampling)

    size: tuple[int, int] | None = None
    decoded: dict[int, torch.Tensor] = {}
    for index in sorted(set(indices)):
        path = files[index]
        meter.check()  # DecodeCancelled / DecodeBudgetExceeded name the folder
        try:
            # every sampled frame's header is checked: frames of one folder need not share a size
            image = open_rgb(path, budget.max_decode_pixels)
        except MediaError as e:  # MediaTooLarge stays one
            raise e.relabel(folder, f"frame {path.name}: {e.reason}") from e
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # [3, H, W]; a writable copy for torch
        if size is None:
            height, width = pixels.shape[-2:]
            try:
                size = smart_resize(
                    height, width, factor=budget.factor, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
                )
            except ValueError as e:
                raise MediaError(folder, f"unusable size {width}x{height}: {e}") from e
        # resize as we go: holding 64 full-size frames would take gigabytes for large extractions
        decoded[index] = resize_frames(pixels[None], size)[0]

    return DecodedVideo(
        frames=torch.stack([decoded[i] for i in indices]),  # [F, 3, H, W]
        frame_indices=indices,
        timestamps=[i / fps for i in indices],
        video_fps=fps,
        total_frames=total,
        duration=total / fps,
        sample_fps=len(indices) / window_frames * fps,
        path=folder,
    )


def load_clip(
    path: str | Path,
    sampling: FrameSampling,
    budget: PixelBudget,
    *,
    frame_fps: float,
    limits: DecodeLimits | None = None,
) -> DecodedVideo:
    """A video file with `load_video`, or a folder of frames with `load_frame_folder` at `frame_fps`."""
    if Path(path).is_dir():
        return load_frame_folder(path, sampling, budget, fps=frame_fps, limits=limits)
    return load_video(path, sampling, budget, limits=limits)
