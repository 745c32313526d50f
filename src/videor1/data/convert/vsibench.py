"""VSI-Bench (hub nyu-visionx/VSI-Bench) to evaluation rows.

The release, as its hub tree and dataset card show: the questions in `test.jsonl` (the full set, config `full`;
`test_debiased.parquet` and `test_pruned.parquet` are subsets of it written by the repo's `create_pq.py`), or
in `test-00000-of-00001.parquet` in the first release; the videos in `arkitscenes.zip`, `scannet.zip` and
`scannetpp.zip`, unpacked next to them. Row fields (lmms-eval tasks/vsibench/utils.py reads them): `id`,
`dataset`, `scene_name`, `question_type` (ten values), `question`, `options` (already "A. …" on the six
multiple-choice types, null on the four numerical ones) and `ground_truth` (a letter, or a number as text).
The video of a row is `<dataset>/<scene_name>.mp4` (lmms-eval's `_vsibench_video_path`).
"""

from __future__ import annotations

from pathlib import Path

from videor1.data.convert.common import Conversion, choice_solution, eval_row, first_existing, lettered, read_native
from videor1.data.convert.common import solution as answer_tag
from videor1.rewards.answers import parse_number

NAME = "vsibench"
# lmms-eval vsibench/utils.py: MCA_QUESTION_TYPES and NA_QUESTION_TYPES
MULTIPLE_CHOICE_TYPES = (
    "object_rel_direction_easy",
    "object_rel_direction_medium",
    "object_rel_direction_hard",
    "object_rel_distance",
    "route_planning",
    "obj_appearance_order",
)
NUMERICAL_TYPES = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")
FULL, FIRST_RELEASE = "test.jsonl", "test-00000-of-00001.parquet"
SUBSETS = ("test_debiased.parquet", "test_pruned.parquet")


def convert(root: Path) -> Conversion:
    """The rows of the full VSI-Bench test set."""
    done = Conversion(NAME)
    source = first_existing(root, [FULL, FIRST_RELEASE], "VSI-Bench question file")
    done.skipped = [f"{name}: a subset of {source}" for name in SUBSETS if (root / name).is_file()]
    if source == FULL and (root / FIRST_RELEASE).is_file():
        done.skipped.append(f"{FIRST_RELEASE}: the first release, superseded by {FULL}")
    for number, row in read_native(root, source, done):
        kind = row.get("question_type")
        options = row.get("options") or []
        if kind in MULTIPLE_CHOICE_TYPES or (kind not in NUMERICAL_TYPES and options):
            options = lettered([str(o) for o in options])
            problem_type = "multiple choice"
            answer = choice_solution(done, source, number, row.get("ground_truth"), options)
        else:
            # the numerical tasks are scored by Mean Relative Accuracy: Video-R1's "regression" type
            options, problem_type = [], "regression"
            truth = str(row.get("ground_truth", "")).strip()
            if parse_number(truth) is None:
                done.issue(source, number, "ground_truth", f"{truth[:40]!r} is not a number")
            answer = answer_tag(truth)
        if kind not in (*MULTIPLE_CHOICE_TYPES, *NUMERICAL_TYPES):
            done.issue(source, number, "question_type", f"unknown task {kind!r}")
        path = done.media(root, f"{row.get('dataset')}/{row.get('scene_name')}.mp4", source, number)
        done.rows.append(
            eval_row(
                row.get("id", number),
                str(row.get("question", "")),
                problem_type,
                options,
                answer,
                path,
                "VSI-Bench",
                question_type=kind,
                dataset=row.get("dataset"),
                scene_name=row.get("scene_name"),
            )
        )
    return done
