"""Synthetic Video-R1 data: schema, determinism, balance, and answers that follow from the media."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from videor1.cli import app
from videor1.data.synthetic import TASKS, SynthSummary, generate, render
from videor1.data.synthetic.tasks import _REGISTRY

FIELDS = {
    "problem_id": int,
    "problem": str,
    "data_type": str,
    "problem_type": str,
    "options": list,
    "process": str,
    "solution": str,
    "path": str,
    "data_source": str,
    "task": str,
    "order_dependent": bool,
}
PROBLEM_TYPES = {"multiple choice", "numerical", "OCR", "free-form", "regression"}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "out", n=40, seed=0)


def _rows(summary: SynthSummary, split: str = "train") -> list[dict]:
    return json.loads((summary.train_json if split == "train" else summary.test_json).read_text())


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [F, H, W, 3]


def _answer(row: dict) -> str:
    return re.fullmatch(r"<answer>(.*)</answer>", row["solution"], re.S).group(1)


def _option_text(row: dict) -> str:
    """The text of the correct option ("B" -> "right")."""
    letter = _answer(row)
    return next(o.split(". ", 1)[1] for o in row["options"] if o.startswith(letter + "."))


def _foreground(frame: np.ndarray) -> np.ndarray:
    # background is black; saturated shapes have one channel far above it even after yuv420p
    return frame.max(axis=-1) > 80  # [H, W]


def _centroid(frame: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(_foreground(frame))
    return np.array([xs.mean(), ys.mean()])


def _direction(first: np.ndarray, last: np.ndarray) -> str:
    dx, dy = _centroid(last) - _centroid(first)
    if abs(dx) > abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _count_blobs(mask: np.ndarray) -> int:
    """4-connected components by flood fill (no scipy needed for 112×112)."""
    seen = np.zeros_like(mask)
    blobs = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        blobs += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return blobs


def _sample(n_frames: int, n_samples: int) -> np.ndarray:
    """qwen-vl-utils frame sampling: uniform linspace over the clip, rounded."""
    return np.round(np.linspace(0, n_frames - 1, n_samples)).astype(int)


def test_covers_every_problem_type_and_both_media(dataset: SynthSummary) -> None:
    rows = _rows(dataset)
    assert len(rows) == 40 and len(_rows(dataset, "test")) == 10  # n_test defaults to n // 4
    assert {r["problem_type"] for r in rows} == PROBLEM_TYPES
    assert Counter(r["data_type"] for r in rows) == {"image": 16, "video": 24}  # 40% / 60%
    assert {r["task"] for r in rows} == set(TASKS)


def test_schema_fields_and_types(dataset: SynthSummary) -> None:
    rows = _rows(dataset) + _rows(dataset, "test")
    for row in rows:
        assert list(row) == list(FIELDS)
        for key, kind in FIELDS.items():
            assert type(row[key]) is kind, (key, row[key])
        spec = TASKS[row["task"]]
        assert (row["problem_type"], row["data_type"]) == (spec.problem_type, spec.data_type)
        assert row["data_source"] == f"synthetic/{row['task']}"
        assert row["order_dependent"] == (row["data_type"] == "video")
        assert re.fullmatch(r"<think>[^<>]+</think>", row["process"]), row["process"]
        assert re.fullmatch(r"<answer>[^<>]+</answer>", row["solution"]), row["solution"]
        assert "Options" not in row["problem"]
        if row["problem_type"] == "multiple choice":
            letters = [o.split(". ", 1)[0] for o in row["options"]]
            assert letters == [chr(65 + i) for i in range(len(letters))] and len(letters) >= 2
            assert _answer(row) in letters
        else:
            assert row["options"] == []
        if row["problem_type"] in ("numerical", "regression"):
            float(_answer(row))
    ids = [r["problem_id"] for r in rows]
    assert len(set(ids)) == len(ids)


def test_paths_exist_inside_out_and_splits_disjoint(dataset: SynthSummary) -> None:
    root = dataset.out_dir.resolve()
    paths = {}
    for split in ("train", "test"):
        for row in _rows(dataset, split):
            assert row["path"].startswith("./")
            path = (dataset.out_dir / row["path"]).resolve()
            assert path.is_file() and path.is_relative_to(root)
            assert path.suffix == (".mp4" if row["data_type"] == "video" else ".png")
            paths.setdefault(split, set()).add(path)
    assert not paths["train"] & paths["test"]


def test_meta_file_and_progress(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    summary = generate(
        tmp_path, n=12, n_test=3, seed=5, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(i, 15) for i in range(1, 16)]
    meta = json.loads(summary.meta_json.read_text())
    assert {k: meta[k] for k in ("seed", "n", "n_test", "size", "fps", "seconds")} == {
        "seed": 5,
        "n": 12,
        "n_test": 3,
        "size": 112,
        "fps": 4.0,
        "seconds": 2.0,
    }
    assert meta["version"] and meta["counts"] == summary.counts
    assert sum(summary.counts["train"].values()) == 12 and sum(summary.counts["test"].values()) == 3


def test_deterministic_for_a_seed(dataset: SynthSummary, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", n=40, seed=0)
    other = generate(tmp_path / "other", n=40, seed=1)
    assert again.train_json.read_bytes() == dataset.train_json.read_bytes()
    assert again.test_json.read_bytes() == dataset.test_json.read_bytes()
    assert other.train_json.read_bytes() != dataset.train_json.read_bytes()
    video = next(r["path"] for r in _rows(dataset) if r["data_type"] == "video")
    assert np.array_equal(_decode(dataset.out_dir / video), _decode(again.out_dir / video))
    assert not np.array_equal(_decode(dataset.out_dir / video), _decode(other.out_dir / video))


def test_direction_answer_follows_from_video_and_flips_when_reversed(dataset: SynthSummary) -> None:
    rows = [r for r in _rows(dataset) + _rows(dataset, "test") if r["task"] == "motion_direction"]
    assert rows
    for row in rows:
        frames = _decode(dataset.out_dir / row["path"])  # [F, H, W, 3]
        assert _direction(frames[0], frames[-1]) == _option_text(row)
        reversed_frames = frames[::-1]
        assert _direction(reversed_frames[0], reversed_frames[-1]) == OPPOSITE[_option_text(row)]
        # visible motion between every pair of consecutive frames, not only end to end
        steps = [np.abs(_centroid(b) - _centroid(a)).max() for a, b in zip(frames, frames[1:], strict=False)]
        assert min(steps) >= 0.02 * frames.shape[2]


def test_count_answer_follows_from_image(dataset: SynthSummary) -> None:
    rows = [r for r in _rows(dataset) + _rows(dataset, "test") if r["task"] == "count_shapes"]
    assert rows
    for row in rows:
        image = np.asarray(Image.open(dataset.out_dir / row["path"]).convert("RGB"))
        assert _count_blobs(_foreground(image)) == int(_answer(row))


def test_answers_and_letters_balanced(tmp_path: Path) -> None:
    rows = _rows(generate(tmp_path, n=200, seed=3))
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    classes = {
        "motion_direction": _option_text,
        "size_change": _option_text,
        "count_shapes": _answer,
        "cell_displacement": _answer,
        "travel_fraction": lambda r: _answer(r).startswith("-"),
        "event_order": lambda r: _answer(r).split(" ")[3],  # "moved" or "turned" comes first
        "describe_pair": lambda r: "above" in _answer(r),
    }
    for task, key in classes.items():
        counts = Counter(key(r) for r in by_task[task])
        assert max(counts.values()) - min(counts.values()) <= 1, (task, counts)
    for task, group in by_task.items():
        if TASKS[task].problem_type == "multiple choice":
            counts = Counter(_answer(r) for r in group)
            assert len(counts) == len(group[0]["options"])
            assert max(counts.values()) - min(counts.values()) <= 1, (task, counts)


@pytest.mark.parametrize("n_frames", [8, 12, 16])
@pytest.mark.parametrize("n_samples", [4, 6, 8])
def test_any_uniform_sampling_sees_what_the_answer_needs(n_frames: int, n_samples: int) -> None:
    idx = _sample(n_frames, n_samples)
    for task in ("motion_direction", "size_change", "travel_fraction", "cell_displacement"):
        frames, _ = render(task, seed=n_frames, n_frames=n_frames)
        sampled = frames[idx]  # [S, H, W, 3]
        # each sampled frame differs from the next, so each temporal pair shows the change
        assert all(not np.array_equal(a, b) for a, b in zip(sampled, sampled[1:], strict=False)), task
    frames, row = render("reveal_word", seed=n_frames, n_frames=n_frames)
    distinct = [f for i, f in enumerate(frames[idx]) if i == 0 or not np.array_equal(f, frames[idx][i - 1])]
    assert len(distinct) == len(_answer(row)) == 3
    for label, moved_first in ((0, True), (1, False)):
        frames, row = render("event_order", seed=n_frames, label=label, n_frames=n_frames)
        sampled = frames[idx]
        masks = [_foreground(f) for f in sampled]
        colours = [tuple(f[m].mean(0).round()) for f, m in zip(sampled, masks, strict=True)]
        # sampled steps (i -> i+1) at which the square moved / changed colour
        moves = [i for i in range(n_samples - 1) if not np.array_equal(masks[i], masks[i + 1])]
        turns = [i for i in range(n_samples - 1) if colours[i] != colours[i + 1]]
        assert moves and len(turns) == 1
        assert (max(moves) < turns[0]) if moved_first else (turns[0] < min(moves)), (label, moves, turns)


def test_unshuffled_options_keep_vocabulary_order(tmp_path: Path) -> None:
    rows = _rows(generate(tmp_path, n=24, seed=0, tasks=["motion_direction"], shuffle_options=False))
    assert all(r["options"] == ["A. left", "B. right", "C. up", "D. down"] for r in rows)
    assert all(r["data_type"] == "video" for r in rows)


@pytest.mark.parametrize(
    "kwargs", [{"n": 0}, {"seed": -1}, {"size": 57}, {"fps": 1.0}, {"tasks": ["nope"]}, {"tasks": []}]
)
def test_rejects_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, **{"n": 4, "seed": 0, **kwargs})


# sha256 of train.json / test.json for generate(n=40, seed=0), recorded before the "brief" rationale existed:
# the default (detailed) output must stay byte-identical.
DETAILED_TRAIN_SHA = "3c14fd905f079f5fd4b29541af4bfdd980b2653162d9f694de1ab9303084005c"
DETAILED_TEST_SHA = "668af624c487bc962a4a50106a813638dbd69c99ef462ab758e4d0af3f3e33d0"


def test_detailed_rationale_is_the_unchanged_default(dataset: SynthSummary) -> None:
    assert hashlib.sha256(dataset.train_json.read_bytes()).hexdigest() == DETAILED_TRAIN_SHA
    assert hashlib.sha256(dataset.test_json.read_bytes()).hexdigest() == DETAILED_TEST_SHA
    assert json.loads(dataset.meta_json.read_text())["rationale"] == "detailed"
    _, default = render("motion_direction", seed=3)
    _, detailed = render("motion_direction", seed=3, rationale="detailed")
    assert default == detailed and " s " in default["process"] and "x=" in default["process"]


def _think(row: dict) -> str:
    return re.fullmatch(r"<think>([^<>]+)</think>", row["process"]).group(1)


def _brief_names_the_answer(task: str, brief: str, row: dict) -> bool:
    """The decisive word(s) of each task's answer, stated in the brief rationale."""
    answer = _answer(row)
    words = brief.lower().rstrip(".").replace(",", "").split()
    if task == "motion_direction":
        return _option_text(row) in words and not (set(OPPOSITE) - {_option_text(row)}) & set(words)
    if task == "size_change":
        return ("bigger" if _option_text(row) == "growing" else "smaller") in words
    if task == "appearance_order":
        return brief.startswith(_option_text(row).capitalize() + " appears first, then the ")
    if task == "cell_displacement":
        k = int(answer)
        cells = f"{abs(k)} cell{'s' if abs(k) > 1 else ''} to the {'right' if k > 0 else 'left'}"
        return cells in brief
    if task == "travel_fraction":
        return f" {answer.lstrip('-')} of the width to the {'left' if answer.startswith('-') else 'right'}" in brief
    if task == "event_order":  # same events, same order, present tense
        return brief.lower() == answer.replace("moved", "moves").replace("turned", "turns") + "."
    if task == "reveal_word":
        return f"appear as {', '.join(answer)}, spelling {answer}." in brief
    if task == "count_shapes":
        return f"I count {answer} shape" in brief
    if task == "colour_at_position":
        where = re.search(r"in the (\S+) of the image", row["problem"]).group(1).replace("-", " ")
        return brief == f"The shape in the {where} is {_option_text(row)}."
    if task in ("image_text", "shape_position"):
        return answer in brief.rstrip(".").split()
    if task == "describe_pair":
        a, relation, b = re.fullmatch(r"a (.+?) (to the left of|above) a (.+)", answer).groups()
        return brief == f"The {a} is {relation} the {b}."
    raise AssertionError(f"no brief check for {task}")


@pytest.mark.parametrize("task", list(TASKS))
def test_brief_rationale_is_short_plain_and_states_the_answer(task: str) -> None:
    for label in range(_REGISTRY[task].n_classes):
        for seed in range(3):
            _, row = render(task, seed=seed, label=label, letter=seed, rationale="brief")
            brief = _think(row)
            assert 3 <= len(brief.split()) <= 20, brief
            assert "x=" not in brief and "y=" not in brief and not re.search(r"\d s\b", brief), brief
            # the only decimal allowed is the (unsigned) numerical answer itself
            assert set(re.findall(r"\d+\.\d+", brief)) <= {_answer(row).lstrip("-")}, brief
            assert _brief_names_the_answer(task, brief, row), (task, brief, row["solution"], row["options"])
            _, detailed = render(task, seed=seed, label=label, letter=seed)
            assert {k: v for k, v in row.items() if k != "process"} == {
                k: v for k, v in detailed.items() if k != "process"
            }


def test_brief_dataset_deterministic_and_differs_only_in_process(tmp_path: Path) -> None:
    brief = generate(tmp_path / "brief", n=12, n_test=3, seed=2, rationale="brief")
    again = generate(tmp_path / "again", n=12, n_test=3, seed=2, rationale="brief")
    detailed = generate(tmp_path / "detailed", n=12, n_test=3, seed=2)
    assert json.loads(brief.meta_json.read_text())["rationale"] == "brief"
    for split in ("train", "test"):
        rows, rows_detailed = _rows(brief, split), _rows(detailed, split)
        assert _rows(again, split) == rows and (brief.out_dir / f"{split}.json").read_bytes() == (
            again.out_dir / f"{split}.json"
        ).read_bytes()
        for row, row_detailed in zip(rows, rows_detailed, strict=True):
            assert len(_think(row).split()) <= 20 and len(_think(row)) < len(_think(row_detailed))
            assert {**row, "process": ""} == {**row_detailed, "process": ""}
            media = (brief.out_dir / row["path"]).read_bytes()
            assert media == (again.out_dir / row["path"]).read_bytes() == (detailed.out_dir / row["path"]).read_bytes()


def test_rejects_unknown_rationale_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'terse'"):
        generate(tmp_path, n=4, seed=0, rationale="terse")
    with pytest.raises(ValueError, match="'terse'"):
        render("count_shapes", seed=0, rationale="terse")
    assert not (tmp_path / "train.json").exists()


def test_cli_synth_rationale_option(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "b"), "--n", "4", "--rationale", "brief"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "synth.json").read_text())["rationale"] == "brief"
    rows = json.loads((tmp_path / "b" / "train.json").read_text())
    assert all(len(_think(r).split()) <= 20 for r in rows)
    result = runner.invoke(app, ["data", "synth", str(tmp_path / "t"), "--n", "4", "--rationale", "terse"])
    assert result.exit_code == 2 and "terse" in result.output
