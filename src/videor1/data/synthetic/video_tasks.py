"""Video task builders: every answer depends on the order of the frames."""

from __future__ import annotations

import numpy as np

from videor1.data.synthetic.drawing import (
    _DIRECTION_VECTORS,
    _GRID_RGB,
    _LETTERS,
    DIRECTIONS,
    PALETTE,
    SHAPES,
    _blank,
    _box,
    _centre,
    _lerp,
    _paint,
    _text,
)
from videor1.data.synthetic.scene import _Canvas, _cap, _choices, _frac, _Item, _pick, _pick_colours, _where


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
    brief = f"The {colour} square moves {direction}."
    return _Item(video, f"In which direction is the {colour} square moving?", options, answer, think, brief)


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
    brief = f"The {colour} {shape} gets {'bigger' if label == 'growing' else 'smaller'} over time."
    return _Item(video, f"Is the {colour} {shape} growing or shrinking?", options, answer, think, brief)


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
    brief = f"{_cap(names[0])} appears first, then {names[1]}."
    problem = "Two shapes are shown one after the other. Which one appeared first?"
    return _Item(video, problem, options, answer, think, brief)


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
    cells = f"{abs(shift)} cell{'s' if abs(shift) > 1 else ''}"
    brief = f"The {colour} square ends {cells} to the {'right' if shift > 0 else 'left'} of where it started."
    problem = (
        f"The {colour} square slides along a row of {_CELLS} equal cells. By how many cells did it move to "
        "the right? Answer with a negative number if it moved to the left."
    )
    return _Item(video, problem, [], str(shift), think, brief)


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
    moves, turns = f"moves {direction}", f"turns {c1}"
    brief = f"The {c0} square " + (f"{moves}, then {turns}." if move_first else f"{turns}, then {moves}.")
    problem = "Describe what the square did, in the order it happened, in one short sentence."
    return _Item(video, problem, [], answer, think, brief)


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
    brief = f"The letters appear as {', '.join(word)}, spelling {word}."
    problem = "Letters are shown one at a time. What word do they spell, read in the order they appear?"
    return _Item(video, problem, [], word, think, brief)


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
    brief = f"The {colour} {shape} travels {value.lstrip('-')} of the width to the {'right' if sign > 0 else 'left'}."
    problem = (
        f"How far did the {colour} {shape} move horizontally, as a fraction of the frame width? "
        "Use a positive number for motion to the right and a negative one for motion to the left."
    )
    return _Item(video, problem, [], value, think, brief)
