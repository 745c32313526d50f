"""Loading Video-R1-format datasets: JSON lists, JSONL, parquet, or a `datasets` folder saved to disk.

Loading never drops a row silently: each bad row becomes a `Problem` in `LoadedDataset.problems`, and the
caller decides whether to stop (validation, evaluation) or to go on with the good rows and report the
count (training).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videor1.data.schema import Problem, Sample, media_field, parse_row, resolve_media_path, row_problems


class DatasetError(Exception):
    """A dataset file that cannot be read at all (missing, not JSON, wrong top-level shape)."""


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (row number from 1, raw row) from .json, .jsonl, .parquet or a `datasets` folder."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        yield from _iter_hf_dataset(path)
    elif path.suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path)
    else:
        yield from _iter_json(path)


def _iter_json(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    yield from enumerate(data, start=1)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    # Rows are numbered by line so that "row N" is the line an editor shows; lines are read as bytes so a
    # line that is not UTF-8 is that row's problem, not the end of the file
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, _Unparsable(f"not UTF-8 text (byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, _Unparsable(str(exc))


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DatasetError(f"{path}: not a readable parquet file: {exc}") from exc
    yield from enumerate(table.to_pylist(), start=1)


def _iter_hf_dataset(path: Path) -> Iterator[tuple[int, Any]]:
    from datasets import load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as exc:  # datasets raises FileNotFoundError or its own errors for a non-dataset folder
        raise DatasetError(f"{path}: not a dataset saved with save_to_disk: {exc}") from exc
    if hasattr(data, "keys"):
        raise DatasetError(f"{path}: holds a DatasetDict ({', '.join(data.keys())}); point at one split folder")
    for number, row in enumerate(data, start=1):
        yield number, dict(row)


@dataclass(frozen=True)
class _Unparsable:
    error: str


@dataclass
class LoadedDataset:
    """The valid samples of a file and every problem found in the others."""

    source: Path
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    num_rows: int = 0
    rejected: dict[int, Any] = field(default_factory=dict)
    """The raw rejected rows by row number (for evaluation, which records each one)."""

    @property
    def bad_rows(self) -> int:
        """How many rows were rejected."""
        return len({p.row for p in self.problems if p.row is not None})

    def counts(self, key: str) -> Counter[str]:
        """Valid samples counted by a field: data_type, problem_type, data_source, or an extra column."""
        return Counter(str(getattr(s, key, None) if hasattr(s, key) else s.extra.get(key)) for s in self.samples)


def load_dataset(
    path: str | Path, media_root: str | Path, *, require_process: bool = False, benchmark: bool = False
) -> LoadedDataset:
    """Read and validate every row; valid rows become Samples, the others Problems naming row and field.

    `benchmark`: validate as an evaluation file (see `row_problems`).
    """
    path, media_root = Path(path), Path(media_root)
    loaded = LoadedDataset(source=path)
    first_row_of: dict[Any, int] = {}
    for number, row in iter_rows(path):
        loaded.num_rows += 1
        if isinstance(row, _Unparsable):
            loaded.problems.append(Problem(str(path), number, "row", f"not valid JSON: {row.error}"))
            loaded.rejected[number] = None
            continue
        found = row_problems(row, require_process=require_process, benchmark=benchmark)
        if isinstance(row, dict) and "problem_id" in row and isinstance(row["problem_id"], (int, str)):
            key = row["problem_id"]
            if key in first_row_of:
                found.append(("problem_id", f"duplicate of row {first_row_of[key]}"))
            else:
                first_row_of[key] = number
        key = media_field(row) if isinstance(row, dict) else None
        if key is not None and isinstance(row[key], str) and row[key].strip():
            try:
                resolve_media_path(row[key], media_root)
            except ValueError as exc:
                found.append((key, str(exc)))
        if not found:
            loaded.samples.append(parse_row(row, row_number=number, media_root=media_root))
        else:
            loaded.rejected[number] = row
        loaded.problems.extend(Problem(str(path), number, name, reason) for name, reason in found)
    if loaded.num_rows == 0:
        # an empty file validating as "OK: 0 bad rows" hides a failed export or a wrong path
        raise DatasetError(f"{path}: no rows")
    return loaded
