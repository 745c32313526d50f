"""The six video benchmarks of Video-R1's Table 1: how each names its categories and scores its tasks.

Evaluation files use the training schema (Video-R1's `eval_*.json`); a benchmark's own category column
travels with the row in `Sample.extra`. Where the column is named differently, pass its name as
`category_field`. The candidates below are the benchmarks' own column names:
- VSI-Bench (nyu-visionx/VSI-Bench test.jsonl): `question_type`, ten values; the three
  `object_rel_direction_{easy,medium,hard}` levels are merged into one task, as in the official
  `vsibench_aggregate_results` (thinking-in-space, lmms_eval/tasks/vsibench/utils.py).
- VideoMMMU: the tracks Perception / Comprehension / Adaptation are the dataset's subsets, so a merged
  file has to carry them in a column (`track`, `category` or `subset`).
- MMVU: its multiple-choice subset (Video-R1 reports MC only); `subject` when present.
- MVBench: the 20 tasks (lmms-eval `mvbench_<task>` names), reported as the mean over tasks.
- TempCompass: its multiple-choice subset, per aspect (`dim`: action, speed, direction, order,
  attribute_change — lmms-eval tempcompass/utils.py).
- Video-MME: `duration` short / medium / long, without subtitles (prompts never include them).
When no candidate column is present, `data_source` is used if it names a known category; else the row
counts under "unknown".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from videor1.data.schema import SCHEMA_FIELDS, Sample

Metric = Literal["accuracy", "mra"]
Overall = Literal["task_mean", "sample_mean"]
UNKNOWN_CATEGORY = "unknown"
MULTIPLE_CHOICE = "multiple choice"
NUMERIC_TYPES: tuple[str, ...] = ("numerical", "regression")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its Table 1 column, where its categories live and how its tasks are scored."""

    key: str
    title: str
    category_fields: tuple[str, ...]
    overall: Overall
    categories: tuple[str, ...] = ()
    """Known categories in report order (after merging levels); others are reported as found."""
    task_metrics: Mapping[str, Metric] = field(default_factory=dict)
    """Metric per task; tasks not listed use accuracy, or MRA for numeric answers when `numeric_mra`."""
    numeric_mra: bool = False
    """Score numeric answers by Mean Relative Accuracy (VSI-Bench) instead of exact equality."""
    merged: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """A reported task and the levels averaged into it."""
    multiple_choice_only: bool = False
    """Evaluate only the multiple-choice subset."""
    aliases: tuple[str, ...] = ()

    def metric(self, category: str, problem_type: str) -> Metric:
        """The metric of one sample: the task's own, else MRA for numeric answers where the benchmark uses it."""
        if category in self.task_metrics:
            return self.task_metrics[category]
        return "mra" if self.numeric_mra and problem_type in NUMERIC_TYPES else "accuracy"

    def includes(self, sample: Sample) -> bool:
        """Whether the sample belongs to the evaluated subset."""
        return not self.multiple_choice_only or sample.problem_type == MULTIPLE_CHOICE

    def task_of(self, category: str) -> str:
        """The reported task a category counts towards (a merged level's parent, else itself)."""
        for task, levels in self.merged.items():
            if category in levels:
                return task
        return category


_VSI_NUMERIC = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
_VSI_DIRECTION = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard")

VSIBENCH = Benchmark(
    key="vsibench",
    title="VSI-Bench",
    category_fields=("question_type", "original_question_type", "task", "category"),
    overall="task_mean",
    # the order of the VSI-Bench paper's table: numerical tasks, then multiple choice
    categories=(*_VSI_NUMERIC, "object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order"),
    task_metrics={
        **{task: "mra" for task in _VSI_NUMERIC},
        **{task: "accuracy" for task in (*_VSI_DIRECTION, "object_rel_distance", "route_planning",
                                         "obj_appearance_order")},
    },
    numeric_mra=True,
    merged={"object_rel_direction": _VSI_DIRECTION},
    aliases=("vsi", "vsi-bench", "vsi_bench"),
)

VIDEOMMMU = Benchmark(
    key="videommmu",
    title="VideoMMMU",
    category_fields=("track", "category", "subset", "question_category"),
    overall="sample_mean",
    categories=("Perception", "Comprehension", "Adaptation"),
    aliases=("video-mmmu", "video_mmmu"),
)

MMVU = Benchmark(
    key="mmvu",
    title="MMVU",
    category_fields=("subject", "discipline", "category"),
    overall="sample_mean",
    multiple_choice_only=True,
    aliases=("mmvu-mc", "mmvu_mc"),
)

MVBENCH = Benchmark(
    key="mvbench",
    title="MVBench",
    category_fields=("task_type", "task", "question_type", "category"),
    overall="task_mean",
    categories=(
        "action_sequence", "action_prediction", "action_antonym", "fine_grained_action", "unexpected_action",
        "object_existence", "object_interaction", "object_shuffle", "moving_direction", "action_localization",
        "scene_transition", "action_count", "moving_count", "moving_attribute", "state_change",
        "fine_grained_pose", "character_order", "egocentric_navigation", "episodic_reasoning",
        "counterfactual_inference",
    ),
    aliases=("mv-bench", "mv_bench"),
)

TEMPCOMPASS = Benchmark(
    key="tempcompass",
    title="TempCompass",
    category_fields=("dim", "aspect", "dimension", "category"),
    overall="sample_mean",
    categories=("action", "speed", "direction", "order", "attribute_change"),
    multiple_choice_only=True,
    aliases=("temp-compass", "temp_compass"),
)

VIDEOMME = Benchmark(
    key="videomme",
    title="VideoMME",
    category_fields=("duration", "duration_category", "video_duration", "category"),
    overall="sample_mean",
    categories=("short", "medium", "long"),
    aliases=("video-mme", "video_mme"),
)

BENCHMARKS: dict[str, Benchmark] = {
    b.key: b for b in (VSIBENCH, VIDEOMMMU, MMVU, MVBENCH, TEMPCOMPASS, VIDEOMME)
}


def get_benchmark(name: str) -> Benchmark:
    """A benchmark by key or alias, case-insensitive ("VSI-Bench", "vsibench", "video-mme"...)."""
    wanted = name.strip().lower()
    for bench in BENCHMARKS.values():
        if wanted == bench.key or wanted == bench.title.lower() or wanted in bench.aliases:
            return bench
    raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")


def _slug(value: str) -> str:
    """Lower-case with runs of spaces, hyphens and underscores as one underscore ("Fine-grained Action")."""
    return re.sub(r"[\s\-_]+", "_", value.strip().lower())


def canonical_category(bench: Benchmark, value: object) -> str | None:
    """The benchmark's spelling of a known category ("Action Sequence" -> action_sequence), else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    known = {_slug(c): c for c in (*bench.categories, *bench.task_metrics)}
    # data_source values are often paths ("VSI-Bench/object_counting"): the last part may name the task
    for candidate in (value, value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]):
        if _slug(candidate) in known:
            return known[_slug(candidate)]
    return None


def _column(sample: Sample, name: str) -> object:
    """A row's value for a column: an extra (non-schema) column or a schema field such as data_source."""
    if name in sample.extra:
        return sample.extra[name]
    return getattr(sample, name, None) if name in SCHEMA_FIELDS else None


def category_of(bench: Benchmark, sample: Sample, field_name: str | None = None) -> str:
    """The sample's category: `field_name`, else the benchmark's own columns, else a known data_source."""
    for name in (field_name,) if field_name else bench.category_fields:
        value = _column(sample, name)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return canonical_category(bench, str(value)) or str(value).strip()
    if field_name is None:
        return canonical_category(bench, sample.data_source) or UNKNOWN_CATEGORY
    return UNKNOWN_CATEGORY
