"""Score one saved output and summarise a benchmark's predictions; `videor1 eval score` reruns exactly this.

A prediction record holds everything scoring needs (raw output, truth, problem type, options, category),
so a benchmark is rescored from `predictions.jsonl` alone, without the model or the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from videor1.eval.benchmarks import MULTIPLE_CHOICE, Benchmark, Metric, Overall
from videor1.eval.metrics import category_means, mean, mean_relative_accuracy, merge_levels
from videor1.eval.parse import Source, extract_prediction
from videor1.rewards.accuracy import accuracy_score
from videor1.rewards.answers import parse_choice, parse_number
from videor1.rewards.format import is_well_formed


@dataclass(frozen=True)
class Scored:
    """One output's extracted answer, how it was found, the metric used and the score in [0, 1]."""

    answer: str | None
    source: Source
    metric: Metric
    score: float


def score_output(
    bench: Benchmark, output: str, truth: str, problem_type: str, options: Sequence[str], category: str
) -> Scored:
    """Extract the answer of `output` and score it against `truth` with the benchmark's metric."""
    extracted = extract_prediction(output, problem_type, options)
    metric = bench.metric(category, problem_type)
    if extracted.answer is None:
        score = 0.0
    elif metric == "mra":
        truth_value = parse_number(truth)
        score = 0.0 if truth_value is None else mean_relative_accuracy(parse_number(extracted.answer), truth_value)
    elif problem_type == MULTIPLE_CHOICE:
        # the extracted answer is already a letter; the truth may be "B" or "B. dog"
        score = float(extracted.answer == parse_choice(truth))
    else:
        score = accuracy_score(extracted.answer, truth, problem_type)
    return Scored(extracted.answer, extracted.source, metric, score)


def rescore(bench: Benchmark, record: Mapping[str, Any]) -> dict[str, Any]:
    """A prediction record with its answer and score recomputed from the raw output (failed ones stay 0)."""
    if record.get("error"):
        metric = bench.metric(record["category"], record["problem_type"])
        return {**record, "answer": None, "source": "none", "metric": metric, "score": 0.0}
    scored = score_output(
        bench, record["output"], record["truth"], record["problem_type"], record.get("options") or [],
        record["category"],
    )
    return {**record, "answer": scored.answer, "source": scored.source, "metric": scored.metric,
            "score": scored.score}


def aggregation(bench: Benchmark, categories: Iterable[str]) -> Overall:
    """How the overall score is taken: the benchmark's task mean only when every category is one of its tasks.

    A mean over groups that are not the benchmark's tasks (MVBench source folders, "unknown") is no
    official number; the mean over samples is, on a complete file (each task has the same count).
    """
    if bench.overall == "task_mean" and all(bench.is_known(c) for c in categories):
        return "task_mean"
    return "sample_mean"


def summarize(bench: Benchmark, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall score, per-category and per-task scores, counts of failed and unparsed samples, format rate."""
    records = list(records)
    per_category = category_means((r["category"], r["score"]) for r in records)
    ordered = _ordered(bench, per_category)
    category_scores = {c: score for c, (score, _) in ordered.items()}
    tasks = merge_levels(category_scores, bench.merged)
    tasks = {t: tasks[t] for t in _ordered(bench, tasks)}
    aggregated = aggregation(bench, per_category)
    overall = mean(tasks.values()) if aggregated == "task_mean" else mean(r["score"] for r in records)
    metrics = {r["category"]: r["metric"] for r in records}
    failed = [r for r in records if r.get("error")]
    return {
        "benchmark": bench.key,
        "title": bench.title,
        "overall": overall,
        "aggregation": aggregated,
        "count": len(records),
        "failed": len(failed),
        # records written before error kinds existed failed in media or generation; "unrecorded" keeps them counted
        "failed_by": dict(Counter(r.get("error_kind") or "unrecorded" for r in failed)),
        "unparsed": sum(not r.get("error") and r.get("answer") is None for r in records),
        "format_rate": mean(float(is_well_formed(r.get("output") or "")) for r in records),
        "category_sources": dict(Counter(_source_kind(r) for r in records)),
        "tasks": tasks,
        "categories": {c: {"score": s, "count": n, "metric": metrics[c]} for c, (s, n) in ordered.items()},
    }


def _source_kind(record: Mapping[str, Any]) -> str:
    """Where a record's category came from, by kind: column, data_source, path, unknown (or unrecorded)."""
    source = record.get("category_source")
    if source is None:
        return "unrecorded"
    return source.split(":", 1)[0]


def _ordered(bench: Benchmark, values: Mapping[str, Any]) -> dict[str, Any]:
    """Known categories in the benchmark's order (levels after their task), then the others sorted."""
    rank = {name: i for i, name in enumerate(bench.categories)}
    for task, levels in bench.merged.items():
        for j, level in enumerate(levels):
            rank[level] = rank.get(task, len(rank)) + (j + 1) / (len(levels) + 1)
    return dict(sorted(values.items(), key=lambda kv: (kv[0] not in rank, rank.get(kv[0], 0), kv[0])))
