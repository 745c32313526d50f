"""Frame sampling and pixel budgets: which frames of a video to take and what size to resize them to.

The torch-free rules below the decoder (`videor1.data.media`), so configs can build them without importing
PyAV or torch. They follow qwen-vl-utils (`smart_nframes`, `calculate_video_frame_range`) and the Qwen2-VL
processor (`smart_resize`) exactly, so the frames, their count and the reported sample fps are what the
processor expects and temporal positions agree between training, generation and evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Qwen-VL's temporal patch size: the vision tower merges consecutive frames in pairs, so a sampled
# frame count must be even (qwen-vl-utils' FRAME_FACTOR).
FRAME_FACTOR = 2

# Qwen's smart_resize refuses extreme aspect ratios (the same bound as transformers / qwen-vl-utils).
_MAX_ASPECT_RATIO = 200

MAX_DECODE_PIXELS = 8192 * 8192
"""Default decode limit: the largest width x height of an image or video frame decoded at all (8K x 8K)."""


@dataclass(frozen=True)
class FrameSampling:
    """How many video frames to sample and from which window (qwen-vl-utils semantics)."""

    fps: float = 2.0
    """Frames sampled per second of video (ignored when `nframes` is set)."""
    min_frames: int = 4
    """Fewest frames sampled; a clip (window) with fewer frames is rejected as too short."""
    max_frames: int = 16
    """Most frames sampled."""
    nframes: int | None = None
    """Explicit frame count (rounded to even); overrides `fps`, `min_frames` and `max_frames`."""
    start: float | None = None
    """Window start in seconds (None: the clip's start)."""
    end: float | None = None
    """Window end in seconds (None: the clip's end)."""

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be positive, got {self.min_frames}")
        if self.max_frames < self.min_frames:
            raise ValueError(f"max_frames ({self.max_frames}) must be >= min_frames ({self.min_frames})")
        if self.max_frames < FRAME_FACTOR:
            raise ValueError(f"max_frames must be >= {FRAME_FACTOR}, got {self.max_frames}")
        if self.nframes is not None and self.nframes < FRAME_FACTOR:
            raise ValueError(f"nframes must be >= {FRAME_FACTOR}, got {self.nframes}")
        if self.start is not None and self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")
        if self.end is not None and not self.end > 0:
            raise ValueError(f"end must be positive, got {self.end}")
        if self.start is not None and self.end is not None and not self.start < self.end:
            raise ValueError(f"start ({self.start}) must be < end ({self.end})")


@dataclass(frozen=True)
class PixelBudget:
    """Per-image (per-frame) pixel budget for smart_resize; the values come from the caller's config."""

    min_pixels: int
    """Smallest area after resizing."""
    max_pixels: int
    """Largest area after resizing."""
    factor: int = 28
    """Sides are multiples of this: patch_size * merge_size (28 for Qwen2/2.5-VL, 32 for Qwen3-VL)."""
    max_decode_pixels: int = MAX_DECODE_PIXELS
    """Largest width x height decoded at all, checked from the header; larger media raises MediaTooLarge."""

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ValueError(f"factor must be positive, got {self.factor}")
        if self.max_decode_pixels < 1:
            raise ValueError(f"max_decode_pixels must be positive, got {self.max_decode_pixels}")
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be positive, got {self.min_pixels}")
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})")


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) rounded to multiples of `factor` with area in [min_pixels, max_pixels], as Qwen-VL."""
    # The exact rule of transformers' qwen2_vl smart_resize (including Python's round-half-to-even),
    # so the processor finds nothing left to resize.
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {_MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_window(total_frames: int, video_fps: float, sampling: FrameSampling) -> tuple[int, int]:
    """First and last frame index (inclusive) of the sampling window (qwen-vl-utils' frame range)."""
    if total_frames < 1:
        raise ValueError(f"no frames (total_frames={total_frames})")
    if sampling.start is None and sampling.end is None:
        return 0, total_frames - 1
    duration = total_frames / video_fps
    start_frame = 0
    end_frame = total_frames - 1
    if sampling.start is not None:
        start_frame = math.ceil(min(sampling.start, duration) * video_fps)
    if sampling.end is not None:
        end_frame = min(math.floor(min(sampling.end, duration) * video_fps), total_frames - 1)
    if start_frame >= end_frame:
        raise ValueError(
            f"window {sampling.start}-{sampling.end} s holds fewer than {FRAME_FACTOR} frames "
            f"of a {duration:.2f} s clip"
        )
    return start_frame, end_frame


def frames_needed(sampling: FrameSampling) -> int:
    """The fewest frames a window must hold: the explicit count sample_frame_indices takes, else min_frames."""
    if sampling.nframes is None:
        return sampling.min_frames
    return round(sampling.nframes / FRAME_FACTOR) * FRAME_FACTOR


def sample_frame_indices(total_frames: int, video_fps: float, sampling: FrameSampling) -> list[int]:
    """Indices of the frames to sample: an even count >= 2, uniform over the window (qwen-vl-utils)."""
    start_frame, end_frame = frame_window(total_frames, video_fps, sampling)
    window_frames = end_frame - start_frame + 1
    if sampling.nframes is not None:
        nframes = round(sampling.nframes / FRAME_FACTOR) * FRAME_FACTOR
    else:
        min_frames = math.ceil(sampling.min_frames / FRAME_FACTOR) * FRAME_FACTOR
        max_frames = math.floor(min(sampling.max_frames, window_frames) / FRAME_FACTOR) * FRAME_FACTOR
        nframes = window_frames / video_fps * sampling.fps
        nframes = min(max(nframes, min_frames), max_frames)
        nframes = math.floor(nframes / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= nframes <= window_frames:
        raise ValueError(f"cannot sample {nframes} frames from a window of {window_frames} frames")
    import torch  # only here: configs import this module and must stay cheap to import

    # torch float32 linspace + round, exactly as qwen-vl-utils, so the same indices come out
    return torch.linspace(start_frame, end_frame, nframes).round().long().tolist()
