"""What the benchmark scripts share: the 32M-parameter model shape, a work folder holding synthetic data,
made-up videos of any length and the process's memory."""

from __future__ import annotations

import resource
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from videor1.data.media import DecodedVideo
from videor1.data.synthetic import generate
from videor1.models.tiny import TinySpec

# 32M parameters: 8 layers of 512 with a 4k vocabulary (the vision tower stays small)
SPEC_32M = TinySpec(hidden_size=512, intermediate_size=2048, num_layers=8, num_heads=8, num_kv_heads=4,
                    vocab_size=4096)


@contextmanager
def work_folder(given: Path | None) -> Iterator[Path]:
    """`given` (kept) or a temporary folder (removed after), with the synthetic dataset under synth/."""
    with tempfile.TemporaryDirectory() as tmp:
        work = given or Path(tmp)
        if not (work / "synth" / "train.json").exists():
            generate(work / "synth", n=32, seed=0)
        yield work


def made_up_video(frames: int, side: int, path: str, generator: torch.Generator | None = None) -> DecodedVideo:
    """`frames` random frames of side x side at 2 fps: for costs, where only the frames' count and size matter."""
    pixels = torch.randint(0, 256, (frames, 3, side, side), dtype=torch.uint8, generator=generator)
    return DecodedVideo(frames=pixels, frame_indices=list(range(frames)), timestamps=[i / 2 for i in range(frames)],
                        video_fps=2.0, total_frames=frames, duration=frames / 2, sample_fps=2.0, path=path)


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
