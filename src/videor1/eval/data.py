"""A benchmark file as evaluation reads it: the samples to generate and the invalid rows to record as failed.

Real benchmark files carry a few rows that cannot be evaluated (a missing field, an answer that is not an
option, an id used twice). One such row must not cost the run: each becomes a failed prediction with its
reason (scored wrong, counted under `failed`), in the file's row order next to the generated ones. With
`strict`, any invalid row stops the run before the model loads, as `videor1 data validate` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from videor1.data.dataset import LoadedDataset, load_dataset
from videor1.data.schema import MEDIA_KEYS, PROBLEM_TYPES, Sample, media_field
from videor1.eval.benchmarks import MULTIPLE_CHOICE, Benchmark, Category, category_from_row, get_benchmark
from videor1.eval.config import BenchmarkRun
from videor1.rewards.answers import extract_answer

MAX_PROBLEMS_SHOWN = 10


class EvalError(Exception):
    """An evaluation that cannot start: invalid rows under --strict, or settings that clash with a resume."""


def sample_key(problem_id: int | str) -> str:
    """The resume key of a sample (JSON round-trips ints and strings alike through str)."""
    return str(problem_id)


@dataclass(frozen=True)
class InvalidRow:
    """A row that failed validation: its number, the raw row (None when not JSON) and every reason."""

    row: int
    raw: Any
    reasons: tuple[str, ...]
    key: str = ""


@dataclass
class BenchmarkData:
    """One benchmark's evaluated subset in file order: samples to generate and invalid rows to record."""

    bench: Benchmark
    samples: list[Sample] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    excluded: int = 0
    """Valid rows outside the evaluated subset (the benchmark scores multiple choice only)."""


def _reasons(dataset: LoadedDataset) -> dict[int, list[str]]:
    """Each rejected row's problems as "field: reason" lines."""
    reasons: dict[int, list[str]] = {}
    for problem in dataset.problems:
        if problem.row is not None:
            reasons.setdefault(problem.row, []).append(f"{problem.field}: {problem.reason}")
    return reasons


def _invalid_in_subset(bench: Benchmark, raw: Any) -> bool:
    """An invalid row counts unless it surely lies outside the subset (a valid non-multiple-choice type)."""
    if not bench.multiple_choice_only or not isinstance(raw, dict):
        return True
    problem_type = raw.get("problem_type")
    return not (problem_type in PROBLEM_TYPES and problem_type != MULTIPLE_CHOICE)


def _invalid_key(raw: Any, row: int, taken: set[str]) -> str:
    """A bad row's resume key: its id when usable and free, else `row:N`."""
    problem_id = raw.get("problem_id") if isinstance(raw, dict) else None
    if isinstance(problem_id, (int, str)) and not isinstance(problem_id, bool) and str(problem_id) not in taken:
        return sample_key(problem_id)
    key = f"row:{row}"
    while key in taken:
        key += "'"
    return key


def load_benchmark(run: BenchmarkRun, limit: int | None = None, *, strict: bool = False) -> BenchmarkData:
    """The benchmark's evaluated rows (the first `limit` of them): valid samples and invalid rows.

    Raises EvalError under `strict` when any row is invalid.
    """
    bench = get_benchmark(run.name)
    dataset = load_dataset(run.data, run.media_root, benchmark=True)
    reasons = _reasons(dataset)
    # predictions resume by id as text: 1 and "1" would be one sample, so the later one is invalid
    first_row: dict[str, int] = {}
    samples: list[Sample] = []
    for sample in dataset.samples:
        key = sample_key(sample.problem_id)
        if key in first_row:
            reasons[sample.row] = [f"problem_id: {sample.problem_id!r} is row {first_row[key]}'s id as text"]
            dataset.rejected[sample.row] = sample.to_row()
            continue
        first_row[key] = sample.row
        samples.append(sample)
    if strict and reasons:
        lines = [f"row {row}: {reason}" for row in sorted(reasons) for reason in reasons[row]]
        shown = "\n".join(lines[:MAX_PROBLEMS_SHOWN])
        more = len(lines) - MAX_PROBLEMS_SHOWN
        raise EvalError(
            f"{run.data}: {len(reasons)} invalid rows (--strict; check with `videor1 data validate --benchmark`):\n"
            + shown
            + (f"\n… and {more} more" if more > 0 else "")
        )
    data = BenchmarkData(bench)
    items: list[tuple[int, Sample | InvalidRow]] = []
    for sample in samples:
        if bench.includes(sample):
            items.append((sample.row, sample))
        else:
            data.excluded += 1
    taken = set(first_row)
    for row in sorted(reasons):
        raw = dataset.rejected.get(row)
        if _invalid_in_subset(bench, raw):
            key = _invalid_key(raw, row, taken)
            taken.add(key)
            items.append((row, InvalidRow(row, raw, tuple(reasons[row]), key)))
    items.sort(key=lambda item: item[0])
    for _, item in items[:limit] if limit is not None else items:
        (data.samples if isinstance(item, Sample) else data.invalid).append(item)
    return data


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def row_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """What a raw row, valid or not, gives its prediction record: media path, types, options and truth."""
    key = media_field(dict(raw))
    options, solution = raw.get("options"), raw.get("solution")
    return {
        "path": _text_or_none(raw.get(key)) if key in MEDIA_KEYS else None,
        "data_type": _text_or_none(raw.get("data_type")),
        "problem_type": _text_or_none(raw.get("problem_type")),
        "options": options if isinstance(options, list) and all(isinstance(o, str) for o in options) else [],
        "truth": (extract_answer(solution) or "") if isinstance(solution, str) else "",
    }


def invalid_record(invalid: InvalidRow, category: Category) -> dict[str, Any]:
    """The predictions.jsonl line of an invalid row: what the row gives of the record, and why it failed."""
    raw = invalid.raw if isinstance(invalid.raw, dict) else {}
    return {
        "id": invalid.key, "row": invalid.row, **row_fields(raw),
        "category": category.name, "category_source": category.source,
        "output": "", "error": "invalid row: " + "; ".join(invalid.reasons), "error_kind": "row",
    }


def row_category(bench: Benchmark, invalid: InvalidRow, field_name: str | None) -> Category:
    """An invalid row's category, from whatever columns it has."""
    return category_from_row(bench, invalid.raw if isinstance(invalid.raw, dict) else {}, field_name)
