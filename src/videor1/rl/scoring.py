"""Rewards for a batch of groups: configured reward functions, T-GRPO's temporal bonus and the length bonus.

Reward functions are called with TRL's signature `f(prompts, completions, **columns)`, where the columns
are the samples' fields repeated once per completion. The combination is a pure function over [P, G]
tensors so it can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from videor1.config import GROUP_ACCURACY
from videor1.data.schema import Sample
from videor1.rewards import length_bonus_batch, resolve_reward
from videor1.rewards.temporal import TemporalStats, is_correct, temporal_bonus


@dataclass(frozen=True)
class RewardFunction:
    """A resolved reward function with its config name and weight."""

    name: str
    fn: Callable[..., list[float]]
    weight: float


def resolve_rewards(specs: Sequence[tuple[str, float]]) -> list[RewardFunction]:
    """Resolve (name, weight) pairs: built-in names or `module:function`."""
    return [RewardFunction(name, resolve_reward(name), weight) for name, weight in specs]


def reward_columns(samples: Sequence[Sample], repeats: int) -> dict[str, list[Any]]:
    """Each sample's fields (schema and extra columns) repeated once per completion, TRL-style."""
    rows = [sample.to_row() for sample in samples]
    # an extra column present in only some rows is None elsewhere, so every column lines up with completions
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: [row.get(key) for row in rows for _ in range(repeats)] for key in keys}


def evaluate_rewards(
    functions: Sequence[RewardFunction], prompts: list[str], completions: list[str], columns: dict[str, list[Any]]
) -> dict[str, Tensor]:
    """Each function's raw (unweighted) rewards as an [N] float tensor; a wrong-length result is an error."""
    values = {}
    for function in functions:
        result = function.fn(prompts=prompts, completions=completions, **columns)
        if len(result) != len(completions):
            raise ValueError(
                f"reward {function.name!r} returned {len(result)} values for {len(completions)} completions"
            )
        values[function.name] = torch.tensor([float(v) for v in result], dtype=torch.float32)
    return values


def weighted_sum(per_function: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Σ_k w_k · r_k over reward functions; every tensor has the same shape."""
    return sum(weights[name] * values for name, values in per_function.items())  # type: ignore[return-value]


def temporal_rewards(
    accuracy: Tensor, shuffled_accuracy: Tensor, is_video: Tensor, *, alpha: float, mu: float, threshold: float,
    group_accuracy: str = "correct_fraction",
) -> tuple[Tensor, TemporalStats]:
    """T-GRPO bonus [P, G] for video questions only, and the per-video-question p, p̃, granted.

    accuracy [P, G] ordered-group accuracy rewards; shuffled_accuracy [V, G̃] for the V video rows of the
    batch in order; is_video [P] bool. p and p̃ are the groups' fractions of answers above `threshold`
    (`group_accuracy` correct_fraction, the paper) or their mean accuracy rewards (mean_reward, the released
    code). The reward itself is `videor1.rewards.temporal.temporal_bonus`; this selects the video rows,
    thresholds accuracy into correctness and scatters the bonus back.
    """
    if group_accuracy not in GROUP_ACCURACY:
        raise ValueError(f"group_accuracy must be one of {', '.join(GROUP_ACCURACY)}, not {group_accuracy!r}")
    ordered = accuracy[is_video]  # [V, G]
    correct = is_correct(ordered, threshold)  # [V, G]
    shuffled_correct = is_correct(shuffled_accuracy, threshold)  # [V, G~]
    scores = {}
    if group_accuracy == "mean_reward":
        scores = {"ordered_scores": ordered, "shuffled_scores": shuffled_accuracy}
    video_bonus, stats = temporal_bonus(correct, shuffled_correct, alpha=alpha, mu=mu, **scores)  # [V, G]
    bonus = torch.zeros_like(accuracy)  # [P, G] image questions keep 0
    bonus[is_video] = video_bonus.to(bonus.dtype)  # [V, G]
    return bonus, stats


def length_rewards(
    accuracy: Tensor, lengths: Tensor, *, threshold: float, min_tokens: int, max_tokens: int, bonus: float
) -> Tensor:
    """Video-R1's length bonus [P, G] for correct answers of length in [min_tokens, max_tokens]."""
    correct = is_correct(accuracy, threshold)  # [P, G]
    return length_bonus_batch(correct, lengths, min_tokens=min_tokens, max_tokens=max_tokens, bonus=bonus)


def group_outcomes(accuracy: Tensor, threshold: float) -> tuple[float, float]:
    """Fractions of groups whose answers are all correct and all wrong (no learning signal in either)."""
    correct = is_correct(accuracy, threshold)  # [P, G]
    return correct.all(1).float().mean().item(), (~correct).all(1).float().mean().item()
