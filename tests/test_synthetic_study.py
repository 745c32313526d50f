"""The temporal study's data: a static shortcut in training, a split where only the frame order answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from videor1.data.media import load_video
from videor1.data.sampling import FrameSampling, PixelBudget
from videor1.data.schema import parse_row, row_problems
from videor1.data.synthetic import TASKS, generate
from videor1.data.synthetic.scene import _Canvas
from videor1.data.synthetic.study import (
    _GAP,
    _SIDE,
    _TRAVEL,
    COLOUR_CUE,
    ORDER_ONLY,
    SHORTCUT,
    SPLITS,
    StudySummary,
    _direction_clip,
    _plan,
    _Planned,
    generate_temporal_study,
)

SIZE, N_SFT, N_RL, N_TEST, SEED = 56, 20, 20, 40, 0
SAMPLING = FrameSampling(nframes=4)  # what the model sees: 4 uniformly sampled frames
BUDGET = PixelBudget(min_pixels=SIZE * SIZE, max_pixels=SIZE * SIZE)  # keep 56×56


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudySummary:
    return generate_temporal_study(
        tmp_path_factory.mktemp("study") / "out", n_sft=N_SFT, n_rl=N_RL, n_test=N_TEST, seed=SEED
    )


def _rows(summary: StudySummary, split: str) -> list[dict]:
    return json.loads((summary.out_dir / f"{split}.json").read_text())


def _answer_text(row: dict) -> str:
    """The correct option's text ("left" / "right")."""
    letter = row["solution"].removeprefix("<answer>").removesuffix("</answer>")
    return next(o.split(". ", 1)[1] for o in row["options"] if o.startswith(letter + "."))


def _xs(summary: StudySummary, row: dict) -> np.ndarray:
    """x of the square's centre in each of the 4 sampled frames, decoded as training decodes them."""
    frames = load_video(summary.out_dir / row["path"], SAMPLING, BUDGET).frames  # [4, 3, H, W]
    foreground = frames.numpy().max(axis=1) > 80  # [4, H, W]; black background, saturated square
    # +0.5: pixel i covers [i, i+1), so x is in the same units as the frame's centre, SIZE / 2
    return np.array([np.nonzero(mask)[1].mean() + 0.5 for mask in foreground])


@pytest.fixture(scope="module")
def decoded(study: StudySummary) -> dict[str, list[tuple[dict, np.ndarray]]]:
    return {split: [(row, _xs(study, row)) for row in _rows(study, split)] for split in SPLITS}


def _single_frame(xs: np.ndarray) -> str:
    """The static shortcut: the side of the centre the square is on in ONE frame (the last one given)."""
    return "right" if xs[-1] > SIZE / 2 else "left"


def _order(xs: np.ndarray) -> str:
    """The order rule: where the square is in the last frame given compared with the first."""
    return "right" if xs[-1] > xs[0] else "left"


def _accuracy(rule, pairs: list[tuple[dict, np.ndarray]]) -> float:
    return float(np.mean([rule(xs) == _answer_text(row) for row, xs in pairs]))


def test_single_frame_rule_reads_the_shortcut_and_fails_on_order_only(decoded: dict) -> None:
    shortcut = [p for split in SPLITS for p in decoded[split] if p[0]["task"] == SHORTCUT]
    order_only = decoded["test_order_only"]
    assert len(shortcut) == 64 and len(order_only) == 40
    assert _accuracy(_single_frame, shortcut) == 1.0
    # balanced (direction, half) cells make it exactly chance here; the bound is what the study needs
    assert abs(_accuracy(_single_frame, order_only) - 0.5) <= 0.15
    # in distribution: right on every shortcut clip and half the order-only ones, 0.8 + 0.2 / 2
    assert _accuracy(_single_frame, decoded["test_in_distribution"]) == pytest.approx(0.9)
    for split in SPLITS:
        assert _accuracy(_order, decoded[split]) == 1.0, split


def test_shuffled_order_only_frames_leave_only_chance(decoded: dict) -> None:
    # T-GRPO's shuffled group keeps the set of frames and loses their order. On order-only clips that set
    # is the same for both answers (a reversed clip is a clip of the other class), so neither rule can beat
    # chance once shuffled: shuffled accuracy p~ sits at chance and only reading the order lifts p above it.
    rng = np.random.default_rng(SEED)
    shuffled = [(row, xs[rng.permutation(len(xs))]) for row, xs in decoded["test_order_only"]]
    assert abs(_accuracy(_order, shuffled) - 0.5) <= 0.15
    assert abs(_accuracy(_single_frame, shuffled) - 0.5) <= 0.15
    # on shortcut clips the set alone still answers: every frame but the first is on the answer's side
    short = [(row, xs[rng.permutation(len(xs))]) for split in SPLITS for row, xs in decoded[split]]
    short = [(row, xs) for row, xs in short if row["task"] == SHORTCUT]
    assert all(np.median(xs) > SIZE / 2 for row, xs in short if _answer_text(row) == "right")
    assert all(np.median(xs) < SIZE / 2 for row, xs in short if _answer_text(row) == "left")


def test_a_time_aware_single_frame_rule_still_reads_order_only_clips(decoded: dict) -> None:
    # What the design leaves readable (study.py's docstring): where inside its half the square is at a KNOWN
    # time. In the last frame an outward clip is in the outer part of its half, an inward one next to the
    # centre. It needs the frame's time, so shuffling removes it; pinned here so a geometry change shows.
    def outer_part_at_the_end(xs: np.ndarray) -> str:
        near_right_edge, near_left_edge = xs[-1] > 0.75 * SIZE, xs[-1] < 0.25 * SIZE
        inside_right_half = xs[-1] > SIZE / 2
        if near_right_edge or near_left_edge:
            return "right" if near_right_edge else "left"
        return "left" if inside_right_half else "right"  # next to the centre: it came inwards

    order_only = decoded["test_order_only"]
    assert _accuracy(outer_part_at_the_end, order_only) == 1.0
    rng = np.random.default_rng(SEED)
    shuffled = [(row, xs[rng.permutation(len(xs))]) for row, xs in order_only]
    assert abs(_accuracy(outer_part_at_the_end, shuffled) - 0.5) <= 0.15


def test_order_only_paths_stay_in_one_half_drawn_independently_of_direction(decoded: dict) -> None:
    cells = Counter()
    for row, xs in decoded["test_order_only"]:
        half = "right" if xs.min() > SIZE / 2 else "left"
        # no path crosses the centre, with room to spare (1.4 px, whole pixels: 1): no frame is ambiguous
        assert (xs.min() >= SIZE / 2 + 0.9) if half == "right" else (xs.max() <= SIZE / 2 - 0.9), xs
        cells[_answer_text(row), half] += 1
    assert cells == {(d, h): 10 for d in ("left", "right") for h in ("left", "right")}


def test_motion_visible_between_any_two_sampled_frames(decoded: dict) -> None:
    for split in SPLITS:
        for row, xs in decoded[split]:
            steps = np.diff(xs) * (1 if _answer_text(row) == "right" else -1)
            # drawn >= 4 px apart (test_variants_...); yuv420p blurs the edges a little (3.6 px measured)
            assert steps.min() >= 3.0, (split, row["problem_id"], xs)


def test_rows_match_generate_format_and_pass_the_schema(study: StudySummary, tmp_path: Path) -> None:
    reference = json.loads(
        generate(tmp_path, n=1, n_test=1, seed=0, size=SIZE, tasks=["motion_direction"]).train_json.read_text()
    )[0]
    ids = []
    for split in SPLITS:
        for number, row in enumerate(_rows(study, split), start=1):
            assert list(row) == list(reference) and all(type(row[k]) is type(reference[k]) for k in row)
            assert row_problems(row, require_process=split != "rl") == [], (split, row)
            sample = parse_row(row, row_number=number, media_root=study.out_dir)
            assert sample.is_video and sample.media_path.is_file() and sample.problem_type == "multiple choice"
            assert sorted(o.split(". ", 1)[1] for o in sample.options) == ["left", "right"]
            assert row["data_source"] == f"synthetic/{row['task']}" and row["order_dependent"] is True
            assert (row["process"] == "") == (split == "rl")  # RL rows carry answers only, like Video-R1-260k
            ids.append(row["problem_id"])
    assert ids == list(range(N_SFT + N_RL + 2 * N_TEST))


def test_summary_counts_exact_quota_and_chance(study: StudySummary) -> None:
    meta = json.loads(study.study_json.read_text())
    assert (meta["seed"], meta["shortcut_fraction"], meta["size"], meta["n_frames"]) == (SEED, 0.8, SIZE, 8)
    expected = {"sft": 16, "rl": 16, "test_in_distribution": 32, "test_order_only": 0}  # 0.8 × 20, 0.8 × 40
    for split, n_shortcut in expected.items():
        rows = _rows(study, split)
        counts = Counter(r["task"] for r in rows)
        assert counts[SHORTCUT] == n_shortcut and counts[SHORTCUT] + counts[ORDER_ONLY] == len(rows)
        info = meta["splits"][split]
        assert info["counts"] == study.counts[split] == {SHORTCUT: n_shortcut, ORDER_ONLY: len(rows) - n_shortcut}
        assert info["chance"] == 0.5 and info["shortcut_fraction"] == n_shortcut / len(rows)
    assert meta["splits"]["test_order_only"]["static_shortcut_accuracy"] == 0.5
    assert meta["splits"]["test_in_distribution"]["static_shortcut_accuracy"] == 0.9
    assert meta["splits"]["test_order_only"]["clips_also_in_training"] == 0


def test_answers_and_letters_balanced_in_every_split(study: StudySummary) -> None:
    for split in SPLITS:
        rows = _rows(study, split)
        assert Counter(_answer_text(r) for r in rows) == {"left": len(rows) // 2, "right": len(rows) // 2}
        assert Counter(r["solution"] for r in rows) == {"<answer>A</answer>": len(rows) // 2,
                                                        "<answer>B</answer>": len(rows) // 2}  # fmt: skip
        # the options' order says nothing about the answer: letters balanced within each answer too
        for answer in ("left", "right"):
            letters = Counter(r["solution"] for r in rows if _answer_text(r) == answer)
            assert max(letters.values()) - min(letters.values()) <= 1, (split, answer, letters)


@pytest.mark.parametrize("n", [1, 7, 13, 48])
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.8, 1.0])
def test_plan_quota_and_balance_for_any_size(n: int, fraction: float) -> None:
    plan = _plan(np.random.default_rng([n, int(fraction * 10)]), n, fraction)
    n_shortcut = sum(p.task == SHORTCUT for p in plan)
    assert abs(n_shortcut - fraction * n) <= 0.5  # largest remainder: the nearest whole count

    def within_one(values: list[int]) -> bool:
        counts = Counter(values)
        return len(values) < 2 or (len(counts) == 2 and max(counts.values()) - min(counts.values()) <= 1)

    assert within_one([p.label for p in plan]) and within_one([p.letter for p in plan])
    for task in (SHORTCUT, ORDER_ONLY):
        assert within_one([p.label for p in plan if p.task == task])
        for label in (0, 1):
            assert within_one([p.letter for p in plan if (p.task, p.label) == (task, label)])
    for label in (0, 1):
        assert within_one([p.half for p in plan if (p.task, p.label) == (ORDER_ONLY, label)])
    assert all(p.half == p.label for p in plan if p.task == SHORTCUT)


def test_variants_differ_only_in_where_the_motion_starts() -> None:
    canvas = _Canvas(SIZE, 8, 4.0)
    for label in (0, 1):
        for half in (0, 1):
            short = _direction_clip(np.random.default_rng(5), canvas, _Planned(SHORTCUT, label, 1, label))
            other = _direction_clip(np.random.default_rng(5), canvas, _Planned(ORDER_ONLY, label, 1, half))
            assert (short.problem, short.options, short.answer) == (other.problem, other.options, other.answer)
            for a, b in zip(short.media, other.media, strict=True):
                rows_a, cols_a = np.nonzero(a.max(-1))
                rows_b, cols_b = np.nonzero(b.max(-1))
                assert np.array_equal(np.unique(rows_a), np.unique(rows_b))  # same height, same size
                assert np.array_equal(a[rows_a[0], cols_a[0]], b[rows_b[0], cols_b[0]])  # same colour
            xs = [np.nonzero(f.max(-1))[1].mean() + 0.5 for f in short.media]
            other_xs = [np.nonzero(f.max(-1))[1].mean() + 0.5 for f in other.media]
            # 0.3 of 56 px over 7 frame steps: 4.8 px over the shortest gap of 4 sampled frames (2 frames),
            # at least 4 on whole pixels
            for path in (xs, other_xs):
                assert min(abs(np.diff(np.array(path)[[0, 2, 5, 7]]))) >= 4
            assert xs[0] == SIZE / 2  # the shortcut starts at the centre
            travel = abs(xs[-1] - xs[0])
            assert abs(abs(other_xs[-1] - other_xs[0]) - travel) <= 1  # same travel, whole pixels
            assert travel == pytest.approx(_TRAVEL * SIZE, abs=1)
            assert min(abs(np.array(other_xs) - SIZE / 2)) >= _GAP * SIZE - 0.5
            assert max(other_xs) <= SIZE - _SIDE * SIZE / 2 and min(other_xs) >= _SIDE * SIZE / 2


@pytest.mark.parametrize("rationale", ["brief", "detailed"])
def test_rationales_follow_time_and_never_argue_from_the_centre(rationale: str) -> None:
    canvas = _Canvas(SIZE, 8, 4.0)
    for task in (SHORTCUT, ORDER_ONLY):
        for label, direction in enumerate(("left", "right")):
            item = _direction_clip(np.random.default_rng(label), canvas, _Planned(task, label, 0, 1 - label))
            text = item.brief if rationale == "brief" else item.think
            assert not any(word in text.lower() for word in ("centre", "center", "middle", "side", "half"))
            assert text.endswith(f"moves {direction}." if rationale == "brief" else f"option {item.answer}.")
            if rationale == "brief":
                assert "later frame" in text and len(text.split()) <= 16
            else:
                assert text.startswith("At 0.00 s") and text.index("0.00 s") < text.index("1.75 s")
                start, end = (float(v) for v in text.split("Its x goes from ")[1].split(" as")[0].split(" to "))
                assert (end > start) == (direction == "right")


def _decode_all(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [F, H, W, 3]


def test_deterministic_for_a_seed(study: StudySummary, tmp_path: Path) -> None:
    again = generate_temporal_study(tmp_path / "again", n_sft=N_SFT, n_rl=N_RL, n_test=N_TEST, seed=SEED)
    for name in (*SPLITS, "study"):
        assert (again.out_dir / f"{name}.json").read_bytes() == (study.out_dir / f"{name}.json").read_bytes()
    for split in SPLITS:
        for row in _rows(study, split):
            first, second = _decode_all(study.out_dir / row["path"]), _decode_all(again.out_dir / row["path"])
            # Known, not yet explained: in 2 of about 15 CI runs (long test processes) x264 wrote different bytes
            # for the same frames, once 35 levels apart before the rows' padding was zeroed, once 2-7 levels on
            # the background next to the square after; 900 repeats in fresh processes never did. Asserted: equal
            # up to such a difference. A change in what is drawn (a moved square, another colour) is 100+ levels.
            difference = np.abs(first.astype(np.int16) - second)
            assert first.shape == second.shape and difference.max() <= 40 and difference.mean() < 0.5, row["path"]
    other = generate_temporal_study(tmp_path / "other", n_sft=4, n_rl=4, n_test=4, seed=SEED + 1)
    assert other.sft_json.read_bytes() != (study.out_dir / "sft.json").read_bytes()


def test_study_tasks_stay_out_of_generate() -> None:
    # generate()'s default task set (and so the demo's data) must not change
    assert SHORTCUT not in TASKS and ORDER_ONLY not in TASKS


@pytest.mark.parametrize(
    "kwargs",
    [{"n_sft": 0}, {"n_test": 0}, {"seed": -1}, {"shortcut_fraction": 1.5}, {"size": 57}, {"n_frames": 3},
     {"fps": 0.0}, {"rationale": "long"}],
)  # fmt: skip
def test_rejects_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_")[-1]):
        generate_temporal_study(tmp_path, **{"n_sft": 2, "n_rl": 2, "n_test": 2, "seed": 0, **kwargs})


def test_fixed_letters_and_a_separate_sft_shortcut_fraction(tmp_path):
    summary = generate_temporal_study(tmp_path, n_sft=10, n_rl=10, n_test=6, seed=3, shortcut_fraction=0.8,
                                      sft_shortcut_fraction=1.0, fixed_letters=True)
    assert summary.counts["sft"] == {SHORTCUT: 10, ORDER_ONLY: 0}
    assert summary.counts["rl"] == {SHORTCUT: 8, ORDER_ONLY: 2}
    for path in (summary.sft_json, summary.rl_json, summary.test_order_only_json):
        rows = json.loads(path.read_text())
        assert all(row["options"] == ["A. left", "B. right"] for row in rows)  # the letter is the class
        letters = Counter(row["solution"] for row in rows)
        assert abs(letters["<answer>A</answer>"] - letters["<answer>B</answer>"]) <= 1  # classes still balanced
    meta = json.loads(summary.study_json.read_text())
    assert meta["sft_shortcut_fraction"] == 1.0 and meta["fixed_letters"] is True


# --- the colour cue (cue="colour"): the static cue is the square's colour, every path order-only ----------------


@pytest.fixture(scope="module")
def colour_decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[dict, np.ndarray, float]]]:
    """Per split: (row, x per sampled frame, the square's mean red channel) decoded as training decodes them."""
    summary = generate_temporal_study(
        tmp_path_factory.mktemp("colour") / "out", n_sft=N_SFT, n_rl=N_RL, n_test=N_TEST, seed=SEED, cue="colour"
    )
    decoded = {}
    for split in SPLITS:
        decoded[split] = []
        for row in _rows(summary, split):
            frames = load_video(summary.out_dir / row["path"], SAMPLING, BUDGET).frames.numpy()  # [4, 3, H, W]
            mask = frames.max(axis=1) > 80
            decoded[split].append((row, _xs(summary, row), float(frames[:, 0][mask].mean())))
    decoded["meta"] = json.loads(summary.study_json.read_text())
    return decoded


def _colour_rule(red: float) -> str:
    """The colour cue: a high red channel (red, yellow, purple) moves right, a low one (blue, cyan, green) left."""
    return "right" if red > 128 else "left"


def test_colour_cue_answers_cue_clips_and_is_chance_on_order_only(colour_decoded: dict) -> None:
    cue = [(row, red) for split in SPLITS for row, _, red in colour_decoded[split] if row["task"] == COLOUR_CUE]
    order_only = [(row, red) for row, _, red in colour_decoded["test_order_only"]]
    assert len(cue) == 64 and all(row["task"] == ORDER_ONLY for row, _ in order_only)
    # the red channel separates the groups after yuv420p by a wide margin (230/240/190 against 30/20/40)
    assert all(_colour_rule(red) == _answer_text(row) for row, red in cue)
    assert float(np.mean([_colour_rule(red) == _answer_text(row) for row, red in order_only])) == 0.5
    in_dist = [(row, red) for row, _, red in colour_decoded["test_in_distribution"]]
    assert float(np.mean([_colour_rule(red) == _answer_text(row) for row, red in in_dist])) == pytest.approx(0.9)
    meta = colour_decoded["meta"]
    assert meta["cue"] == "colour" and meta["colour_groups"] == {
        "left": ["blue", "cyan", "green"], "right": ["red", "yellow", "purple"]}
    assert meta["splits"]["test_order_only"]["static_shortcut_accuracy"] == 0.5
    assert meta["splits"]["test_in_distribution"]["static_shortcut_accuracy"] == pytest.approx(0.9)


def test_colour_cue_leaves_no_positional_cue_and_the_order_answers(colour_decoded: dict) -> None:
    for split in SPLITS:
        pairs = [(row, xs) for row, xs, _ in colour_decoded[split]]
        assert _accuracy(_order, pairs) == 1.0, split
        # every path inside one half drawn independently of the direction: the side of the centre is chance
        assert abs(_accuracy(_single_frame, pairs) - 0.5) <= 0.05 + 1 / len(pairs), split
        for row, xs in pairs:
            assert xs.min() >= SIZE / 2 + 0.9 or xs.max() <= SIZE / 2 - 0.9, (row["problem_id"], xs)


def test_colour_cue_is_in_the_pixels_only(colour_decoded: dict) -> None:
    from videor1.data.synthetic.drawing import PALETTE

    for split in SPLITS:
        for row, _, _ in colour_decoded[split]:
            text = " ".join([row["problem"], row.get("process") or ""])
            assert not any(colour in text for colour in PALETTE), text
            assert row["problem"] == "In which direction is the square moving?"


def test_the_colour_cue_leaves_the_positional_study_unchanged(tmp_path: Path) -> None:
    # the colour cue's extra draws happen only under it: the positional data are what they were
    a = generate_temporal_study(tmp_path / "a", n_sft=4, n_rl=4, n_test=4, seed=3)
    b = generate_temporal_study(tmp_path / "b", n_sft=4, n_rl=4, n_test=4, seed=3, cue="position")
    assert a.rl_json.read_text() == b.rl_json.read_text()
    plan = _plan(np.random.default_rng(5), 40, 0.8, cue="colour")
    assert all(p.group == p.label for p in plan if p.task == COLOUR_CUE)
    # order-only clips: 8 rows, 4 per class, each class's colour groups 2 and 2
    assert Counter((p.label, p.group) for p in plan if p.task == ORDER_ONLY) == {
        (c, g): 2 for c in (0, 1) for g in (0, 1)}
    with pytest.raises(ValueError, match="cue must be one of position, colour"):
        generate_temporal_study(tmp_path / "c", n_sft=4, n_rl=4, n_test=4, seed=0, cue="shape")
