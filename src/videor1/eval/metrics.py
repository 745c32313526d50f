"""Benchmark metrics as pure functions: MRA, means per category, VSI-Bench's task mean, Table 1's layout.

Mean Relative Accuracy (VSI-Bench, Yang et al. 2024, "Thinking in Space", eq. 1):
    MRA = 1/10 * sum over θ in {0.50, 0.55, ..., 0.95} of 1[ |ŷ − y| / |y| < 1 − θ ].
The comparison is strict, as the paper writes it, and exact: the thresholds are decimal literals and the
relative error is computed on the numbers as written (decimal -> exact fractions), because in floating
point 1 − 0.95 = 0.050000000000000044 and |1.05 − 1| = 0.050000000000000044, which would count an answer
exactly 5 % off as within 5 %. The official lmms-eval code compares with `<=` on floats and Video-R1's
eval_bench.py with `<` on float32 tensors; both differ from the formula only on such exact edges.
y = 0 (never a VSI-Bench ground truth): the relative error is undefined, so an exact 0 scores 1 and
anything else 0 — the limit of the relative error, and the regression reward's rule for an exact answer.

Overall scores: VSI-Bench and MVBench report the mean over their tasks (VSI-Bench's three relative-
direction levels first averaged into one task, as the official aggregation does); the others the mean
over all scored questions. Never (mean accuracy + mean MRA) / 2, the original eval_bench.py's number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from fractions import Fraction

# θ written out: the confidence thresholds of VSI-Bench's MRA (start .50, end .95, step .05).
MRA_THRESHOLDS: tuple[str, ...] = ("0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95")
_TOLERANCES: tuple[Fraction, ...] = tuple(1 - Fraction(theta) for theta in MRA_THRESHOLDS)

# Video-R1's Table 1 columns, in order, keyed by benchmark.
TABLE1_COLUMNS: tuple[tuple[str, str], ...] = (
    ("vsibench", "VSI-Bench"), ("videommmu", "VideoMMMU"), ("mmvu", "MMVU"),
    ("mvbench", "MVBench"), ("tempcompass", "TempCompass"), ("videomme", "VideoMME"),
)
PERCENT = 100
MISSING = "–"


def _exact(value: float | int | str) -> Fraction:
    """A number as the exact fraction of its shortest decimal spelling (1.05 -> 21/20, not the float's binary)."""
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


def mean_relative_accuracy(prediction: float | None, truth: float) -> float:
    """MRA of one numeric answer in [0, 1]: the fraction of the ten thresholds its relative error is under."""
    if prediction is None:
        return 0.0
    pred, gt = _exact(prediction), _exact(truth)
    if gt == 0:
        return float(pred == 0)
    error = abs(pred - gt) / abs(gt)
    return sum(error < tolerance for tolerance in _TOLERANCES) / len(_TOLERANCES)


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean with an exactly rounded sum (independent of order); None for no values."""
    values = list(values)
    return math.fsum(values) / len(values) if values else None


def category_means(scores: Iterable[tuple[str, float]]) -> dict[str, tuple[float, int]]:
    """(category, score) pairs -> {category: (mean score, count)}, categories in first-seen order."""
    groups: dict[str, list[float]] = {}
    for category, score in scores:
        groups.setdefault(category, []).append(score)
    return {category: (math.fsum(values) / len(values), len(values)) for category, values in groups.items()}


def merge_levels(category_scores: Mapping[str, float], merged: Mapping[str, tuple[str, ...]]) -> dict[str, float]:
    """Replace the levels of each merged task by the mean of the levels present (VSI-Bench's direction)."""
    tasks: dict[str, float] = {}
    for category, score in category_scores.items():
        parent = next((task for task, levels in merged.items() if category in levels), None)
        if parent is None:
            tasks[category] = score
        elif parent not in tasks:
            present = [category_scores[level] for level in merged[parent] if level in category_scores]
            tasks[parent] = math.fsum(present) / len(present)
    return tasks


def vsi_overall(category_scores: Mapping[str, float], merged: Mapping[str, tuple[str, ...]]) -> float | None:
    """VSI-Bench's overall score: the mean of its task scores after merging the direction levels."""
    return mean(merge_levels(category_scores, merged).values())


def percent(value: float | None) -> str:
    """A [0, 1] score as a percentage with one decimal, as Table 1 prints it; a dash when missing."""
    return MISSING if value is None else f"{PERCENT * value:.1f}"


def table1_markdown(rows: Mapping[str, Mapping[str, float | None]], frames: Mapping[str, object] | None = None) -> str:
    """Markdown in the layout of Video-R1's Table 1: one row per model, the six benchmarks as columns."""
    frames = frames or {}
    header = ["Model", "Frames", *(title for _, title in TABLE1_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(TABLE1_COLUMNS)) + "|"]
    for model, scores in rows.items():
        cells = [model, str(frames.get(model, MISSING)), *(percent(scores.get(key)) for key, _ in TABLE1_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
