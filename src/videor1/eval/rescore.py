"""`videor1 eval score`: rescore a file of outputs without a model, and file the result as a table row.

The file is either predictions.jsonl from `videor1 eval` or Video-R1's eval_bench.py output (see
`videor1.eval.video_r1_outputs`); either way every record is scored again with the benchmark's official metric.
With an output folder the benchmark's results land in `<out>/<benchmark>/` and the folder's combined
results.json gains (or updates) that benchmark, so `eval table` reads score folders like eval runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videor1.atomic import atomic_write_lines
from videor1.data.schema import PROBLEM_TYPES
from videor1.eval.benchmarks import MULTIPLE_CHOICE, Benchmark
from videor1.eval.report import RESULTS_JSON, read_results, write_benchmark, write_combined
from videor1.eval.scoring import rescore, summarize
from videor1.eval.video_r1_outputs import OutputFileError, compare, original_record, read_scored_file

PREDICTIONS = "predictions.jsonl"
RUN_CONFIG = "config.yaml"


@dataclass
class Rescored:
    """A rescored file: the benchmark's summary (with the comparison for an original file) and its records."""

    summary: dict[str, Any]
    records: list[dict[str, Any]]
    excluded: int


def _outside_subset(bench: Benchmark, record: dict[str, Any]) -> bool:
    return bench.multiple_choice_only and record["problem_type"] in PROBLEM_TYPES and (
        record["problem_type"] != MULTIPLE_CHOICE
    )


def rescore_file(path: str | Path, bench: Benchmark, category_field: str | None = None) -> Rescored:
    """Score every record of predictions.jsonl or an eval_bench.py output with the benchmark's metric."""
    scored = read_scored_file(path)
    if scored.kind == "predictions":
        records = []
        for number, row in scored.rows:
            try:
                records.append(rescore(bench, row))
            except KeyError as exc:
                raise OutputFileError(f"{path}: row {number}: missing field {exc}") from exc
        return Rescored(summarize(bench, records), records, 0)
    converted = [rescore(bench, original_record(bench, number, row, category_field)) for number, row in scored.rows]
    excluded = [r for r in converted if _outside_subset(bench, r)]
    records = [r for r in converted if not _outside_subset(bench, r)]
    summary = summarize(bench, records)
    summary["original"] = compare(bench, records, summary, scored.final_acc, excluded)
    return Rescored(summary, records, len(excluded))


def write_rescored(out: Path, source: Path, rescored: Rescored, *, label: str | None = None) -> Path:
    """Write the benchmark's results and records under out/<benchmark>/ and update out/results.json."""
    key = rescored.summary["benchmark"]
    bench_dir = out / key
    predictions = bench_dir / PREDICTIONS
    same = predictions.exists() and predictions.resolve() == source.resolve()
    if (bench_dir / RUN_CONFIG).exists() and predictions.exists() and not same:
        raise ValueError(f"{bench_dir} holds the predictions of an eval run; use another --out")
    write_benchmark(bench_dir, rescored.summary)
    if not same:
        atomic_write_lines(predictions, (json.dumps(r, ensure_ascii=False) + "\n" for r in rescored.records))
    combined = read_results(out) if (out / RESULTS_JSON).exists() else {}
    if "benchmarks" not in combined:
        # a folder from before score folders were combined holds one benchmark's summary: keep it
        earlier = {combined["benchmark"]: combined} if "benchmark" in combined else {}
        combined = {"model": None, "label": out.resolve().name, "frames": "–", "benchmarks": earlier, "excluded": {}}
    combined["label"] = label or combined["label"]
    combined["benchmarks"][key] = rescored.summary
    combined.setdefault("excluded", {})[key] = rescored.excluded
    write_combined(out, combined)
    return out / RESULTS_JSON
