"""Time `load_video` against a decode-everything baseline.

Writes a synthetic clip of moving content (default 30 s, 448x448, 30 fps) once per GOP size, then
reports the median time of sampling 8 and 16 frames with `load_video` (FFmpeg's thread count and
single-threaded), the same reader forced to seek at every keyframe gap or never to seek after the
first target, and a naive baseline that decodes every frame and keeps the sampled ones. Everything
is resized under the same budget.

    python benchmarks/media_decode.py --seconds 30 --size 448 --gops 250 30 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import av
import numpy as np
import torch

from videor1.data import media
from videor1.data.media import load_video, write_video
from videor1.data.sampling import FrameSampling, PixelBudget, sample_frame_indices, smart_resize


def moving_clip(seconds: float, size: int, fps: int, seed: int = 0) -> np.ndarray:
    """[F, size, size, 3] uint8: a drifting textured background with bright squares crossing it."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
    # smooth the noise so it compresses like camera footage rather than static
    smooth = (texture.astype(np.uint16) + np.roll(texture, 1, 0) + np.roll(texture, 1, 1)) // 3
    texture = smooth.astype(np.uint8)
    frames = np.empty((round(seconds * fps), size, size, 3), dtype=np.uint8)
    for i in range(len(frames)):
        dx, dy = (2 * i) % size, i % size
        frames[i] = texture[dy : dy + size, dx : dx + size]
        for k in range(3):
            x = (i * (3 + k) + 97 * k) % (size - 40)
            frames[i, 40 * k + 20 : 40 * k + 60, x : x + 40] = 255
    return frames


def decode_everything(path: Path, sampling: FrameSampling, budget: PixelBudget) -> torch.Tensor:
    """Baseline: decode every frame in order, keep the sampled ones, resize them the same way."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        total, fps = stream.frames, float(stream.average_rate)
        wanted = sample_frame_indices(total, fps, sampling)
        height, width = smart_resize(
            stream.codec_context.height,
            stream.codec_context.width,
            factor=budget.factor,
            min_pixels=budget.min_pixels,
            max_pixels=budget.max_pixels,
        )
        kept = {}
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                kept[i] = media._frame_tensor(frame, (height, width))
    return torch.stack([kept[i] for i in wanted])


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 30], help="keyframe intervals to test")
    parser.add_argument("--nframes", type=int, nargs="+", default=[8, 16], help="frames to sample")
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="load_video(threads=...) to test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-pixels", type=int, default=128 * 28 * 28, help="per-frame budget (training)")
    parser.add_argument("--min-pixels", type=int, default=4 * 28 * 28)
    args = parser.parse_args()

    budget = PixelBudget(min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    frames = moving_clip(args.seconds, args.size, args.fps)
    print(f"clip: {len(frames)} frames {args.size}x{args.size} @ {args.fps} fps, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for gop in args.gops:
            path = Path(tmp) / f"gop{gop}.mp4"
            write_video(path, frames, args.fps, gop=gop)
            print(f"\nGOP {gop} ({path.stat().st_size / 1e6:.1f} MB); median of {args.repeats}")
            for n in args.nframes:
                for label, fn in _cases(path, FrameSampling(nframes=n), budget, args.threads).items():
                    print(f"  {n:3d} frames  {label:44s} {median_ms(fn, args.repeats):8.1f} ms")


def _cases(
    path: Path, sampling: FrameSampling, budget: PixelBudget, threads: list[int]
) -> dict[str, Callable[[], object]]:
    """The timed calls for one clip and frame count."""
    cases = {}
    for t in threads:
        cases[f"load_video threads={t}"] = partial(load_video, path, sampling, budget, threads=t)
        # the same reader with its seek rule forced one way, then the other
        cases[f"  always seek across a keyframe, threads={t}"] = partial(
            _with_seek_cost, 0, partial(load_video, path, sampling, budget, threads=t)
        )
        cases[f"  never seek after the first, threads={t}"] = partial(
            _with_seek_cost, 10**9, partial(load_video, path, sampling, budget, threads=t)
        )
    cases["decode everything (threads=auto)"] = partial(decode_everything, path, sampling, budget)
    return cases


def _with_seek_cost(cost: int, fn: Callable[[], object]) -> object:
    saved = media._SEEK_COST_FRAMES
    media._SEEK_COST_FRAMES = cost
    try:
        return fn()
    finally:
        media._SEEK_COST_FRAMES = saved


if __name__ == "__main__":
    main()
