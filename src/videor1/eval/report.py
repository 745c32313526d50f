"""Evaluation reports: results.json and Markdown, per benchmark and combined in Video-R1's Table 1 layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videor1.eval.metrics import TABLE1_COLUMNS, percent, table1_markdown
from videor1.runlog import write_json

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def benchmark_markdown(summary: Mapping[str, Any]) -> str:
    """One benchmark's breakdown: a row per category with its metric, count and score, then the overall."""
    lines = [
        f"### {summary['title']}",
        "",
        f"overall {percent(summary['overall'])} ({summary['aggregation'].replace('_', ' ')}), "
        f"{summary['count']} samples, {summary['failed']} failed, {summary['unparsed']} without an answer, "
        f"format {percent(summary['format_rate'])}",
        "",
        "| category | metric | samples | score |",
        "|---|---|---:|---:|",
    ]
    for category, row in summary["categories"].items():
        lines.append(f"| {category} | {row['metric']} | {row['count']} | {percent(row['score'])} |")
    merged = {task: score for task, score in summary["tasks"].items() if task not in summary["categories"]}
    for task, score in merged.items():
        lines.append(f"| {task} (levels merged) | accuracy | | {percent(score)} |")
    return "\n".join(lines) + "\n"


def combined_markdown(results: Mapping[str, Any]) -> str:
    """The run's Markdown: Table 1 (one row for this model) and each benchmark's breakdown."""
    label = results["label"]
    rows = {label: {key: summary["overall"] for key, summary in results["benchmarks"].items()}}
    parts = [f"## {label}", "", table1_markdown(rows, {label: results.get("frames", "–")})]
    ordered = [key for key, _ in TABLE1_COLUMNS if key in results["benchmarks"]]
    parts += [benchmark_markdown(results["benchmarks"][key]) for key in ordered]
    return "\n".join(parts)


def write_benchmark(out_dir: Path, summary: Mapping[str, Any]) -> None:
    """results.json and results.md of one benchmark."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / RESULTS_JSON, dict(summary))
    (out_dir / RESULTS_MD).write_text(benchmark_markdown(summary), encoding="utf-8")


def write_combined(out_dir: Path, results: Mapping[str, Any]) -> None:
    """The run's results.json and results.md."""
    write_json(out_dir / RESULTS_JSON, dict(results))
    (out_dir / RESULTS_MD).write_text(combined_markdown(results), encoding="utf-8")


def read_results(path: str | Path) -> dict[str, Any]:
    """A results.json written by `videor1 eval` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    return json.loads(path.read_text(encoding="utf-8"))


def table_from_runs(paths: list[Path]) -> str:
    """Table 1 with one row per evaluated run folder (or results.json), in the order given."""
    rows: dict[str, dict[str, float | None]] = {}
    frames: dict[str, object] = {}
    for path in paths:
        results = read_results(path)
        label = results["label"]
        rows[label] = {key: summary["overall"] for key, summary in results["benchmarks"].items()}
        frames[label] = results.get("frames", "–")
    return table1_markdown(rows, frames)
