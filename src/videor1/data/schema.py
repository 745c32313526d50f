"""The Video-R1 row schema: a typed `Sample` and the validation of raw rows.

Video-R1-260k (RL) and Video-R1-COT-165k (SFT) rows carry `problem_id, problem, data_type, problem_type,
options, process, solution, path, data_source`. Every way a row can be wrong is reported as a `Problem`
naming the row and the field, so a 260k-row file is fixed in one pass instead of one crash at a time.
Columns beyond the schema (benchmark categories, synthetic task names) are kept in `Sample.extra`.

Variants that published benchmark files use are read as the same schema: the media path under `path`,
`video` or `image` (the first that names a file); a leading `/` read like `./`, relative to the media root (never
an absolute filesystem path: the root confines every file); `data_type: frame` (a folder of image frames)
read as a video. Benchmark files (`benchmark=True`) may also leave an option's text empty after its letter
("A. ", the content is in the video), which training data may not.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from videor1.rewards.answers import extract_answer, parse_choice, parse_number

DATA_TYPES: tuple[str, ...] = ("image", "video")
# A folder of image frames is a video with another storage: "frame" rows become video samples.
DATA_TYPE_ALIASES: dict[str, str] = {"frame": "video"}
MEDIA_KEYS: tuple[str, ...] = ("path", "video", "image")
PROBLEM_TYPES: tuple[str, ...] = ("multiple choice", "numerical", "OCR", "free-form", "regression")
SCHEMA_FIELDS: tuple[str, ...] = (
    "problem_id", "problem", "data_type", "problem_type", "options", "process", "solution", "path", "data_source"
)
_REQUIRED: tuple[str, ...] = ("problem_id", "problem", "data_type", "problem_type", "solution")
_OPTION = re.compile(r"^\s*\(?([A-Z])[.):]\s*\S")
_BENCHMARK_OPTION = re.compile(r"^\s*\(?([A-Z])[.):]")
_PROCESS = re.compile(r"^\s*<think>(.*)</think>\s*$", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a row (`row` >= 1) or with a media file (`row` is None)."""

    source: str
    row: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        if self.row is None:
            return f"{self.source}: {self.reason}"
        return f"row {self.row}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class Sample:
    """One validated Video-R1 row with its media path resolved against the media root."""

    problem_id: int | str
    problem: str
    data_type: str
    problem_type: str
    options: list[str]
    solution: str
    path: str
    media_path: Path
    data_source: str = ""
    process: str = ""
    row: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The ground-truth answer inside the solution's `<answer>` tags."""
        return extract_answer(self.solution) or ""

    @property
    def is_video(self) -> bool:
        """True for video rows."""
        return self.data_type == "video"

    @property
    def frame_fps(self) -> float | None:
        """The row's `fps` column: the frame rate of a folder of frames, None when absent."""
        fps = self.extra.get("fps")
        return float(fps) if _positive_number(fps) else None

    def to_row(self) -> dict[str, Any]:
        """The row in the Video-R1 JSON schema (media path as given, not resolved)."""
        row = {
            "problem_id": self.problem_id, "problem": self.problem, "data_type": self.data_type,
            "problem_type": self.problem_type, "options": list(self.options), "process": self.process,
            "solution": self.solution, "path": self.path, "data_source": self.data_source,
        }
        return {**row, **self.extra}


def media_field(row: dict[str, Any]) -> str | None:
    """The column holding a row's media path: the first of path, video, image that names a file.

    With none naming a file, the first present (to report it), else None.
    """
    named = [key for key in MEDIA_KEYS if isinstance(row.get(key), str) and row[key].strip()]
    return next(iter(named), next((key for key in MEDIA_KEYS if key in row), None))


def resolve_media_path(path: str, media_root: Path) -> Path:
    """Resolve a row's media path under media_root; ValueError when it would escape the root.

    A leading `/` means the media root, as benchmark files write it ("/MMVU/videos/0.mp4"), so no row can
    name a file outside the root. The check is lexical (after normalising `..` and `.`): symlinks the user
    placed inside the root are trusted, `../` traversal and drive letters are refused.
    """
    if not path.strip():
        raise ValueError("empty path")
    if re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"drive path {path!r} is not allowed; paths are relative to the media root")
    pure = PurePosixPath(path.replace("\\", "/").lstrip("/") or ".")
    normal = os.path.normpath(str(pure))
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"path {path!r} escapes the media root")
    if normal == ".":
        raise ValueError(f"path {path!r} names the media root itself, not a file or a folder in it")
    return Path(media_root) / normal


def _check_options(options: Any, answer: str | None, *, benchmark: bool) -> list[tuple[str, str]]:
    """Problems of a multiple-choice row's options and answer letter, as (field, reason)."""
    if not isinstance(options, list) or not options:
        return [("options", "multiple choice needs a non-empty list of options")]
    if not all(isinstance(o, str) for o in options):
        return [("options", "every option must be a string")]
    letters = []
    for i, option in enumerate(options):
        match = (_BENCHMARK_OPTION if benchmark else _OPTION).match(option)
        if not match:
            return [("options", f"option {i + 1} {option[:40]!r} is not lettered like 'A. text'")]
        letters.append(match.group(1))
    expected = [chr(ord("A") + i) for i in range(len(options))]
    if letters != expected:
        return [("options", f"option letters {''.join(letters)} are not {''.join(expected)} in order")]
    if answer is not None:
        # the reward's own parser, so a row validates exactly when its answer can be scored
        letter = parse_choice(answer)
        if letter is None:
            return [("solution", f"answer {answer[:40]!r} is not an option letter")]
        if letter not in letters:
            return [("solution", f"answer {letter} is not among the options {''.join(letters)}")]
    return []


def _check_answer(problem_type: str, answer: str) -> list[tuple[str, str]]:
    """Problems of a non-multiple-choice answer, as (field, reason)."""
    if problem_type in ("numerical", "regression") and parse_number(answer) is None:
        return [("solution", f"{problem_type} answer {answer[:40]!r} is not a number")]
    return []


def row_problems(row: Any, *, require_process: bool = False, benchmark: bool = False) -> list[tuple[str, str]]:
    """Everything wrong with one raw row, as (field, reason) pairs; empty when the row is valid.

    `benchmark`: accept what evaluation files contain and training data may not (empty option text).
    """
    if not isinstance(row, dict):
        return [("row", f"expected a JSON object, got {type(row).__name__}")]
    found: list[tuple[str, str]] = [(name, "missing") for name in _REQUIRED if name not in row]
    media = media_field(row)
    if media is None:
        found.append(("path", "missing (no path, video or image column)"))
    for name in ("problem", "solution", media):
        if name in row and not (isinstance(row[name], str) and row[name].strip()):
            found.append((name, "must be a non-empty string"))
    if "fps" in row and not _positive_number(row["fps"]):
        found.append(("fps", f"must be a positive number (frames per second of a frame folder), got {row['fps']!r}"))
    if "problem_id" in row and (isinstance(row["problem_id"], bool) or not isinstance(row["problem_id"], (int, str))):
        found.append(("problem_id", "must be an integer or a string"))
    if "data_source" in row and not isinstance(row["data_source"], str):
        found.append(("data_source", "must be a string"))
    data_type, problem_type = row.get("data_type"), row.get("problem_type")
    if "data_type" in row and data_type not in (*DATA_TYPES, *DATA_TYPE_ALIASES):
        expected = ", ".join((*DATA_TYPES, *DATA_TYPE_ALIASES))
        found.append(("data_type", f"unknown {data_type!r}; expected one of {expected}"))
    if "problem_type" in row and problem_type not in PROBLEM_TYPES:
        found.append(("problem_type", f"unknown {problem_type!r}; expected one of {', '.join(PROBLEM_TYPES)}"))

    answer = None
    if isinstance(row.get("solution"), str) and row["solution"].strip():
        answer = extract_answer(row["solution"])
        if answer is None:
            found.append(("solution", "no <answer>...</answer> in the solution"))
        elif not answer:
            found.append(("solution", "empty <answer></answer>"))
            answer = None
    if problem_type == "multiple choice":
        found += _check_options(row.get("options"), answer, benchmark=benchmark)
    elif problem_type in PROBLEM_TYPES:
        options = row.get("options", [])
        if options is not None and not isinstance(options, list):
            found.append(("options", "must be a list"))
        if answer is not None:
            found += _check_answer(problem_type, answer)

    process = row.get("process")
    if process is None or (isinstance(process, str) and not process.strip()):
        if require_process:
            found.append(("process", "missing; SFT data needs a <think>...</think> rationale"))
    elif not isinstance(process, str):
        found.append(("process", "must be a string"))
    else:
        match = _PROCESS.match(process)
        if not match:
            found.append(("process", "must be one <think>...</think> block"))
        elif not match.group(1).strip() or "<think>" in match.group(1) or "</think>" in match.group(1):
            found.append(("process", "the <think> block is empty or nested"))
    return found


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def parse_row(row: dict[str, Any], *, row_number: int, media_root: Path) -> Sample:
    """Build a Sample from a row that `row_problems` accepted; ValueError if its path escapes the root."""
    key = media_field(row)
    path = row[key]
    media_path = resolve_media_path(path, media_root)
    extra = {k: v for k, v in row.items() if k not in SCHEMA_FIELDS and k != key}
    return Sample(
        problem_id=row["problem_id"],
        problem=row["problem"],
        data_type=DATA_TYPE_ALIASES.get(row["data_type"], row["data_type"]),
        problem_type=row["problem_type"],
        options=list(row.get("options") or []),
        solution=row["solution"],
        path=path,
        media_path=media_path,
        data_source=row.get("data_source") or "",
        process=row.get("process") or "",
        row=row_number,
        extra=extra,
    )
