"""Loading Video-R1-format datasets: JSON lists, JSONL, parquet, or a `datasets` folder saved to disk.

Loading never drops a row silently: each bad row becomes a `Problem` in `LoadedDataset.problems`, and the
caller decides whether to stop (validation, evaluation) or to go on with the good rows and report the
count (training).

Every file a user names is read through `open_regular_file` and every JSON text parsed with `loads_json`:
a FIFO or a device is refused before it is read (reading one waits for a writer, or never ends), and JSON
nested deeper than `MAX_JSON_DEPTH` is refused while parsing rather than ending in a RecursionError here or
in whatever later walks the row (json.dumps, copy.deepcopy).
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from videor1.data.schema import Problem, Sample, media_field, parse_row, resolve_media_path, row_problems

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a user's JSON; Video-R1 rows need 3 (list, row, options)."""

# opening a FIFO for reading blocks until a writer opens it; O_NONBLOCK returns at once so the check can run
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


class DatasetError(Exception):
    """A dataset file that cannot be read at all (missing, not JSON, wrong top-level shape)."""


class JSONDepthError(ValueError):
    """JSON nested deeper than `MAX_JSON_DEPTH` levels."""


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        raise DatasetError(f"{path}: not a regular file ({kind})")


def open_regular_file(path: str | Path) -> IO[bytes]:
    """`path` opened for binary reading; DatasetError when it is not a regular file (a FIFO, a device, a folder).

    The path is checked before it is opened, then the opened descriptor again: a path swapped for a FIFO in
    between is refused too, and the non-blocking open cannot wait for a writer.
    """
    path = Path(path)
    _require_regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    try:
        _require_regular(path, os.fstat(fd).st_mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _too_deep(value: dict | list, limit: int) -> bool:
    """True when arrays and objects nest deeper than `limit`; level by level, so any depth is safe to check."""
    level = [value]  # the containers at depth 1, then 2, …
    for _ in range(limit):
        level = [
            child for item in level for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return False
    return True


def loads_json(text: str | bytes) -> Any:
    """json.loads for user input: JSONDecodeError when not JSON, JSONDepthError when nested too deep.

    The C parser recurses once per level and stops with a RecursionError near Python's recursion limit;
    a value just under that limit parses but breaks the first recursive walk over it, so the depth is
    bounded well below.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONDepthError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if isinstance(value, (dict, list)) and _too_deep(value, MAX_JSON_DEPTH):
        raise JSONDepthError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def read_json(path: str | Path) -> Any:
    """The JSON value of a user's file; DatasetError naming the file for anything `loads_json` or the file refuses."""
    with open_regular_file(path) as file:
        data = file.read()
    try:
        return loads_json(data.decode("utf-8"))
    except JSONDepthError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc


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
    data = read_json(path)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    yield from enumerate(data, start=1)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    # Rows are numbered by line so that "row N" is the line an editor shows; lines are read as bytes so a
    # line that is not UTF-8 is that row's problem, not the end of the file
    with open_regular_file(path) as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, _Unparsable(f"not valid JSON: not UTF-8 text (byte {exc.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                yield number, loads_json(line)
            except JSONDepthError as exc:
                yield number, _Unparsable(str(exc))
            except json.JSONDecodeError as exc:
                yield number, _Unparsable(f"not valid JSON: {exc}")


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        with open_regular_file(path) as file:
            table = pq.read_table(file)
    except DatasetError:
        raise
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
    """A JSONL line that is no JSON value; `error` is the row's whole reason."""

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
            loaded.problems.append(Problem(str(path), number, "row", row.error))
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
