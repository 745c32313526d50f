"""What every task builder shares: the canvas, the built item, option lettering and rationale text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from videor1.data.synthetic.drawing import DIRECTIONS, PALETTE


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
    think: str  # "detailed" rationale: what is where and when, with coordinates and timestamps
    brief: str  # "brief" rationale: one short plain sentence with the decisive observation


def _cap(text: str) -> str:
    """Text with its first letter upper-cased (the rest untouched)."""
    return text[:1].upper() + text[1:]


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
