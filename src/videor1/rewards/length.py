"""Length reward: a bonus for correct answers of moderate length (Video-R1 §3.2, "length control").

Same rule as the original Video-R1 code: +`bonus` to each correct completion whose token length lies in
[`min_tokens`, `max_tokens`], granted only when more than one completion of the group is correct.
Deviations, and why: "correct" is decided by the caller (the original hard-coded accuracy > 0.1), the
window and bonus are arguments instead of literals, and the batched form scores every group of a
[B, G] batch at once instead of assuming one question per device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _bonus_mask(correct: Tensor, lengths: Tensor, *, min_tokens: int, max_tokens: int) -> Tensor:
    """Which completions earn the length bonus: correct [B, G], lengths [B, G] -> [B, G] bool."""
    if correct.shape != lengths.shape or correct.dim() != 2:
        raise ValueError(
            f"correct and lengths must both be [B, G]; got {tuple(correct.shape)} and {tuple(lengths.shape)}"
        )
    correct = correct.bool()
    in_window = (lengths >= min_tokens) & (lengths <= max_tokens)  # [B, G]
    several_correct = correct.sum(dim=1, keepdim=True) > 1  # [B, 1]
    return correct & in_window & several_correct  # [B, G]


def length_bonus_batch(
    correct: Tensor,
    lengths: Tensor,
    *,
    min_tokens: int = 320,
    max_tokens: int = 512,
    bonus: float = 0.2,
) -> Tensor:
    """Length bonus per completion: correct [B, G] bool, lengths [B, G] int -> bonus [B, G] float."""
    mask = _bonus_mask(correct, lengths, min_tokens=min_tokens, max_tokens=max_tokens)
    return bonus * mask.float()  # [B, G]


def length_bonus(
    correct: Sequence[bool],
    lengths: Sequence[int],
    *,
    min_tokens: int = 320,
    max_tokens: int = 512,
    bonus: float = 0.2,
) -> list[float]:
    """Length bonus for one group of G completions (the list form of `length_bonus_batch`)."""
    mask = _bonus_mask(
        torch.tensor([list(correct)], dtype=torch.bool),
        torch.tensor([list(lengths)], dtype=torch.long),
        min_tokens=min_tokens,
        max_tokens=max_tokens,
    )
    # Python floats, so the list form returns exactly `bonus` rather than its float32 rounding
    return [bonus if earned else 0.0 for earned in mask[0].tolist()]
