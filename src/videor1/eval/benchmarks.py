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
When no candidate column is present, `data_source` is used if it names a known category, then the media
path where the benchmark's layout encodes the category: a folder named like a known category (any
benchmark: ".../Perception/12.mp4"), MMVU's subject folder (`videos/<Subject>/<n>.mp4`), MVBench's source
folder (`tvqa/...`, `star/...`; a source used by one task names that task, the shared ones — star, clevrer,
perception — stay source names). Else the row counts under "unknown". Each record says where its category
came from, and the reports count the sources, so a table built on guesses says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from videor1.data.schema import MEDIA_KEYS, Sample, media_field

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
    path_layout: Literal["subject_folder", "source_folder"] | None = None
    """How the media path encodes a category when no column does (MMVU subjects, MVBench sources)."""

    def metric(self, category: str, problem_type: str) -> Metric:
        """The metric of one sample: the task's own, else MRA for numeric answers where the benchmark uses it."""
        if category in self.task_metrics:
            return self.task_metrics[category]
        return "mra" if self.numeric_mra and problem_type in NUMERIC_TYPES else "accuracy"

    def includes(self, sample: Sample) -> bool:
        """Whether the sample belongs to the evaluated subset."""
        return not self.multiple_choice_only or sample.problem_type == MULTIPLE_CHOICE

    def is_known(self, category: str) -> bool:
        """Whether a category is one of the benchmark's own (a task, a merged level or a listed category)."""
        return category in self.categories or category in self.task_metrics

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
    path_layout="subject_folder",
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
    path_layout="source_folder",
)

# MVBench's source folders (its data_list) and the tasks drawn from each; a one-task source names its task.
MVBENCH_SOURCES: dict[str, tuple[str, ...]] = {
    "star": ("action_sequence", "action_prediction", "object_interaction"),
    "ssv2_video": ("action_antonym",),
    "moments_in_time_raw": ("fine_grained_action",),
    "funqa_test": ("unexpected_action",),
    "clevrer": ("object_existence", "moving_direction", "moving_count", "moving_attribute", "counterfactual_inference"),
    "perception": ("object_shuffle", "action_count", "state_change", "character_order"),
    "sta": ("action_localization",),
    "scene_qa": ("scene_transition",),
    "nturgbd": ("fine_grained_pose",),
    "vlnqa": ("egocentric_navigation",),
    "tvqa": ("episodic_reasoning",),
}

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


@dataclass(frozen=True)
class Category:
    """A sample's category and where it was found: `column:<name>`, `data_source`, `path` or `unknown`."""

    name: str
    source: str


def _path_category(bench: Benchmark, path: str) -> str | None:
    """The category the media path's folders encode, by the benchmark's layout; None when they do not."""
    folders = [part for part in PurePosixPath(path.replace("\\", "/")).parts[:-1] if part not in ("/", ".", "..")]
    for folder in reversed(folders):
        if (known := canonical_category(bench, folder)) is not None:
            return known
    lower = [folder.lower() for folder in folders]
    if bench.path_layout == "subject_folder" and "videos" in lower:
        # MMVU's release: videos/<Subject>/<n>.mp4
        after = lower.index("videos") + 1
        return folders[after] if after < len(folders) else None
    if bench.path_layout == "source_folder":
        for folder in folders:
            tasks = MVBENCH_SOURCES.get(folder.lower())
            if tasks is not None:
                return tasks[0] if len(tasks) == 1 else folder
    return None


def _text(value: object) -> str | None:
    """A usable category value: a non-empty string or an integer, as text."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    return None


def category_from_row(bench: Benchmark, row: Mapping[str, Any], field_name: str | None = None) -> Category:
    """A raw row's category: `field_name` alone, else the benchmark's columns, a known data_source, the path."""
    for name in (field_name,) if field_name else bench.category_fields:
        if (value := _text(row.get(name))) is not None:
            return Category(canonical_category(bench, value) or value, f"column:{name}")
    if field_name is not None:
        return Category(UNKNOWN_CATEGORY, "unknown")
    if (known := canonical_category(bench, row.get("data_source"))) is not None:
        return Category(known, "data_source")
    key = media_field(dict(row))
    if key in MEDIA_KEYS and (path := _text(row.get(key))) is not None and (found := _path_category(bench, path)):
        return Category(found, "path")
    return Category(UNKNOWN_CATEGORY, "unknown")


def category_of(bench: Benchmark, sample: Sample, field_name: str | None = None) -> Category:
    """A sample's category (see `category_from_row`)."""
    return category_from_row(bench, sample.to_row(), field_name)
