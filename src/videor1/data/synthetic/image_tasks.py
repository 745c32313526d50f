"""Image task builders: counting, colour at a position, OCR, position regression and a free-form caption."""

from __future__ import annotations

import numpy as np

from videor1.data.synthetic.drawing import _LETTERS, PALETTE, SHAPES, _blank, _box, _centre, _paint, _text
from videor1.data.synthetic.scene import _Canvas, _choices, _frac, _Item, _pick, _pick_colours, _where

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
    brief = f"I count {count} shape{'s' if count > 1 else ''}."
    return _Item(img, "How many shapes are in the image?", [], str(count), think, brief)


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
    brief = f"The shape in the {where.replace('-', ' ')} is {colour}."
    return _Item(img, f"What colour is the shape in the {where} of the image?", options, answer, think, brief)


def _image_text(rng: np.random.Generator, cv: _Canvas, cls: int, letter: int | None) -> _Item:
    """A random 3-4 letter word written large; transcribe it."""
    s = cv.size
    length = int(rng.integers(3, 5))  # short enough to stay legible at 56 px
    word = "".join(_LETTERS[i] for i in rng.choice(len(_LETTERS), size=length, replace=False))
    cy = rng.uniform(0.35 * s, 0.65 * s)
    img = _text(_blank(s), word, int(0.4 * s), s / 2, cy)
    think = f"There is one line of white capital letters in the middle of the image, reading {word}."
    brief = f"The image says {word}."
    return _Item(img, "What text is written in the image?", [], word, think, brief)


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
    brief = f"The {colour} {shape}'s centre is at {value} of the width."
    problem = (
        f"Where is the centre of the {colour} {shape}, as a fraction of the image width measured from the "
        "left edge?"
    )
    return _Item(img, problem, [], value, think, brief)


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
    brief = f"The {colours[0]} {shapes[0]} is {relation} the {colours[1]} {shapes[1]}."
    problem = "Describe the two shapes and where they are relative to each other, in one short sentence."
    return _Item(img, problem, [], answer, think, brief)
