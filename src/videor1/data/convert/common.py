"""What the benchmark converters share: the evaluation row, option letters, answers, media paths, issues.

A converter never drops or repairs a row: a row whose media file is missing or whose answer is not among its
options is written as the release has it (the answer marked `not among the options: …`, so validation and
evaluation record it as a failed row) and reported as an `Issue` naming the file, the row and the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videor1.data.dataset import DatasetError, iter_rows
from videor1.data.schema import resolve_media_path

_LETTERED = re.compile(r"^\s*\(?([A-Z])[.):]\s?(.*)$", re.DOTALL)


class ConvertError(Exception):
    """A benchmark folder without the release's files (bad input: nothing to convert)."""


@dataclass(frozen=True)
class Issue:
    """One problem found while converting: a file, a row (from 1) or None, a field and why."""

    source: str
    row: int | None
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}: row {self.row}" if self.row is not None else self.source
        return f"{where}: {self.field}: {self.reason}"


@dataclass
class Conversion:
    """The evaluation rows of one benchmark and everything worth telling about them."""

    benchmark: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    """The release files read, relative to the benchmark folder."""
    skipped: list[str] = field(default_factory=list)
    """Release files deliberately not converted, each with the reason."""
    media_found: int = 0
    media_missing: int = 0

    def issue(self, source: str, row: int | None, name: str, reason: str) -> None:
        """Record one problem."""
        self.issues.append(Issue(source, row, name, reason))

    def media(self, root: Path, rel: str, source: str, row: int, *, folder: bool = False) -> str:
        """The row's `path` ("./" + rel, Video-R1's form); counts it found or missing, reporting a missing one."""
        try:
            path = resolve_media_path(rel, root)
        except ValueError as exc:  # a release naming ../../etc/passwd gets no look outside its folder
            self.media_missing += 1
            self.issue(source, row, "path", str(exc))
            return "./" + rel
        if path.is_dir() if folder else path.is_file():
            self.media_found += 1
        else:
            self.media_missing += 1
            self.issue(source, row, "path", f"missing {'frame folder' if folder else 'file'} {rel} after unpacking")
        return "./" + rel


def read_native(root: Path, rel: str, conversion: Conversion) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, row) of a release file (JSON list, JSONL or parquet); a non-object row is an issue."""
    conversion.sources.append(rel)
    try:
        for number, row in iter_rows(root / rel):
            if isinstance(row, dict):
                yield number, row
            else:
                conversion.issue(rel, number, "row", f"expected an object, got {type(row).__name__}")
    except DatasetError as exc:
        raise ConvertError(str(exc)) from exc


def first_existing(root: Path, candidates: list[str], what: str) -> str:
    """The first of `candidates` (paths relative to root) that is a file; ConvertError naming them all."""
    for rel in candidates:
        if (root / rel).is_file():
            return rel
    raise ConvertError(f"{root}: no {what} ({', '.join(candidates)})")


def letters(count: int) -> list[str]:
    """A, B, C… for `count` options."""
    return [chr(ord("A") + i) for i in range(count)]


def lettered(options: list[str]) -> list[str]:
    """Options in Video-R1's form "A. text"; letters already there in order are kept, not doubled."""
    expected = letters(len(options))
    found = [_LETTERED.match(option) for option in options]
    if all(m and m.group(1) == letter for m, letter in zip(found, expected, strict=True)):
        texts = [m.group(2).strip() for m in found if m]
    else:
        texts = [option.strip() for option in options]
    # an empty text stays "A. ": VideoMMMU's options whose content is in the video
    return [f"{letter}. {text}" for letter, text in zip(expected, texts, strict=True)]


def option_text(option: str) -> str:
    """The text of a lettered option ("B. a cat" -> "a cat")."""
    match = _LETTERED.match(option)
    return match.group(2).strip() if match else option.strip()


def is_number(text: str) -> bool:
    """Whether the whole text is one finite number ("42", "3.5", "1,000"), not a phrase holding one."""
    try:
        return math.isfinite(float(text.replace(",", "")))
    except ValueError:
        return False


def solution(answer: str) -> str:
    """Video-R1's solution field."""
    return f"<answer>{answer}</answer>"


def choice_solution(
    conversion: Conversion, source: str, row: int, answer: Any, options: list[str], *, by_text: bool = False
) -> str:
    """The solution of a multiple-choice row: the answer's letter; an issue when it is not among the options.

    `answer` is a letter ("B") or a lettered option ("B. a cat"); with `by_text` an option's text first.
    """
    known = letters(len(options))
    texts = [option_text(option) for option in options]
    text = str(answer).strip() if answer is not None else ""
    letter = None
    if by_text and text in texts:
        letter = known[texts.index(text)]
    elif text in known:
        letter = text
    elif (match := _LETTERED.match(text)) and match.group(1) in known:
        # "B. a cat" must name option B's own text, else the release contradicts itself
        if match.group(2).strip() in ("", texts[known.index(match.group(1))]):
            letter = match.group(1)
    if letter is None:
        conversion.issue(source, row, "answer", f"{text[:60]!r} is not among the options {''.join(known)}")
        return solution(f"not among the options: {text}")
    return solution(letter)


def eval_row(
    problem_id: int | str,
    problem: str,
    problem_type: str,
    options: list[str],
    answer: str,
    path: str,
    data_source: str,
    **columns: Any,
) -> dict[str, Any]:
    """A row of the project's evaluation schema (Video-R1's) with the benchmark's own columns after it."""
    row = {
        "problem_id": problem_id,
        "problem": problem,
        "data_type": "video",
        "problem_type": problem_type,
        "options": options,
        "solution": answer,
        "path": path,
        "data_source": data_source,
    }
    return {**row, **columns}
