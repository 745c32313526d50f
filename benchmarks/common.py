"""What the benchmark scripts share: the 32M-parameter model shape and a work folder holding synthetic data."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
