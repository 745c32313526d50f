"""The task registry (TaskSpec, TASKS) and in-memory rendering of one task's row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from videor1.data.synthetic.image_tasks import (
    _colour_at_position,
    _count_shapes,
    _describe_pair,
    _image_text,
    _shape_position,
)
from videor1.data.synthetic.scene import _Canvas, _Item
from videor1.data.synthetic.video_tasks import (
    _DISPLACEMENTS,
    _appearance_order,
    _cell_displacement,
    _event_order,
    _motion_direction,
    _reveal_word,
    _size_change,
    _travel_fraction,
)


@dataclass(frozen=True)
class TaskSpec:
    """One synthetic task: its name, Video-R1 problem and data type, and what it asks."""

    name: str
    problem_type: str
    data_type: str
    order_dependent: bool
    description: str


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

# "detailed": the full rationale (positions, timestamps, decimals); "brief": one short sentence a tiny model can learn
RATIONALES = ("detailed", "brief")


def _check_rationale(rationale: str) -> None:
    if rationale not in RATIONALES:
        raise ValueError(f"rationale must be one of {', '.join(RATIONALES)}, got {rationale!r}")


def render(
    task: str,
    *,
    seed: int,
    label: int = 0,
    letter: int | None = 0,
    size: int = 112,
    n_frames: int = 8,
    fps: float = 4.0,
    rationale: str = "detailed",
) -> tuple[np.ndarray, dict[str, object]]:
    """Build one task's media and row fields in memory (no files); for tests, previews and notebooks."""
    _check_rationale(rationale)
    entry = _REGISTRY[task]
    if not 0 <= label < entry.n_classes:
        raise ValueError(f"label {label} out of range for {task} ({entry.n_classes} classes)")
    item = entry.build(
        np.random.default_rng(seed),
        _Canvas(size, n_frames, fps),
        label,
        None if entry.n_options == 0 or letter is None else letter % entry.n_options,
    )
    return item.media, _fields(item, entry.spec, rationale)


def _fields(item: _Item, spec: TaskSpec, rationale: str = "detailed") -> dict[str, object]:
    """The row's schema fields other than problem_id and path; `rationale` picks the process text."""
    think = item.brief if rationale == "brief" else item.think
    return {
        "problem": item.problem,
        "data_type": spec.data_type,
        "problem_type": spec.problem_type,
        "options": item.options,
        "process": f"<think>{think}</think>",
        "solution": f"<answer>{item.answer}</answer>",
    }
