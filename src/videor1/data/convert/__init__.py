"""Converters from each benchmark's own release to the project's evaluation rows, one module per benchmark.

Each takes the benchmark's folder (the hub repo's files, archives unpacked next to them) and returns a
`Conversion`: the rows in Video-R1's schema (`problem_id, problem, data_type, problem_type, options,
solution, path, data_source`) with the benchmark's category column kept, and every issue found. The
release layouts and the sources of each fact are in the module docstrings; docs/evaluation.md has the field
mapping table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from videor1.data.convert import mmvu, mvbench, tempcompass, videomme, videommmu, vsibench
from videor1.data.convert.common import Conversion, ConvertError, Issue

CONVERTERS: dict[str, Callable[[Path], Conversion]] = {
    module.NAME: module.convert for module in (vsibench, videommmu, mmvu, mvbench, tempcompass, videomme)
}
"""Benchmark key (as in `videor1.eval.benchmarks.BENCHMARKS` and the folder `fetch` writes) -> converter."""

__all__ = ["CONVERTERS", "Conversion", "ConvertError", "Issue"]
