"""Media decoding: images with PIL, videos with PyAV, at the frames and sizes `videor1.data.sampling` chooses.

Sampling and resizing follow qwen-vl-utils and the Qwen2-VL processor (the rules live in
`videor1.data.sampling`), so the frames, their count and the reported `sample_fps` are what the processor
expects and temporal positions agree between training, generation and evaluation.

Deviations from qwen-vl-utils, on purpose:
- Videos are read with PyAV by seeking to the sampled times and decoding only what is needed (the
  reference readers decode the whole clip, or need decord). Sampled index i means time i / video_fps
  from the stream's start, and the frame with the nearest presentation timestamp is taken, so streams
  whose pts do not start at 0 work; in variable-frame-rate video that is the frame shown at that time,
  where decord would take the i-th frame in decode order.
- A clip is checked only as far as the sampled frames need: a file cut after the sampling window
  still loads, with the right frames; one cut before a sampled frame raises.
- Every failure raises `MediaError` naming the file (missing, unreadable, truncated, too short), whatever
  PyAV or PIL raised (FFmpeg errors, but also a binding's AttributeError on an unknown codec): the
  original Video-R1 substituted a fixed file on a decode error and trained on the wrong question/answer
  pair. Only MemoryError and interrupts pass through. Metadata tags that are not UTF-8 (Latin-1 in old
  camera files) are not a failure: no tag is read, so their bytes are replaced and the video decodes.
- Frames and images are resized once, here, with one filter: torch's uint8 bicubic with antialias
  (qwen-vl-utils uses torchvision bicubic for video and PIL bicubic for images; both are within a few
  levels of it). Pixels stay uint8; the processor rescales and normalises.
- A video's rotation metadata is ignored, as in qwen-vl-utils; images are EXIF-transposed, as in
  transformers' `load_image`.

Opening is guarded, because media paths and bytes come from datasets and from the server's clients:
- The container is recognised from the file's first bytes (never its name or a client's MIME type) and
  must be one of an allow-list: mp4/mov, matroska/webm, avi and mpeg-ts for videos, opened with that
  demuxer forced and FFmpeg's protocols limited to `file`; PNG, JPEG, GIF, WebP, BMP and TIFF for
  images, opened with only that PIL decoder. FFmpeg's demuxers that read other files (an HLS playlist,
  an ffconcat script, image sequences) are never reached, whatever a file is called.
- Sizes are read from the header and checked against `PixelBudget.max_decode_pixels` before anything
  is decoded (`MediaTooLarge`): a frame or image over the limit, or a video whose frames hold more
  than `VIDEO_FRAMES_AT_LIMIT` times it; FFmpeg's decoders get the same per-frame limit, so a stream
  whose frames are larger than its header says is refused too.
- Decoding work is bounded when the caller asks (`DecodeLimits`, the server does): packets read and
  seconds spent per file, and a `cancelled` callback polled as it goes, so a small file of 100,000 empty
  P-frames, or a request whose client has left, cannot hold a decode thread for a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from videor1.data.sampling import (
    MAX_DECODE_PIXELS,
    FrameSampling,
    PixelBudget,
    frame_window,
    frames_needed,
    sample_frame_indices,
    smart_resize,
)

# A seek costs a keyframe decode (several times a P/B frame), the decoder's reorder delay and, with
# frame threads, a pipeline refill before the first frame comes out. Measured on 448x448 H.264
# (seek-and-decode vs decode-through across one keyframe, 2 CPU cores) the two break even between 16
# and 24 skipped frames, so a jump is taken only when it skips more.
_SEEK_COST_FRAMES = 16

# Only the sampled frames are decoded, so frames x size bounds no real cost; the check refuses headers
# that claim absurd clips. At the default limit 10,000 would refuse real inputs (a 45-minute 4K clip at
# 30 fps, a two-hour 1080p film at 60 fps); 100,000 passes 3.7 hours of 4K or 15 of 1080p at 60 fps.
VIDEO_FRAMES_AT_LIMIT = 100_000

# Enough of a file's start to recognise every allowed format (mpeg-ts: three 204-byte packets).
_HEAD_BYTES = 1024

# The cancel callback and the clock are polled every this many packets: at most a few ms of 720p decoding
# between polls, and a callback that takes a lock still costs nothing next to the decoding.
_POLL_EVERY_PACKETS = 16

# Box types a QuickTime/ISO-BMFF file may start with (mp4 with ftyp; older mov with the others)
_MOV_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")


def _is_mpegts(head: bytes) -> bool:
    # a sync byte 0x47 every packet: 188-byte packets, 192 with a 4-byte prefix (m2ts), 204 with FEC
    for size, first in ((188, 0), (192, 4), (204, 0)):
        syncs = range(first, min(len(head), first + 3 * size), size)
        if len(syncs) >= 2 and all(head[i] == 0x47 for i in syncs):
            return True
    return False


# FFmpeg demuxer forced for each allowed video container, with the test its first bytes must pass. None
# of them opens another file or URL (mov's external data references are off by default and stay off).
VIDEO_FORMATS: dict[str, Callable[[bytes], bool]] = {
    "mov": lambda head: head[4:8] in _MOV_BOXES,  # mp4, mov, m4v, 3gp
    "matroska": lambda head: head[:4] == b"\x1a\x45\xdf\xa3",  # mkv, webm (EBML)
    "avi": lambda head: head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"),
    "mpegts": _is_mpegts,  # ts, m2ts
}

# PIL decoder allowed for each image format, with its magic numbers.
IMAGE_FORMATS: dict[str, Callable[[bytes], bool]] = {
    "PNG": lambda head: head[:8] == b"\x89PNG\r\n\x1a\n",
    "JPEG": lambda head: head[:3] == b"\xff\xd8\xff",
    "GIF": lambda head: head[:6] in (b"GIF87a", b"GIF89a"),
    "WEBP": lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
    "BMP": lambda head: head[:2] == b"BM",
    "TIFF": lambda head: head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),  # classic and BigTIFF
}

FORMAT_SUFFIXES: dict[str, str] = {
    "mov": ".mp4", "matroska": ".mkv", "avi": ".avi", "mpegts": ".ts",
    "PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
}
"""A file name suffix for each allowed format (for bytes written to a temp file)."""

_VIDEO_NAMES = "mp4/mov, webm/mkv, avi or mpeg-ts"
_IMAGE_NAMES = "PNG, JPEG, GIF, WebP, BMP or TIFF"


class MediaError(Exception):
    """A media file that cannot be used, with the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # keep the two-argument constructor through pickling (DataLoader workers send errors back)
        return (type(self), (self.path, self.reason))

    def relabel(self, path: str | Path, reason: str) -> MediaError:
        """The same kind of error (MediaTooLarge stays one) about another path, with another reason."""
        return type(self)(path, reason, *self.__reduce__()[1][2:])


class MediaTooLarge(MediaError):
    """Media whose header size is over the decode limit; refused before anything is decoded."""

    def __init__(self, path: str | Path, reason: str, limit: int) -> None:
        self.limit = limit
        """The limit exceeded, in pixels."""
        super().__init__(path, reason)

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason, self.limit))


class DecodeBudgetExceeded(MediaError):
    """A decode stopped because it read more packets or took longer than its `DecodeLimits` allow."""

    def __init__(self, path: str | Path, reason: str, setting: str) -> None:
        self.setting = setting
        """The setting whose limit was reached (e.g. "serve max_decode_packets")."""
        super().__init__(path, reason)

    def __reduce__(self) -> tuple:
        return (type(self), (self.path, self.reason, self.setting))


class DecodeCancelled(MediaError):
    """A decode stopped because its `DecodeLimits.cancelled` said the result is no longer wanted."""


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on the work of decoding one file; None is no bound."""

    max_packets: int | None = None
    """Packets one video's decode may read, seeks included (images and frame folders read none)."""
    max_seconds: float | None = None
    """Wall-clock seconds one file's decode may take, from the start of the load to its last frame."""
    cancelled: Callable[[], bool] | None = None
    """Polled every few packets and before each image: True stops the decode with DecodeCancelled."""
    packets_setting: str = "max_packets"
    """The setting that sets `max_packets`, named in the error (e.g. "serve max_decode_packets")."""
    seconds_setting: str = "max_seconds"
    """The setting that sets `max_seconds`, named in the error."""

    def __post_init__(self) -> None:
        if self.max_packets is not None and self.max_packets < 1:
            raise ValueError(f"{self.packets_setting} must be >= 1, got {self.max_packets}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"{self.seconds_setting} must be positive, got {self.max_seconds}")


class DecodeMeter:
    """The work one file's decode has done (packets read, time since it began) against its `DecodeLimits`."""

    def __init__(self, path: str | Path, limits: DecodeLimits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or DecodeLimits()
        self.packets = 0
        self._start = time.monotonic()

    def packet(self) -> None:
        """Count one packet read; raise when it is one over `max_packets`, poll the other limits every few."""
        self.packets += 1
        limit = self.limits.max_packets
        if limit is not None and self.packets > limit:
            setting = self.limits.packets_setting
            raise DecodeBudgetExceeded(self.path, f"decoding stopped after {limit:,} packets ({setting})", setting)
        if self.packets % _POLL_EVERY_PACKETS == 0:
            self.check()

    def check(self) -> None:
        """Raise DecodeCancelled when the decode is no longer wanted, DecodeBudgetExceeded when over its time."""
        limits = self.limits
        if limits.cancelled is not None and limits.cancelled():
            after = f" after {self.packets:,} packets" if self.packets else ""
            raise DecodeCancelled(self.path, f"decoding cancelled{after}")
        if limits.max_seconds is not None:
            elapsed = time.monotonic() - self._start
            if elapsed > limits.max_seconds:
                setting = limits.seconds_setting
                raise DecodeBudgetExceeded(
                    self.path,
                    f"decoding stopped after {elapsed:.2f} s, over the limit of {limits.max_seconds:g} s ({setting})",
                    setting,
                )


def _message(error: Exception, path: Path, file: BinaryIO | None) -> str:
    """An exception's text for a MediaError about `path`: FFmpeg's without the file name, a handle shown as `path`."""
    if isinstance(error, av.FFmpegError) and error.strerror:
        return error.strerror  # str() appends the file name, which the MediaError already gives
    text = str(error)
    # PIL shows a handle as "<_io.BufferedReader name=7>"; the path is what the caller knows it by
    return text.replace(repr(file), str(path)) if file is not None else text


def _media_failure(path: Path, error: Exception, file: BinaryIO | None = None) -> MediaError:
    """The MediaError naming `path` for whatever PyAV or PIL raised while reading it, with a readable reason."""
    text = _message(error, path, file)
    if isinstance(error, av.FFmpegError):
        return MediaError(path, f"unreadable: {text}")
    if isinstance(error, UnicodeDecodeError):
        # text PyAV decodes as UTF-8 that is not (metadata tags are opened with errors replaced, see `_open`)
        return MediaError(path, f"unreadable: text in the file (a metadata tag) is not UTF-8 ({text})")
    # anything else is a decoder's or a binding's bug met on odd input (an AttributeError, a struct.error):
    # its type says more than its message alone
    return MediaError(path, f"unreadable: {type(error).__name__}: {text}")


@contextmanager
def _failures_named(path: Path, file: BinaryIO | None = None) -> Iterator[None]:
    """Any exception inside becomes `_media_failure`'s MediaError; MediaError, MemoryError and interrupts pass."""
    try:
        yield
    except (MediaError, MemoryError):
        raise
    except Exception as e:
        raise _media_failure(path, e, file) from e


def _over_limit(path: Path, what: str, width: int, height: int, limit: int) -> MediaTooLarge:
    return MediaTooLarge(
        path,
        f"too large: {what} of {width}x{height} = {width * height:,} pixels is over the decode limit of "
        f"{limit:,} pixels (media.max_decode_pixels)",
        limit,
    )


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says about its main video stream."""

    fps: float
    total_frames: int
    duration: float
    width: int
    height: int


@dataclass
class DecodedVideo:
    """Sampled, resized frames of one video and where they came from."""

    frames: torch.Tensor
    """[F, 3, H, W] uint8, already smart-resized."""
    frame_indices: list[int]
    """Index in the whole clip of each sampled frame."""
    timestamps: list[float]
    """Presentation time of each frame in seconds, from the stream's start."""
    video_fps: float
    total_frames: int
    duration: float
    sample_fps: float
    """nframes / frames in the window * video_fps (qwen-vl-utils); pass it to the processor."""
    path: Path


# ---------------------------------------------------------------------------------------------------
# Frames to decode


def sampled_frames(
    path: str | Path, total_frames: int, video_fps: float, sampling: FrameSampling
) -> tuple[list[int], int]:
    """The frame indices to decode and the window's frame count; MediaError "too short" for a clip that cannot
    give them (the one rule of video files and frame folders)."""
    try:
        start_frame, end_frame = frame_window(total_frames, video_fps, sampling)
    except ValueError as e:
        raise MediaError(path, f"too short: {e}") from e
    window_frames = end_frame - start_frame + 1
    need = frames_needed(sampling)
    if window_frames < need:
        raise MediaError(path, f"too short: {window_frames} frames, need at least {need}")
    return sample_frame_indices(total_frames, video_fps, sampling), window_frames


# ---------------------------------------------------------------------------------------------------
# Video


def _head(path: Path, file: BinaryIO | None = None) -> bytes:
    try:
        if file is not None:
            file.seek(0)
            head = file.read(_HEAD_BYTES)
            file.seek(0)  # the decoder starts from the first byte too
            return head
        if not path.is_file():
            raise MediaError(path, "missing file")
        with path.open("rb") as opened:
            return opened.read(_HEAD_BYTES)
    except OSError as e:
        raise MediaError(path, f"unreadable: {e.strerror or e}") from e


def sniff_video(head: bytes) -> str | None:
    """The allowed video container (its FFmpeg demuxer) that a file's first bytes show, or None."""
    return next((name for name, matches in VIDEO_FORMATS.items() if matches(head)), None)


def sniff_image(head: bytes) -> str | None:
    """The allowed image format (its PIL name) that a file's first bytes show, or None."""
    return next((name for name, matches in IMAGE_FORMATS.items() if matches(head)), None)


def _open(path: Path, max_pixels: int = MAX_DECODE_PIXELS, file: BinaryIO | None = None) -> av.container.InputContainer:
    """The container of an allowed video, from `file` when given (`path` then only names it); MediaError else."""
    demuxer = sniff_video(_head(path, file))
    if demuxer is None:
        # the same answer whatever a refused file refers to: FFmpeg never reads it
        raise MediaError(path, f"unreadable: not an {_VIDEO_NAMES} video (by its content)")
    with _failures_named(path, file):
        return av.open(
            # a handle as it is; a path with a leading "/", so no part of a name ("concat:a|b") is a protocol
            file if file is not None else str(path.absolute()),
            mode="r",
            format=demuxer,
            # the demuxer chosen above and the `file` protocol only, for anything opened on this file's behalf
            container_options={"protocol_whitelist": "file", "format_whitelist": demuxer},
            # reaches the decoders that probe the streams at open, so they refuse huge frames too
            options={"max_pixels": str(max_pixels)},
            # tags in another encoding than UTF-8 (Latin-1 in old camera files) would refuse a playable video;
            # no tag is ever read, so an odd byte is replaced rather than the file lost
            metadata_errors="replace",
        )


def _video_stream(path: Path, container: av.container.InputContainer) -> tuple[av.VideoStream, VideoInfo]:
    if not container.streams.video:
        raise MediaError(path, "unreadable: no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # an unknown sample description (stsd fourcc): FFmpeg has no decoder
        raise MediaError(path, "unreadable: no decoder for its video codec")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise MediaError(path, "unreadable: unknown frame rate")
    fps = float(rate)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        # Matroska has no per-stream duration; the whole file's is the best the header offers
        duration = container.duration / av.time_base
    else:
        duration = stream.frames / fps
    # stream.frames is exact where the container stores a sample table (mp4); 0 means unknown
    total_frames = stream.frames if stream.frames > 0 else round(duration * fps)
    if duration <= 0:
        duration = total_frames / fps
    if total_frames < 1:
        raise MediaError(path, "unreadable: no frames")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 1 or height < 1:
        raise MediaError(path, "unreadable: no frame size in the header")
    return stream, VideoInfo(fps, total_frames, duration, width, height)


def _check_video_size(path: Path, info: VideoInfo, limit: int) -> None:
    if info.width * info.height > limit:
        raise _over_limit(path, "a frame", info.width, info.height, limit)
    if info.total_frames * info.width * info.height > VIDEO_FRAMES_AT_LIMIT * limit:
        total = VIDEO_FRAMES_AT_LIMIT * limit
        raise MediaTooLarge(
            path,
            f"too large: {info.total_frames:,} frames of {info.width}x{info.height} are "
            f"{info.total_frames * info.width * info.height:,} pixels, over the decode limit of {total:,} "
            f"pixels per video ({VIDEO_FRAMES_AT_LIMIT:,} x media.max_decode_pixels)",
            total,
        )


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame count, duration and size from the header, without decoding."""
    path = Path(path)
    with _failures_named(path), _open(path) as container:
        return _video_stream(path, container)[1]


class _FrameReader:
    """The decoded frame nearest each requested time, walking forward through the stream and seeking
    only when a jump skips more decoding than the seek costs."""

    def __init__(
        self,
        path: Path,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        info: VideoInfo,
        meter: DecodeMeter | None = None,
    ) -> None:
        self._path = path
        self._meter = meter or DecodeMeter(path)
        self._container = container
        self._stream = stream
        self._info = info
        self._time_base = float(stream.time_base)
        self._start_pts = stream.start_time or 0  # mpeg-ts and cut clips do not start at pts 0
        self._period = 1.0 / info.fps
        # mp4 sample tables and mkv cues list every keyframe at open; mpeg-ts fills its index while
        # reading, which says nothing about keyframes ahead, so only an index present at open is used
        self._index = stream.index_entries if len(stream.index_entries) > 0 else None
        self._frames = None  # decoder iterator; None until the first read or seek
        self._pending: av.VideoFrame | None = None  # decoded, not yet walked past
        self._prev: av.VideoFrame | None = None  # last frame before the current target
        self._last_time: float | None = None  # time of the last decoded frame since the last seek
        self._decoded_until: float | None = None  # latest time decoded at all (for error messages)
        self._keyframe_times: list[float] = []  # keyframes met while decoding (index-less streams)

    def time(self, frame: av.VideoFrame) -> float:
        """Seconds from the stream's start."""
        return (frame.pts - self._start_pts) * self._time_base

    def frame_at(self, t: float) -> av.VideoFrame:
        """The decoded frame whose timestamp is nearest `t`; call with increasing `t`."""
        if self._should_seek(t):
            self._seek_before(t)
        return self._walk_to(t)

    def _should_seek(self, t: float) -> bool:
        if self._frames is None:
            pos = -self._period  # nothing decoded: frame 0 is the next one out
        elif self._last_time is None or t <= self._last_time:
            return False
        else:
            pos = self._last_time
        if self._index is not None:
            # a seek lands on the keyframe before t (index timestamps are decode times, a few frames
            # early with B-frames: close enough to choose a strategy); it pays off when it skips
            # more frames than it costs
            i = self._index.search_timestamp(self._pts(t), backward=True)
            keyframe = (self._index[i].timestamp - self._start_pts) * self._time_base if i >= 0 else 0.0
            return (keyframe - pos) / self._period > _SEEK_COST_FRAMES
        # no index: where the next keyframe is is unknown; seek only for jumps longer than the
        # longest keyframe interval met so far (so a jump surely crosses a keyframe)
        intervals = np.diff(self._keyframe_times)
        if self._frames is None or len(intervals) == 0:
            return self._frames is None and t > self._period / 2
        return t - pos > intervals.max() + _SEEK_COST_FRAMES * self._period

    def _pts(self, t: float) -> int:
        return round(t / self._time_base) + self._start_pts

    def _seek_before(self, t: float) -> None:
        # a seek should land on a keyframe at or before t; where the demuxer only estimates (mpeg-ts
        # lands up to a GOP late) or past the last packet (a truncated file) it may not: step back,
        # doubling, until it does, and at the start fall back to a byte seek
        back = 0.0
        while t - back > 0:
            if self._seek_lands(self._pts(t - back), t):
                return
            back = max(2 * back, self._period)
        if self._seek_lands(self._start_pts, t):
            return
        try:
            # byte 0 is the start of an mpeg-ts stream; mp4 refuses byte seeks and keeps the above
            self._seek_lands(0, t, unsupported_byte_offset=True)
        except av.FFmpegError:
            self._seek_lands(self._start_pts, t)

    def _seek_lands(self, offset: int, t: float, **flags: bool) -> bool:
        """Seek to `offset`; whether the first frame out is at or before t (it is kept pending)."""
        self._container.seek(offset, stream=self._stream, backward=True, **flags)
        self._frames = self._decode()
        self._pending = self._prev = self._last_time = None
        self._pending = self._next()
        return self._pending is not None and self.time(self._pending) <= t + self._period / 2

    def _next(self) -> av.VideoFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._frames is None:
            self._frames = self._decode()
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as e:
            reason = f"truncated or corrupt: decoding failed after {self._where()} ({_message(e, self._path, None)})"
            raise MediaError(self._path, reason) from e
        if frame.pts is None:
            raise MediaError(self._path, f"unreadable: frame without a timestamp after {self._where()}")
        self._last_time = self.time(frame)
        self._decoded_until = max(self._decoded_until or 0.0, self._last_time)
        if frame.key_frame and (not self._keyframe_times or self._last_time > self._keyframe_times[-1]):
            self._keyframe_times.append(self._last_time)
        return frame

    def _decode(self) -> Iterator[av.VideoFrame]:
        # container.decode(stream), with each packet counted against the limits before it is decoded
        for packet in self._container.demux(self._stream):
            self._meter.packet()
            yield from packet.decode()

    def _where(self) -> str:
        return f"{self._decoded_until or 0.0:.2f} s of {self._info.duration:.2f} s"

    def _walk_to(self, t: float) -> av.VideoFrame:
        half = self._period / 2
        while True:
            frame = self._next()
            if frame is None:
                # end of stream: the last frame serves only if it is the one nearest t
                if self._prev is not None and t - self.time(self._prev) <= half:
                    return self._prev
                raise MediaError(
                    self._path,
                    f"truncated: decoded frames end at {self._where()}, frame needed at {t:.2f} s"
                    if self._decoded_until is not None
                    else f"truncated: no frame decodes ({self._info.duration:.2f} s in the header)",
                )
            ft = self.time(frame)
            if ft < t - half:
                self._prev = frame
                continue
            # first frame at or past t - half: it or the previous one is nearest (gaps in VFR video)
            if ft > t + half and self._prev is not None and t - self.time(self._prev) <= ft - t:
                self._pending = frame
                return self._prev
            self._prev = frame
            return frame


def resize_frames(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, 3, H, W] uint8 -> [N, 3, *size] uint8, bicubic with antialias: one filter for frames and images."""
    if tuple(images.shape[-2:]) == size:
        return images
    # torch's native uint8 bicubic: within 4 levels of PIL / torchvision (qwen-vl-utils' filters) and
    # about 4x faster than either on CPU, which matters at 16-64 frames per sample
    return F.interpolate(images, size=size, mode="bicubic", antialias=True)


def _frame_tensor(frame: av.VideoFrame, size: tuple[int, int]) -> torch.Tensor:
    """A decoded frame as RGB [3, *size] uint8."""
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # [3, H, W]
    return resize_frames(rgb[None], size)[0]


def load_video(
    path: str | Path,
    sampling: FrameSampling,
    budget: PixelBudget,
    *,
    threads: int = 0,
    limits: DecodeLimits | None = None,
    file: BinaryIO | None = None,
) -> DecodedVideo:
    """Decode the sampled frames of a video, resized under `budget`; raises MediaError on any failure.

    A video over `budget.max_decode_pixels` (checked from its header) raises MediaTooLarge, undecoded.
    `threads`: decoder threads, 0 for FFmpeg's choice (one per core, frame and slice threading); 1 suits
    many DataLoader workers, where frame threading oversubscribes cores and delays every seek.
    `limits`: packets and seconds this decode may take (DecodeBudgetExceeded past them) and a cancel
    callback (DecodeCancelled). `file`: an open binary file to read instead of opening `path`, which then
    only names the video in errors (the server opens a checked file once and decodes that handle).
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    path = Path(path)
    meter = DecodeMeter(path, limits)
    meter.check()  # a request abandoned while queued stops before the file is opened
    with _failures_named(path, file), _open(path, budget.max_decode_pixels, file) as container:
        stream, info = _video_stream(path, container)
        _check_video_size(path, info, budget.max_decode_pixels)
        # the decoder refuses frames over the limit too: a bitstream may be larger than its header says
        stream.codec_context.options = {"max_pixels": str(budget.max_decode_pixels)}
        stream.codec_context.thread_count = threads
        if threads != 1:
            stream.thread_type = "AUTO"  # frame + slice threads: decoding is the cost here
        indices, window_frames = sampled_frames(path, info.total_frames, info.fps, sampling)
        try:
            size = smart_resize(
                info.height,
                info.width,
                factor=budget.factor,
                min_pixels=budget.min_pixels,
                max_pixels=budget.max_pixels,
            )
        except ValueError as e:
            raise MediaError(path, f"unusable size {info.width}x{info.height}: {e}") from e

        reader = _FrameReader(path, container, stream, info, meter)
        decoded: dict[int, tuple[torch.Tensor, float]] = {}
        for index in sorted(set(indices)):
            try:
                frame = reader.frame_at(index / info.fps)
            except av.FFmpegError as e:  # a failed seek or demux
                raise MediaError(path, f"unreadable: {_message(e, path, file)}") from e
            # resize as we go: holding 64 full-size frames of a 4k clip would take gigabytes
            decoded[index] = (_frame_tensor(frame, size), reader.time(frame))

    return DecodedVideo(
        frames=torch.stack([decoded[i][0] for i in indices]),  # [F, 3, H, W]
        frame_indices=indices,
        timestamps=[decoded[i][1] for i in indices],
        video_fps=info.fps,
        total_frames=info.total_frames,
        duration=info.duration,
        sample_fps=len(indices) / window_frames * info.fps,
        path=path,
    )


# ---------------------------------------------------------------------------------------------------
# Image


# PIL reports unknown formats, truncation and corrupt chunks as OSError / SyntaxError; anything else it
# raises still becomes a MediaError (`_media_failure`), with the exception's type in the reason
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_rgb(path: Path, max_pixels: int = MAX_DECODE_PIXELS, *, file: BinaryIO | None = None) -> Image.Image:
    """An allowed image file decoded now as RGB: EXIF-transposed, transparent pixels on white.

    Raises MediaError on any failure, MediaTooLarge (before decoding) when width x height > `max_pixels`.
    `file`: an open binary file to read instead of opening `path`, which then only names it in errors.
    """
    fmt = sniff_image(_head(path, file))
    if fmt is None:
        raise MediaError(path, f"unreadable: not a {_IMAGE_NAMES} image (by its content)")
    with _failures_named(path, file):  # what PIL raises beyond the errors it documents, named too
        try:
            with Image.open(file if file is not None else path, formats=[fmt]) as opened:
                return _rgb(path, opened, max_pixels)
        except Image.DecompressionBombError as e:
            # PIL's own process-wide check (2 x Image.MAX_IMAGE_PIXELS, at open or per frame or tile) lies above
            # the default limit, so it fires only on images refused anyway unless max_pixels is raised past it
            pil_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            limit = min(max_pixels, pil_limit)
            source = "media.max_decode_pixels" if limit == max_pixels else "PIL's 2 x Image.MAX_IMAGE_PIXELS"
            reason = (
                f"too large: an image of more than {pil_limit:,} pixels is over the decode limit of {limit:,} pixels"
            )
            raise MediaTooLarge(path, f"{reason} ({source})", limit) from e
        except IMAGE_ERRORS as e:
            raise MediaError(path, f"unreadable: {_message(e, path, file)}") from e


def _rgb(path: Path, opened: Image.Image, max_pixels: int) -> Image.Image:
    """An opened image decoded as RGB after its header size is checked."""
    width, height = opened.size  # from the header: nothing is decoded yet
    if width * height > max_pixels:
        raise _over_limit(path, "an image", width, height, max_pixels)
    opened.load()  # decode now, so a truncated or corrupt file fails here, not later
    image = ImageOps.exif_transpose(opened)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # transparent pixels become white, as in qwen-vl-utils' to_rgb, not black
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
        return image
    return image.convert("RGB")


def load_image(
    path: str | Path, budget: PixelBudget, *, limits: DecodeLimits | None = None, file: BinaryIO | None = None
) -> Image.Image:
    """Open an image as RGB, resized to its smart_resize size; raises MediaError on any failure.

    An image over `budget.max_decode_pixels` (checked from its header) raises MediaTooLarge, undecoded.
    `limits`: only its `cancelled` applies, checked before decoding (the pixel limit bounds the decode
    itself). `file`: an open binary file to read instead of opening `path`, which then only names it.
    """
    path = Path(path)
    DecodeMeter(path, limits).check()
    image = open_rgb(path, budget.max_decode_pixels, file=file)
    width, height = image.size
    try:
        h_bar, w_bar = smart_resize(
            height, width, factor=budget.factor, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
        )
    except ValueError as e:
        raise MediaError(path, f"unusable size {width}x{height}: {e}") from e
    if (w_bar, h_bar) != image.size:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # [3, H, W]; a writable copy
        image = Image.fromarray(resize_frames(pixels[None], (h_bar, w_bar))[0].permute(1, 2, 0).numpy())
    return image


# ---------------------------------------------------------------------------------------------------
# Writing (tests, synthetic data, benchmarks)


def _zero_padded(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame in yuv420p with the bytes past each row's width set to 0.

    The conversion leaves those bytes (each plane's row is padded to its alignment) uninitialised, and x264
    reads them: the same frames encoded twice gave different bytes 1 time in 30 (up to 35 levels apart after
    decoding), with one encoder thread as with several. Zeroed, the output is the same every time, and equal
    to what the encoder wrote the other 29 times.
    """
    image = frame.reformat(format="yuv420p")
    for plane in image.planes:
        rows = np.frombuffer(bytes(plane), np.uint8).reshape(plane.height, plane.line_size).copy()
        rows[:, plane.width:] = 0
        plane.update(rows.tobytes())
    return image


def write_video(path: str | Path, frames: np.ndarray, fps: float, *, codec: str = "libx264", gop: int = 12) -> None:
    """Write frames [F, H, W, 3] uint8 to an mp4 (H and W even for yuv420p)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=round(fps) if float(fps).is_integer() else fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        # crf 18 keeps synthetic colours close to the source so answers read from pixels stay true
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            image = _zero_padded(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
