"""Evaluation reports: results.json and Markdown, per benchmark and combined in Video-R1's Table 1 layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from videor1.atomic import atomic_write_text
from videor1.eval.metrics import TABLE1_COLUMNS, percent, table1_markdown
from videor1.eval.video_r1_outputs import headline
from videor1.runlog import write_json

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def _counts(counts: Mapping[str, int]) -> str:
    """{"row": 2, "media": 1} -> "2 row, 1 media"."""
    return ", ".join(f"{n} {name}" for name, n in counts.items())


def _category_line(summary: Mapping[str, Any]) -> str | None:
    """Where the categories came from, when any did not come from a column: the table is then a guess."""
    sources = summary.get("category_sources") or {}
    if set(sources) <= {"column"}:
        return None
    line = f"categories from: {_counts(sources)}"
    if sources.get("unknown"):
        line += " (unknown: no category column, data_source or path layout named one; pass --category-field)"
    return line


def benchmark_markdown(summary: Mapping[str, Any]) -> str:
    """One benchmark's breakdown: a row per category with its metric, count and score, then the overall."""
    failed = f"{summary['failed']} failed"
    if summary["failed"] and summary.get("failed_by"):
        failed += f" ({_counts(summary['failed_by'])})"
    lines = [
        f"### {summary['title']}",
        "",
        f"overall {percent(summary['overall'])} ({summary['aggregation'].replace('_', ' ')}), "
        f"{summary['count']} samples, {failed}, {summary['unparsed']} without an answer, "
        f"format {percent(summary['format_rate'])}",
    ]
    if (category_line := _category_line(summary)) is not None:
        lines += ["", category_line]
    lines += [
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


def comparison_markdown(comparison: Mapping[str, Any]) -> str:
    """The original file's own scores next to ours, and why rows were scored differently."""
    written = comparison.get("final_acc")
    file_rewards = comparison["file_rewards"]

    def means(values: Mapping[str, Any]) -> str:
        parts = [f"mean_acc {percent(values.get('mean_acc'))}"]
        if values.get("mean_mra") is not None:
            parts.append(f"mean_mra {percent(values['mean_mra'])}, (acc + mra) / 2 = {percent(headline(values))}")
        return ", ".join(parts)

    lines = [f"#### Compared with the file's own scores ({comparison['source']})", ""]
    lines.append(f"- file's final_acc: {means(written)}" if written is not None else "- file's final_acc: none")
    lines.append(f"- file's rewards over its {file_rewards['rows']} rows: {means(file_rewards)}")
    lines.append(f"- ours: {percent(comparison['ours'])} ({comparison['ours_aggregation'].replace('_', ' ')})")
    lines.append(f"- rows scored differently: {comparison['rows_differing']} of {comparison['rows_compared']}")
    lines += [f"- {note}" for note in comparison["notes"]]
    if comparison["reasons"]:
        lines += ["", "| reason | rows | example |", "|---|---:|---|"]
        for name, entry in comparison["reasons"].items():
            ex = entry["example"]
            example = (f"row {ex['row']} ({ex['category']}, truth {ex['truth']!r}): file read {ex['file_answer']!r} "
                       f"-> {ex['file_reward']:g}; ours read {ex['our_answer']!r} by {ex['our_metric']} "
                       f"-> {ex['our_score']:g}")
            lines.append(f"| {name}: {entry['why']} | {entry['rows']} | {example} |")
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
    atomic_write_text(out_dir / RESULTS_MD, benchmark_markdown(summary))


def write_combined(out_dir: Path, results: Mapping[str, Any]) -> None:
    """The run's results.json and results.md."""
    write_json(out_dir / RESULTS_JSON, dict(results))
    atomic_write_text(out_dir / RESULTS_MD, combined_markdown(results))


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
        if "benchmarks" not in results:
            if "benchmark" not in results:
                raise ValueError(f"{path}: not a results.json of `videor1 eval` or `videor1 eval score`")
            # one benchmark's results (an `eval score --out` folder of an older version): the folder names the row
            folder = Path(path) if Path(path).is_dir() else Path(path).parent
            results = {"label": folder.resolve().name, "benchmarks": {results["benchmark"]: results}}
        label = results["label"]
        rows[label] = {key: summary["overall"] for key, summary in results["benchmarks"].items()}
        frames[label] = results.get("frames", "–")
    return table1_markdown(rows, frames)
