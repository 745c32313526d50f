"""Synthetic image + video reasoning data in the exact Video-R1 schema, with real media files.

Used by the tests, by the CPU demo (a tiny random-initialised Qwen2.5-VL must be able to learn it, see
DESIGN §9) and as SFT data with written rationales. Every row is a Video-R1-260k / Video-R1-COT-165k row
(problem_id, problem, data_type, problem_type, options, process, solution, path, data_source) plus two
extra columns, `task` and `order_dependent`.

Design choices, and why:
- Every video question needs the frame order: reversing the frames flips (or scrambles) the answer and
  shuffling them leaves it undetermined. That is what T-GRPO's shuffled group measures.
- Objects are large, colours saturated and the background black: the model may see 56×56 frames.
- Motion is linear over the whole clip (or over a whole half of it), so it shows between any two sampled
  frames and inside each pair that Qwen-VL merges into one temporal patch. Events that happen at one
  instant sit on half/quarter boundaries so that any uniform sampling of >= 4 frames (first and last frame
  always included) sees every state the answer depends on.
- Answers are balanced per task (exact quotas, then shuffled) and the correct option's letter is balanced
  too, so a class prior is worth nothing.
- One `numpy.random.Generator` per split for the plan and one per row for the scene, both seeded from
  `seed`: the same seed gives byte-identical JSON and identical frames, and a row does not depend on how
  many rows were drawn before it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videor1.data.media import write_video

GENERATOR_VERSION = "1"

# Saturated colours with hues at least ~40° apart, so they stay distinct after downsampling and yuv420p.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "yellow": (240, 220, 20),
    "green": (30, 200, 50),
    "cyan": (20, 210, 230),
    "blue": (40, 70, 240),
    "purple": (190, 40, 240),
}
SHAPES = ("square", "circle")
DIRECTIONS = ("left", "right", "up", "down")
_DIRECTION_VECTORS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
# Capitals that do not look alike at low resolution (no O/Q/D/0, I/J/L/1, B/8, G/C).
_LETTERS = "ACEFHKMNPRSTUXYZ"
_TEXT_RGB = (255, 255, 255)
_GRID_RGB = (110, 110, 110)
_IMAGE_SHARE = 0.4  # Video-R1-260k is ~55% image; the brief asks 40% image / 60% video


@dataclass(frozen=True)
class TaskSpec:
    """One synthetic task: its name, Video-R1 problem and data type, and what it asks."""

    name: str
    problem_type: str
    data_type: str
    order_dependent: bool
    description: str


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: file paths and row counts per split and per task."""

    out_dir: Path
    train_json: Path
    test_json: Path
    meta_json: Path
    n_train: int
    n_test: int
    counts: dict[str, dict[str, int]]  # split -> task -> rows


@dataclass(frozen=True)
class _Canvas:
    size: int
    n_frames: int
    fps: float

    def t(self, frame: int) -> str:
        """Timestamp of a frame in seconds, as written in rationales (sampling-independent)."""
        return f"{frame / self.fps:.2f} s"


@dataclass
class _Item:
    media: np.ndarray  # [H, W, 3] for an image, [F, H, W, 3] for a video; uint8
    problem: str
    options: list[str]
    answer: str
    think: str


# ----------------------------------------------------------------------------------------------------------
# drawing

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive


def _box(cx: float, cy: float, side: float) -> Box:
    """Integer pixel box of a shape centred at (cx, cy)."""
    px = int(round(side))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    return x0, y0, x0 + px, y0 + px


def _centre(box: Box) -> tuple[float, float]:
    """Centre of a pixel box in continuous coordinates (pixel i covers [i, i+1))."""
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _paint(img: np.ndarray, shape: str, box: Box, rgb: tuple[int, int, int]) -> None:
    """Paint a filled square or circle into img in place, clipped to the frame."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    if x0 >= x1 or y0 >= y1:
        return
    if shape == "square":
        img[y0:y1, x0:x1] = rgb
        return
    cx, cy = _centre(box)
    r = (box[2] - box[0]) / 2
    yy, xx = np.ogrid[y0:y1, x0:x1]
    mask = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
    img[y0:y1, x0:x1][mask] = rgb


def _blank(size: int, frames: int | None = None) -> np.ndarray:
    """Black image [S, S, 3] or video [F, S, S, 3]."""
    shape = (size, size, 3) if frames is None else (frames, size, size, 3)
    return np.zeros(shape, dtype=np.uint8)


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at a pixel size (no system fonts, so output is the same everywhere)."""
    return ImageFont.load_default(size=px)


def _text(img: np.ndarray, text: str, size_px: int, cx: float, cy: float) -> np.ndarray:
    """Draw white text centred at (cx, cy), shrinking the font until it fits 90% of the width."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    limit = 0.9 * img.shape[1]
    while True:
        font = _font(size_px)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= limit or size_px <= 8:
            break
        size_px -= 2
    draw.text((cx - (left + right) / 2, cy - (top + bottom) / 2), text, font=font, fill=_TEXT_RGB)
    return np.array(pil)


def _lerp(a: float, b: float, i: int, n: int) -> float:
    """Value at step i of n equal steps from a to b."""
    return a + (b - a) * i / max(n - 1, 1)


def _frac(value: float) -> str:
    """A fraction of the frame as plain text with at most 2 decimals ("0.25", "-0.3")."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _where(cx: float, cy: float, size: int) -> str:
    """Position of a point as fractions of the frame, for rationales."""
    return f"x={cx / size:.2f}, y={cy / size:.2f}"


def _choices(
    rng: np.random.Generator, correct: str, others: Sequence[str], letter: int | None
) -> tuple[list[str], str]:
    """Lettered options with the correct one at `letter` (others shuffled); canonical order if None."""
    if letter is None:
        # vocabulary order where there is one (a class keeps its letter), else alphabetical
        ordered = sorted(
            [correct, *others], key=lambda c: (_CANONICAL.index(c) if c in _CANONICAL else 99, c)
        )
    else:
        rest = [others[i] for i in rng.permutation(len(others))]
        ordered = rest[:letter] + [correct] + rest[letter:]
    options = [f"{chr(65 + i)}. {text}" for i, text in enumerate(ordered)]
    return options, chr(65 + ordered.index(correct))


# Fixed order for unshuffled options: vocabulary order, so the letter of a class never changes.
_CANONICAL = (*DIRECTIONS, "growing", "shrinking", *PALETTE)


def _pick_colours(rng: np.random.Generator, k: int) -> list[str]:
    """k distinct palette colour names."""
    names = list(PALETTE)
    return [names[i] for i in rng.choice(len(names), size=k, replace=False)]


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    """One item, uniformly."""
    return items[int(rng.integers(len(items)))]


# ----------------------------------------------------------------------------------------------------------
# video tasks: every answer depends on the order of the frames


def _motion_direction(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """One large square moves steadily in one of four directions; reversed frames give the opposite."""
    s, f = cv.size, cv.n_frames
    direction = DIRECTIONS[cls]
    colour, side = _pick(rng, list(PALETTE)), 0.25 * s
    travel = 0.5 * s  # ~4 px per frame at 56 px: visible inside every temporal pair
    dx, dy = _DIRECTION_VECTORS[direction]
    start_along = rng.uniform(side / 2, s - side / 2 - travel)
    across = rng.uniform(side / 2, s - side / 2)
    video = _blank(s, f)
    centres = []
    for i in range(f):
        along = _lerp(start_along, start_along + travel, i, f)
        pos = along if dx + dy > 0 else s - along  # left/up run the same path mirrored
        cx, cy = (pos, across) if dx else (across, pos)
        box = _box(cx, cy, side)
        _paint(video[i], "square", box, PALETTE[colour])
        centres.append(_centre(box))
    options, answer = _choices(rng, direction, [d for d in DIRECTIONS if d != direction], letter)
    think = (
        f"At {cv.t(0)} the {colour} square is at {_where(*centres[0], s)}. In each later frame it is a bit "
        f"further {direction}, and at {cv.t(f - 1)} it is at {_where(*centres[-1], s)}. Since the frames go "
        f"forward in time, it moved {direction}, which is option {answer}."
    )
    return _Item(video, f"In which direction is the {colour} square moving?", options, answer, think)


def _size_change(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """A shape grows or shrinks steadily about a fixed centre; reversed frames give the opposite."""
    s, f = cv.size, cv.n_frames
    label = ("growing", "shrinking")[cls]
    colour, shape = _pick(rng, list(PALETTE)), _pick(rng, SHAPES)
    small, large = 0.18 * s, 0.62 * s
    first, last = (small, large) if label == "growing" else (large, small)
    cx, cy = (rng.uniform(large / 2, s - large / 2) for _ in range(2))
    video = _blank(s, f)
    for i in range(f):
        _paint(video[i], shape, _box(cx, cy, _lerp(first, last, i, f)), PALETTE[colour])
    other = "shrinking" if label == "growing" else "growing"
    options, answer = _choices(rng, label, [other], letter)
    think = (
        f"At {cv.t(0)} the {colour} {shape} is {first / s:.2f} of the frame wide; at {cv.t(f - 1)} it is "
        f"{last / s:.2f} wide, and its size changes steadily in between. Its size "
        f"{'increases' if label == 'growing' else 'decreases'} over time, so it is {label}: option {answer}."
    )
    return _Item(video, f"Is the {colour} {shape} growing or shrinking?", options, answer, think)


def _appearance_order(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """One shape is shown in the first half, another in the second; reversed frames swap them."""
    s, f = cv.size, cv.n_frames
    colours = _pick_colours(rng, 2)
    shapes = [_pick(rng, SHAPES) for _ in range(2)]
    side = 0.35 * s
    video = _blank(s, f)
    half = f // 2  # the switch sits at the middle: first and last sampled frames always fall either side
    for k in range(2):
        box = _box(rng.uniform(side / 2, s - side / 2), rng.uniform(side / 2, s - side / 2), side)
        for i in range(k * half, f if k else half):
            _paint(video[i], shapes[k], box, PALETTE[colours[k]])
    names = [f"the {c} {sh}" for c, sh in zip(colours, shapes, strict=True)]
    options, answer = _choices(rng, names[0], [names[1]], letter)
    think = (
        f"From {cv.t(0)} to {cv.t(half - 1)} only {names[0]} is visible. From {cv.t(half)} to "
        f"{cv.t(f - 1)} it is gone and {names[1]} is shown instead. So {names[0]} appeared first: "
        f"option {answer}."
    )
    return _Item(
        video, "Two shapes are shown one after the other. Which one appeared first?", options, answer, think
    )


_CELLS = 4
_DISPLACEMENTS = (-3, -2, -1, 1, 2, 3)


def _cell_displacement(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """A square slides along a row of cells; the signed number of cells flips sign when reversed."""
    s, f = cv.size, cv.n_frames
    shift = _DISPLACEMENTS[cls]
    colour = _pick(rng, list(PALETTE))
    cell = s / _CELLS
    start = int(rng.integers(max(0, -shift), _CELLS - max(0, shift)))
    row_y = rng.uniform(cell / 2, s - cell / 2)
    video = _blank(s, f)
    # Grey cell borders make "one cell" readable from the frame itself.
    y0, y1 = int(round(row_y - cell / 2)), int(round(row_y + cell / 2))
    for k in range(_CELLS + 1):
        x = min(int(round(k * cell)), s - 2)
        video[:, y0:y1, x : x + 2] = _GRID_RGB
    video[:, y0 : y0 + 2, :] = _GRID_RGB
    video[:, y1 - 2 : y1, :] = _GRID_RGB
    for i in range(f):
        cx = _lerp((start + 0.5) * cell, (start + shift + 0.5) * cell, i, f)
        _paint(video[i], "square", _box(cx, row_y, cell - 8), PALETTE[colour])
    end = start + shift
    think = (
        f"The row has {_CELLS} cells. At {cv.t(0)} the {colour} square is in cell {start + 1} from the left; "
        f"it slides steadily and at {cv.t(f - 1)} it is in cell {end + 1}. That is {abs(shift)} "
        f"cell{'s' if abs(shift) > 1 else ''} to the {'right' if shift > 0 else 'left'}, so the answer is "
        f"{shift}."
    )
    problem = (
        f"The {colour} square slides along a row of {_CELLS} equal cells. By how many cells did it move to "
        "the right? Answer with a negative number if it moved to the left."
    )
    return _Item(video, problem, [], str(shift), think)


def _event_order(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """A square moves in one half and changes colour in the other; the sentence follows the time order."""
    s, f = cv.size, cv.n_frames
    move_first = cls == 0
    c0, c1 = _pick_colours(rng, 2)
    direction = _pick(rng, DIRECTIONS)
    side, travel = 0.3 * s, 0.45 * s
    dx, dy = _DIRECTION_VECTORS[direction]
    lo = side / 2 + (travel if dx + dy < 0 else 0)
    along = rng.uniform(lo, s - side / 2 - travel + (travel if dx + dy < 0 else 0))
    across = rng.uniform(side / 2, s - side / 2)
    half, quarter = f // 2, f // 4
    # Motion spans a whole half; the colour switch sits at the middle of the other half, so a sampled
    # frame lands on each side of it and the two events never overlap.
    moving = range(0, half) if move_first else range(half, f)
    switch = half + (f - half) // 2 if move_first else quarter
    video = _blank(s, f)
    for i in range(f):
        step = min(max(i - moving.start, 0), len(moving) - 1)
        pos = along + (dx + dy) * _lerp(0, travel, step, len(moving))
        cx, cy = (pos, across) if dx else (across, pos)
        _paint(video[i], "square", _box(cx, cy, side), PALETTE[c1 if i >= switch else c0])
    moved, turned = f"moved {direction}", f"turned {c1}"
    first, second = (moved, turned) if move_first else (turned, moved)
    answer = f"the {c0} square {first}, then {second}"
    t_move = f"from {cv.t(moving.start)} to {cv.t(moving.stop - 1)}"
    think = (
        f"At {cv.t(0)} there is a {c0} square. It moves {direction} {t_move} and stays still otherwise. "
        f"Its colour changes to {c1} at {cv.t(switch)}. "
        + ("The motion ends before the colour changes" if move_first else "It changes colour before it moves")
        + f", so: {answer}."
    )
    problem = "Describe what the square did, in the order it happened, in one short sentence."
    return _Item(video, problem, [], answer, think)


def _reveal_word(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """Three letters are shown one at a time in the same place; reversed frames spell the word backwards."""
    s, f = cv.size, cv.n_frames
    # Three letters: with >= 4 uniformly sampled frames the spacing is below a third of the clip, so
    # every letter is seen at least once whatever the clip length.
    word = "".join(_LETTERS[i] for i in rng.choice(len(_LETTERS), size=3, replace=False))
    cx, cy = rng.uniform(0.4 * s, 0.6 * s), rng.uniform(0.4 * s, 0.6 * s)
    video = _blank(s, f)
    spans = []
    for k, ch in enumerate(word):
        frames = [i for i in range(f) if i * len(word) // f == k]
        spans.append((frames[0], frames[-1]))
        glyph = _text(_blank(s), ch, int(0.6 * s), cx, cy)
        video[frames[0] : frames[-1] + 1] = glyph
    seen = "; ".join(f"'{ch}' from {cv.t(a)} to {cv.t(b)}" for ch, (a, b) in zip(word, spans, strict=True))
    think = f"One letter is shown at a time: {seen}. Read in the order they appear, the word is {word}."
    problem = "Letters are shown one at a time. What word do they spell, read in the order they appear?"
    return _Item(video, problem, [], word, think)


def _travel_fraction(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """A shape moves horizontally; the signed distance (fraction of width) flips sign when reversed."""
    s, f = cv.size, cv.n_frames
    sign = (1, -1)[cls]
    colour, shape = _pick(rng, list(PALETTE)), _pick(rng, SHAPES)
    side = 0.25 * s
    travel = int(round(rng.uniform(0.3, 0.65) * s))
    x_left = rng.uniform(side / 2, s - side / 2 - travel)
    x0, x1 = (x_left, x_left + travel) if sign > 0 else (x_left + travel, x_left)
    cy = rng.uniform(side / 2, s - side / 2)
    video = _blank(s, f)
    boxes = [_box(_lerp(x0, x1, i, f), cy, side) for i in range(f)]
    for i, box in enumerate(boxes):
        _paint(video[i], shape, box, PALETTE[colour])
    (sx, _), (ex, _) = _centre(boxes[0]), _centre(boxes[-1])
    value = _frac((ex - sx) / s)
    think = (
        f"At {cv.t(0)} the centre of the {colour} {shape} is at x={sx / s:.2f} of the width; at "
        f"{cv.t(f - 1)} it is at x={ex / s:.2f}. It moved {'right' if sign > 0 else 'left'}, so the signed "
        f"distance is {ex / s:.2f} - {sx / s:.2f} = {value}."
    )
    problem = (
        f"How far did the {colour} {shape} move horizontally, as a fraction of the frame width? "
        "Use a positive number for motion to the right and a negative one for motion to the left."
    )
    return _Item(video, problem, [], value, think)


# ----------------------------------------------------------------------------------------------------------
# image tasks

_GRID = 3  # count task: one shape per cell of a 3×3 grid keeps shapes apart and countable


def _count_shapes(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """1 to 5 separated shapes; count them."""
    s = cv.size
    count = cls + 1
    cell = s / _GRID
    side = 0.65 * cell
    slack = (cell - side) / 2 - 2  # keeps >= 4 px of background between neighbours
    img = _blank(s)
    seen = []
    for c in sorted(rng.choice(_GRID * _GRID, size=count, replace=False)):
        row, col = divmod(int(c), _GRID)
        cx = (col + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (row + 0.5) * cell + rng.uniform(-slack, slack)
        colour, shape = _pick(rng, list(PALETTE)), _pick(rng, SHAPES)
        _paint(img, shape, _box(cx, cy, side), PALETTE[colour])
        seen.append(f"a {colour} {shape} at {_where(cx, cy, s)}")
    think = f"I look at each shape in turn: {'; '.join(seen)}. That makes {count}."
    return _Item(img, "How many shapes are in the image?", [], str(count), think)


_QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _colour_at_position(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """Four shapes, one per quadrant, in four colours; name the colour in the asked quadrant."""
    s = cv.size
    colours = _pick_colours(rng, 4)
    side = 0.32 * s
    img = _blank(s)
    for q, colour in enumerate(colours):
        row, col = divmod(q, 2)
        cx = (col + 0.5) * s / 2 + rng.uniform(-0.05, 0.05) * s
        cy = (row + 0.5) * s / 2 + rng.uniform(-0.05, 0.05) * s
        _paint(img, _pick(rng, SHAPES), _box(cx, cy, side), PALETTE[colour])
    where, colour = _QUADRANTS[cls], colours[cls]
    options, answer = _choices(rng, colour, [c for c in colours if c != colour], letter)
    listing = ", ".join(f"{c} at the {q}" for q, c in zip(_QUADRANTS, colours, strict=True))
    think = (
        f"There is one shape in each corner: {listing}. The one at the {where} is {colour}: option {answer}."
    )
    return _Item(img, f"What colour is the shape in the {where} of the image?", options, answer, think)


def _image_text(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """A random 3-4 letter word written large; transcribe it."""
    s = cv.size
    length = int(rng.integers(3, 5))  # short enough to stay legible at 56 px
    word = "".join(_LETTERS[i] for i in rng.choice(len(_LETTERS), size=length, replace=False))
    cy = rng.uniform(0.35 * s, 0.65 * s)
    img = _text(_blank(s), word, int(0.4 * s), s / 2, cy)
    think = f"There is one line of white capital letters in the middle of the image, reading {word}."
    return _Item(img, "What text is written in the image?", [], word, think)


def _shape_position(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """One shape; its centre's horizontal position as a fraction of the width."""
    s = cv.size
    colour, shape = _pick(rng, list(PALETTE)), _pick(rng, SHAPES)
    side = 0.25 * s
    box = _box(rng.uniform(side / 2, s - side / 2), rng.uniform(side / 2, s - side / 2), side)
    img = _blank(s)
    _paint(img, shape, box, PALETTE[colour])
    cx, _ = _centre(box)
    value = _frac(cx / s)
    think = (
        f"The {colour} {shape} spans x={box[0] / s:.2f} to x={box[2] / s:.2f} of the width, so its centre is "
        f"at {value}."
    )
    problem = (
        f"Where is the centre of the {colour} {shape}, as a fraction of the image width measured from the "
        "left edge?"
    )
    return _Item(img, problem, [], value, think)


def _describe_pair(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """Two shapes side by side or stacked; a canonical sentence names the left/top one first."""
    s = cv.size
    horizontal = cls == 0
    colours = _pick_colours(rng, 2)
    shapes = [_pick(rng, SHAPES) for _ in range(2)]
    side = 0.32 * s
    img = _blank(s)
    # A shared cross-axis line (small jitter only) so exactly one relation is true: never diagonal.
    line = rng.uniform(side / 2 + 0.05 * s, s - side / 2 - 0.05 * s)
    for k in range(2):
        along = (k + 0.5) * s / 2 + rng.uniform(-0.04, 0.04) * s
        across = line + rng.uniform(-0.04, 0.04) * s
        cx, cy = (along, across) if horizontal else (across, along)
        _paint(img, shapes[k], _box(cx, cy, side), PALETTE[colours[k]])
    a, b = (f"a {c} {sh}" for c, sh in zip(colours, shapes, strict=True))
    relation = "to the left of" if horizontal else "above"
    answer = f"{a} {relation} {b}"
    side_a, side_b = ("left", "right") if horizontal else ("top", "bottom")
    think = f"I see {a} on the {side_a} and {b} on the {side_b}, so: {answer}."
    problem = "Describe the two shapes and where they are relative to each other, in one short sentence."
    return _Item(img, problem, [], answer, think)


# ----------------------------------------------------------------------------------------------------------
# registry

_Builder = Callable[[np.random.Generator, _Canvas, int, int | None], _Item]


@dataclass(frozen=True)
class _Entry:
    spec: TaskSpec
    build: _Builder
    n_classes: int  # answer classes balanced by quota (1: nothing to balance beyond the letter)
    n_options: int  # options of a multiple-choice task (0 otherwise); the correct letter is balanced


def _entry(name: str, ptype: str, dtype: str, build: _Builder, n_classes: int, n_options: int = 0) -> _Entry:
    """Registry entry; video tasks are order-dependent by construction."""
    spec = TaskSpec(name, ptype, dtype, dtype == "video", (build.__doc__ or "").strip())
    return _Entry(spec, build, n_classes, n_options)


_REGISTRY: dict[str, _Entry] = {
    e.spec.name: e
    for e in (
        _entry("motion_direction", "multiple choice", "video", _motion_direction, 4, 4),
        _entry("size_change", "multiple choice", "video", _size_change, 2, 2),
        _entry("appearance_order", "multiple choice", "video", _appearance_order, 1, 2),
        _entry("cell_displacement", "numerical", "video", _cell_displacement, len(_DISPLACEMENTS)),
        _entry("event_order", "free-form", "video", _event_order, 2),
        _entry("reveal_word", "OCR", "video", _reveal_word, 1),
        _entry("travel_fraction", "regression", "video", _travel_fraction, 2),
        _entry("count_shapes", "numerical", "image", _count_shapes, 5),
        _entry("colour_at_position", "multiple choice", "image", _colour_at_position, 4, 4),
        _entry("image_text", "OCR", "image", _image_text, 1),
        _entry("shape_position", "regression", "image", _shape_position, 1),
        _entry("describe_pair", "free-form", "image", _describe_pair, 2),
    )
}

TASKS: dict[str, TaskSpec] = {name: entry.spec for name, entry in _REGISTRY.items()}


# ----------------------------------------------------------------------------------------------------------
# planning and writing


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """Split total into integer parts proportional to weights (largest remainder, ties by position)."""
    exact = np.asarray(weights, dtype=float) / sum(weights) * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return [int(c) for c in counts]


def _quotas(n: int, names: Sequence[str]) -> dict[str, int]:
    """Rows per task: 40% image / 60% video when both kinds are asked for, equal within a kind."""
    kinds = [k for k in ("image", "video") if any(TASKS[t].data_type == k for t in names)]
    share = {"image": _IMAGE_SHARE, "video": 1 - _IMAGE_SHARE}
    # Kinds first, then tasks within a kind, so the image/video ratio is as close to 40/60 as n allows.
    quotas: dict[str, int] = {}
    for kind, rows in zip(kinds, _apportion(n, [share[k] for k in kinds]), strict=True):
        members = [t for t in names if TASKS[t].data_type == kind]
        quotas.update(zip(members, _apportion(rows, [1.0] * len(members)), strict=True))
    return {t: quotas[t] for t in names}


def _balanced(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """m labels in range(k), each used floor(m/k) or ceil(m/k) times, in random order."""
    extra = rng.permutation(k)[: m % k]  # which classes get the leftover rows is random, not always the first
    labels = np.concatenate([np.repeat(np.arange(k), m // k), extra])
    return rng.permutation(labels)


def _plan(rng: np.random.Generator, n: int, names: Sequence[str]) -> list[tuple[str, int, int]]:
    """Shuffled (task, class, letter) triples for one split, with balanced classes and letters."""
    rows: list[tuple[str, int, int]] = []
    for name, m in _quotas(n, names).items():
        entry = _REGISTRY[name]
        classes = _balanced(rng, m, entry.n_classes)
        letters = _balanced(rng, m, max(entry.n_options, 1))
        rows += [(name, int(c), int(x)) for c, x in zip(classes, letters, strict=True)]
    return [rows[i] for i in rng.permutation(len(rows))]


def _write_media(out_dir: Path, problem_id: int, item: _Item, data_type: str, fps: float) -> str:
    """Write the row's image/video and return its Video-R1 style relative path."""
    if data_type == "video":
        rel = f"videos/{problem_id:06d}.mp4"
        write_video(out_dir / rel, item.media, fps)
    else:
        rel = f"images/{problem_id:06d}.png"
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.media).save(out_dir / rel)
    return "./" + rel


def render(
    task: str,
    *,
    seed: int,
    label: int = 0,
    letter: int | None = 0,
    size: int = 112,
    n_frames: int = 8,
    fps: float = 4.0,
) -> tuple[np.ndarray, dict[str, object]]:
    """Build one task's media and row fields in memory (no files); for tests, previews and notebooks."""
    entry = _REGISTRY[task]
    if not 0 <= label < entry.n_classes:
        raise ValueError(f"label {label} out of range for {task} ({entry.n_classes} classes)")
    item = entry.build(
        np.random.default_rng(seed),
        _Canvas(size, n_frames, fps),
        label,
        None if entry.n_options == 0 or letter is None else letter % entry.n_options,
    )
    return item.media, _fields(item, entry.spec)


def _fields(item: _Item, spec: TaskSpec) -> dict[str, object]:
    """The row's schema fields other than problem_id and path."""
    return {
        "problem": item.problem,
        "data_type": spec.data_type,
        "problem_type": spec.problem_type,
        "options": item.options,
        "process": f"<think>{item.think}</think>",
        "solution": f"<answer>{item.answer}</answer>",
    }


def _write_split(
    out_dir: Path,
    plan: list[tuple[str, int, int]],
    *,
    seed: int,
    split_index: int,
    first_id: int,
    canvas: _Canvas,
    shuffle_options: bool,
    on_row: Callable[[], None],
) -> list[dict[str, object]]:
    """Build and write every row of one split; problem ids count up from first_id."""
    rows = []
    for row_index, (name, label, letter) in enumerate(plan):
        entry = _REGISTRY[name]
        # One generator per row: a row's scene depends only on (seed, split, row), not on earlier rows.
        rng = np.random.default_rng([seed, split_index, row_index])
        item = entry.build(rng, canvas, label, letter if shuffle_options and entry.n_options else None)
        problem_id = first_id + row_index
        rows.append(
            {
                "problem_id": problem_id,
                **_fields(item, entry.spec),
                "path": _write_media(out_dir, problem_id, item, entry.spec.data_type, canvas.fps),
                "data_source": f"synthetic/{name}",
                "task": name,
                "order_dependent": entry.spec.order_dependent,
            }
        )
        on_row()
    return rows


def generate(
    out_dir: Path,
    *,
    n: int,
    seed: int,
    n_test: int | None = None,
    size: int = 112,
    fps: float = 4.0,
    seconds: float = 2.0,
    tasks: Sequence[str] | None = None,
    shuffle_options: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write train.json, test.json, synth.json and the media of a synthetic Video-R1 dataset to out_dir."""
    out_dir = Path(out_dir)
    n_test = max(1, n // 4) if n_test is None else n_test
    n_frames = int(round(fps * seconds))
    names = list(TASKS) if tasks is None else list(tasks)
    _validate(n=n, n_test=n_test, seed=seed, size=size, n_frames=n_frames, names=names)
    canvas = _Canvas(size, n_frames, fps)
    done = 0

    def on_row() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, n + n_test)

    splits: dict[str, list[dict[str, object]]] = {}
    for split_index, (split, count) in enumerate((("train", n), ("test", n_test))):
        plan = _plan(np.random.default_rng([seed, split_index]), count, names)
        splits[split] = _write_split(
            out_dir, plan, seed=seed, split_index=split_index, first_id=0 if split == "train" else n,
            canvas=canvas, shuffle_options=shuffle_options, on_row=on_row,
        )  # fmt: skip
    counts = {split: dict(sorted(Counter(r["task"] for r in rows).items())) for split, rows in splits.items()}
    meta = {
        "generator": "videor1.data.synthetic", "version": GENERATOR_VERSION, "seed": seed, "n": n,
        "n_test": n_test, "size": size, "fps": fps, "seconds": seconds, "n_frames": n_frames,
        "tasks": names, "shuffle_options": shuffle_options, "counts": counts,
    }  # fmt: skip
    # JSON last: a run that dies half-way leaves no train.json pointing at missing media.
    paths = {name: out_dir / f"{name}.json" for name in ("train", "test", "synth")}
    for split, rows in splits.items():
        paths[split].write_text(json.dumps(rows, indent=1) + "\n")
    paths["synth"].write_text(json.dumps(meta, indent=1) + "\n")
    return SynthSummary(out_dir, paths["train"], paths["test"], paths["synth"], n, n_test, counts)


def _validate(*, n: int, n_test: int, seed: int, size: int, n_frames: int, names: Sequence[str]) -> None:
    """Reject settings that would write unusable or unlearnable data, naming the argument."""
    if n < 1 or n_test < 1:
        raise ValueError(f"n and n_test must be >= 1, got n={n}, n_test={n_test}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size < 56 or size % 2:
        raise ValueError(f"size must be even and >= 56 (yuv420p, and the model's smallest view), got {size}")
    if n_frames < 4:
        raise ValueError(f"fps * seconds must give >= 4 frames (the sampler's minimum), got {n_frames}")
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown or empty tasks {unknown}; choose from {', '.join(TASKS)}")
