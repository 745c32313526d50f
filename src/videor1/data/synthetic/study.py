"""Data for the temporal study (issue 28): a left/right motion question with and without a static shortcut.

One question, "In which direction is the <colour> square moving?" (options left / right, chance 0.5), in
two variants that differ only in where the horizontal motion starts; colour, height, travel and speed are
drawn the same way for both:

- `direction_shortcut` (the training distribution): the square starts at the centre of the frame and moves
  to one side, so every frame after the first already shows the answer (the square is on that side).
- `direction_order_only` (the shortcut broken): the path of a right-moving clip is [x0, x0 + travel], that of
  a left-moving one the same path run backwards, with x0 drawn from one distribution for both. The set of
  positions visited is then independent of the direction (a reversed clip is a valid clip of the other
  class), so shuffled frames carry no answer, and only the order does.

How this deviates from the brief and why: drawing x0 over the whole width is not enough. A right-moving path
that crosses the centre ends right of it and a left-moving one left of it, so "the square is right of centre
in the last frame" still answers 83% of clips at a travel of 0.3 of the width (0.80 measured; 100% at 0.375).
Whether a frame at a fixed time shows the square right of centre is independent of the direction only if no
path crosses the centre. So each order-only path lies inside one half of the frame (0.025 of the width clear
of the centre), a half drawn independently of the direction and balanced per class: half of the clips move
away from the centre, as the shortcut clips do, and half towards it, and the shortcut rule scores chance on
every frame. A path in one half travels at most 0.375 of the width (half the width less half the square);
0.3 gives 2.4 px per frame at 56 px and 8 frames, 4.8 px or more between any two of 4 uniformly sampled
frames (the existing motion_direction task moves 4 px per frame, crossing the centre).

The second static cue, `cue="colour"` (issue 28's next idea, after the model never took the positional cue):
every clip's path is an order-only path, so no position answers; instead, in `direction_colour_cue` clips the
square's colour decides the direction (blue, cyan or green move left; red, yellow or purple right: the red
channel alone separates them), and in order-only clips the colour group is drawn independently of the
direction, balanced per class. The colour is visible in every frame, shuffled or not, and the question and
rationale do not name it, so the cue is in the pixels only. A model that takes it answers shuffled frames as
well as ordered ones (p̃ ≈ p), which is what a temporal signal is meant to discourage.

What stays readable from one frame at a known time: the square's place inside its half (an inward clip
ends next to the centre, an outward one next to an edge). That needs the frame's time, so it does not
survive shuffling; T-GRPO's shuffled group counts it as temporal. docs/temporal.md has the measured numbers.

Rows are the same as `generate` writes (Video-R1 schema plus `task` and `order_dependent`), reusing its
media writer and row fields; these tasks are not in the shared registry, so `generate()` is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videor1.data.synthetic.drawing import DIRECTIONS, PALETTE, _blank, _box, _centre, _lerp, _paint
from videor1.data.synthetic.scene import _Canvas, _choices, _Item, _pick, _where
from videor1.data.synthetic.tasks import TaskSpec, _check_rationale, _fields
from videor1.data.synthetic.writer import _apportion, _write_media

STUDY_VERSION = "1"
SHORTCUT, ORDER_ONLY, COLOUR_CUE = "direction_shortcut", "direction_order_only", "direction_colour_cue"
CUES = ("position", "colour")
"""The static cue of the training distribution: where the motion starts, or the square's colour."""
STUDY_TASKS: dict[str, TaskSpec] = {
    SHORTCUT: TaskSpec(
        SHORTCUT, "multiple choice", "video", True,
        "A square starts at the centre and moves left or right: any frame after the first shows the side.",
    ),
    ORDER_ONLY: TaskSpec(
        ORDER_ONLY, "multiple choice", "video", True,
        "A square moves left or right inside one half of the frame, the half independent of the direction.",
    ),
    COLOUR_CUE: TaskSpec(
        COLOUR_CUE, "multiple choice", "video", True,
        "As direction_order_only, but the square's colour group decides the direction: any frame shows it.",
    ),
}  # fmt: skip
SPLITS = ("sft", "rl", "test_in_distribution", "test_order_only")
_CLASSES = DIRECTIONS[:2]  # ("left", "right"): class 1 moves towards larger x
_SIDE = 0.25  # square side, fraction of the frame (large, as design.md §9 asks)
_TRAVEL = 0.3  # path length; at most 0.5 - _SIDE / 2 = 0.375, so that a path fits in one half
# Order-only paths keep this far from the centre, so no frame shows the square evenly across it (where a
# side-of-centre reading is a coin toss, not a fact of the clip); at 56 px, 2.8 px are left to draw x0 from.
_GAP = 0.025
# Study generators are seeded [seed, _STREAM, split(, row)]: apart from generate()'s [seed, split(, row)].
_STREAM = 28
# The colour cue's groups, index = class: low red channel moves left, high red channel right.
_COLOUR_GROUPS = (("blue", "cyan", "green"), ("red", "yellow", "purple"))


@dataclass(frozen=True)
class StudySummary:
    """What `generate_temporal_study` wrote: file paths and row counts per split and per task."""

    out_dir: Path
    sft_json: Path
    rl_json: Path
    test_in_distribution_json: Path
    test_order_only_json: Path
    study_json: Path
    counts: dict[str, dict[str, int]]  # split -> task -> rows


@dataclass(frozen=True)
class _Planned:
    task: str  # SHORTCUT or ORDER_ONLY
    label: int  # index into _CLASSES
    letter: int  # position of the correct option
    half: int  # half of the frame holding the path: 0 left, 1 right
    group: int | None = None  # colour group (cue="colour" only): index into _COLOUR_GROUPS


def _stratified(rng: np.random.Generator, strata: np.ndarray, k: int) -> np.ndarray:
    """Labels in range(k), each stratum's counts and the total counts within one of equal, in random order."""
    order = np.argsort(strata, kind="stable")
    labels = np.empty(len(strata), dtype=int)
    # Dealing round-robin through the strata one after the other: `_balanced` per stratum could leave the
    # split's total off by one per stratum; a random first label keeps the leftovers random.
    labels[order] = (int(rng.integers(k)) + np.arange(len(strata))) % k
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        labels[rows] = labels[rows][rng.permutation(len(rows))]
    return labels


def _plan(
    rng: np.random.Generator, n: int, shortcut_fraction: float, fixed_letters: bool = False, cue: str = "position"
) -> list[_Planned]:
    """Shuffled rows of one split: an exact shortcut quota; answers, letters, halves (and colour groups) balanced."""
    n_shortcut, n_order = _apportion(n, [shortcut_fraction, 1 - shortcut_fraction])
    order_only = np.repeat([0, 1], [n_shortcut, n_order])  # [n]
    labels = _stratified(rng, order_only, 2)
    # Letters balanced within each (variant, answer): the options' order then says nothing about the answer.
    # Fixed letters (A left, B right, as the demo's tasks): the answer is the class, which is balanced, and a tiny
    # model need not learn to map its answer onto shuffled options (at 56 and 112 px its rationale named the
    # direction 99.5-100% right after SFT while its letter was right 52-54% of the time)
    letters = labels.copy() if fixed_letters else _stratified(rng, 2 * order_only + labels, 2)
    halves = labels.copy()  # a shortcut path lies in the half its direction points to
    rows = np.flatnonzero(order_only)
    halves[rows] = _stratified(rng, labels[rows], 2)
    groups: list[int | None] = [None] * n
    tasks = (SHORTCUT, ORDER_ONLY)
    if cue == "colour":
        # every path an order-only path: the colour is the only static cue (extra draws only here, so the
        # positional study's data stay as they were)
        cue_rows = np.flatnonzero(order_only == 0)
        halves[cue_rows] = _stratified(rng, labels[cue_rows], 2)
        drawn = labels.copy()  # a cue clip's colour group is its class
        drawn[rows] = _stratified(rng, labels[rows], 2)
        groups = [int(g) for g in drawn]
        tasks = (COLOUR_CUE, ORDER_ONLY)
    planned = [
        _Planned(tasks[v], int(c), int(x), int(h), g)
        for v, c, x, h, g in zip(order_only, labels, letters, halves, groups, strict=True)
    ]
    return [planned[i] for i in rng.permutation(n)]


def _path(rng: np.random.Generator, cv: _Canvas, row: _Planned) -> tuple[float, float]:
    """Start and end x of the square's centre; the variants differ only here."""
    s = cv.size
    travel, edge = _TRAVEL * s, _SIDE * s / 2
    if row.task == SHORTCUT:
        lo = s / 2 if row.half == 1 else s / 2 - travel  # the path's inner end sits at the centre
    elif row.half == 1:
        lo = rng.uniform(s / 2 + _GAP * s, s - edge - travel)
    else:
        lo = rng.uniform(edge, s / 2 - _GAP * s - travel)
    return (lo, lo + travel) if _CLASSES[row.label] == "right" else (lo + travel, lo)


def _direction_clip(rng: np.random.Generator, cv: _Canvas, row: _Planned) -> _Item:
    """One square moves steadily left or right along the planned path; the question asks which way."""
    s, f = cv.size, cv.n_frames
    direction = _CLASSES[row.label]
    # Same draws in the same order for every variant: a seed gives the same colour, height and options.
    colour = _pick(rng, list(PALETTE) if row.group is None else list(_COLOUR_GROUPS[row.group]))
    cy = rng.uniform(_SIDE * s / 2, s - _SIDE * s / 2)
    options, answer = _choices(rng, direction, [c for c in _CLASSES if c != direction], row.letter)
    x0, x1 = _path(rng, cv, row)
    video = _blank(s, f)
    boxes = [_box(_lerp(x0, x1, i, f), cy, _SIDE * s) for i in range(f)]
    for i, box in enumerate(boxes):
        _paint(video[i], "square", box, PALETTE[colour])
    first, last = _centre(boxes[0]), _centre(boxes[-1])
    # Rationales follow time (first frame, then later frames) and compare positions over time; none
    # reasons from which side of the centre the square is on, the shortcut the study tests for.
    think = (
        f"At {cv.t(0)} the {colour} square is at {_where(*first, s)}. In each later frame it is a bit "
        f"further {direction}, and at {cv.t(f - 1)} it is at {_where(*last, s)}. Its x goes from "
        f"{first[0] / s:.2f} to {last[0] / s:.2f} as time goes on, so it moves {direction}: option {answer}."
    )
    brief = f"The {colour} square is further {direction} in each later frame, so it moves {direction}."
    question = f"In which direction is the {colour} square moving?"
    if row.group is not None:  # the colour cue is in the pixels only, not in the text
        think, brief = (text.replace(f"{colour} square", "square") for text in (think, brief))
        question = question.replace(f"{colour} square", "square")
    return _Item(video, question, options, answer, think, brief)


def _write_split(
    out_dir: Path, plan: list[_Planned], *, seed: int, split_index: int, first_id: int, canvas: _Canvas,
    rationale: str, keep_process: bool,
) -> tuple[list[dict[str, object]], list[str]]:  # fmt: skip
    """Build and write one split's rows and media; also the sha256 of each clip's frames."""
    rows, digests = [], []
    for row_index, planned in enumerate(plan):
        # One generator per row: a row's scene depends only on (seed, split, row), as in `generate`.
        item = _direction_clip(np.random.default_rng([seed, _STREAM, split_index, row_index]), canvas, planned)
        spec = STUDY_TASKS[planned.task]
        problem_id = first_id + row_index
        fields = _fields(item, spec, rationale)
        if not keep_process:
            fields["process"] = ""  # RL rows carry answers only, like Video-R1-260k (and the demo's rl.json)
        rows.append(
            {
                "problem_id": problem_id,
                **fields,
                "path": _write_media(out_dir, problem_id, item, spec.data_type, canvas.fps),
                "data_source": f"synthetic/{planned.task}",
                "task": planned.task,
                "order_dependent": spec.order_dependent,
            }
        )
        digests.append(hashlib.sha256(item.media.tobytes()).hexdigest())
    return rows, digests


def _static_shortcut_accuracy(plan: list[_Planned]) -> float:
    """Accuracy of the static rule: the side of the centre the square is on (any frame after the first), or
    the colour's group under the colour cue."""
    return sum((p.half if p.group is None else p.group) == p.label for p in plan) / len(plan)


def generate_temporal_study(
    out_dir: str | Path,
    *,
    n_sft: int,
    n_rl: int,
    n_test: int,
    seed: int,
    shortcut_fraction: float = 0.8,
    size: int = 56,
    n_frames: int = 8,
    fps: float = 4.0,
    rationale: str = "brief",
    sft_shortcut_fraction: float | None = None,
    fixed_letters: bool = False,
    cue: str = "position",
) -> StudySummary:
    """Write sft.json, rl.json, test_in_distribution.json, test_order_only.json, study.json and the media.

    rl and test_in_distribution hold `shortcut_fraction` shortcut clips (an exact quota) and order-only clips
    for the rest, sft `sft_shortcut_fraction` (default: the same); test_order_only holds order-only clips only.
    Answers are balanced in every split, and letters too unless `fixed_letters` (A left, B right). `cue` is the
    static cue of the shortcut clips: "position" (direction_shortcut) or "colour" (direction_colour_cue).
    """
    out_dir = Path(out_dir)
    sizes = {"sft": n_sft, "rl": n_rl, "test_in_distribution": n_test, "test_order_only": n_test}
    _validate(sizes, seed=seed, shortcut_fraction=shortcut_fraction, size=size, n_frames=n_frames, fps=fps)
    _check_rationale(rationale)
    if cue not in CUES:
        raise ValueError(f"cue must be one of {', '.join(CUES)}, got {cue!r}")
    sft_fraction = shortcut_fraction if sft_shortcut_fraction is None else sft_shortcut_fraction
    if not 0.0 <= sft_fraction <= 1.0:
        raise ValueError(f"sft_shortcut_fraction must be in [0, 1], got {sft_fraction}")
    canvas = _Canvas(size, n_frames, fps)
    splits: dict[str, list[dict[str, object]]] = {}
    counts: dict[str, dict[str, int]] = {}
    meta_splits: dict[str, dict[str, object]] = {}
    training_clips: set[str] = set()
    first_id = 0
    for split_index, split in enumerate(SPLITS):
        fraction = {"test_order_only": 0.0, "sft": sft_fraction}.get(split, shortcut_fraction)
        plan = _plan(np.random.default_rng([seed, _STREAM, split_index]), sizes[split], fraction, fixed_letters, cue)
        rows, digests = _write_split(
            out_dir, plan, seed=seed, split_index=split_index, first_id=first_id, canvas=canvas,
            rationale=rationale, keep_process=split != "rl",
        )  # fmt: skip
        splits[split] = rows
        first_id += len(rows)
        counts[split] = {task: sum(p.task == task for p in plan) for task in _tasks(cue)}
        meta_splits[split] = {
            "file": f"{split}.json", "rows": len(rows), "counts": counts[split],
            "shortcut_fraction": counts[split][_tasks(cue)[0]] / len(rows),
            "chance": 1 / len(_CLASSES),  # two options, answers and letters balanced
            "static_shortcut_accuracy": _static_shortcut_accuracy(plan),
        }  # fmt: skip
        if split in ("sft", "rl"):
            training_clips.update(digests)
        else:
            # a shortcut clip is colour x height x direction only, so test clips can repeat training clips
            meta_splits[split]["clips_also_in_training"] = sum(d in training_clips for d in digests)
    meta = {
        "generator": "videor1.data.synthetic.study", "version": STUDY_VERSION, "seed": seed, "cue": cue,
        "shortcut_fraction": shortcut_fraction, "sft_shortcut_fraction": sft_fraction,
        "fixed_letters": fixed_letters, "size": size, "n_frames": n_frames, "fps": fps,
        "rationale": rationale, "square_side": _SIDE, "travel": _TRAVEL, "classes": list(_CLASSES),
        **({"colour_groups": dict(zip(_CLASSES, map(list, _COLOUR_GROUPS), strict=True))} if cue == "colour" else {}),
        "splits": meta_splits,
    }  # fmt: skip
    # JSON last: a run that dies half-way leaves no split file pointing at missing media.
    paths = {name: out_dir / f"{name}.json" for name in (*SPLITS, "study")}
    for split, rows in splits.items():
        paths[split].write_text(json.dumps(rows, indent=1) + "\n")
    paths["study"].write_text(json.dumps(meta, indent=1) + "\n")
    return StudySummary(
        out_dir, paths["sft"], paths["rl"], paths["test_in_distribution"], paths["test_order_only"],
        paths["study"], counts,
    )  # fmt: skip


def _tasks(cue: str) -> tuple[str, str]:
    """The shortcut task of a cue, then the order-only task."""
    return (SHORTCUT if cue == "position" else COLOUR_CUE, ORDER_ONLY)


def _validate(
    sizes: dict[str, int], *, seed: int, shortcut_fraction: float, size: int, n_frames: int, fps: float
) -> None:
    """Reject settings that would write unusable data, naming the argument."""
    for split, n in sizes.items():
        if n < 1:
            raise ValueError(f"every split needs >= 1 row, got {n} for {split} (n_sft, n_rl, n_test)")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0.0 <= shortcut_fraction <= 1.0:
        raise ValueError(f"shortcut_fraction must be in [0, 1], got {shortcut_fraction}")
    if size < 56 or size % 2:
        raise ValueError(f"size must be even and >= 56 (yuv420p, and the model's smallest view), got {size}")
    if n_frames < 4:
        raise ValueError(f"n_frames must be >= 4 (the sampler's minimum), got {n_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
