"""Synthetic image + video reasoning data in the exact Video-R1 schema, with real media files.

Used by the tests, by the CPU demo (a tiny random-initialised Qwen2.5-VL must be able to learn it, see
docs/design.md §9) and as SFT data with written rationales. Every row is a Video-R1-260k / Video-R1-COT-165k row
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

from videor1.data.synthetic.drawing import DIRECTIONS, PALETTE, SHAPES, Box
from videor1.data.synthetic.tasks import RATIONALES, TASKS, TaskSpec, render
from videor1.data.synthetic.writer import GENERATOR_VERSION, SynthSummary, generate

__all__ = [
    "DIRECTIONS",
    "GENERATOR_VERSION",
    "PALETTE",
    "RATIONALES",
    "SHAPES",
    "TASKS",
    "Box",
    "SynthSummary",
    "TaskSpec",
    "generate",
    "render",
]
