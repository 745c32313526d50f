"""Rewards for a batch of groups: configured reward functions, T-GRPO's temporal bonus and the length bonus.

Reward functions are called with TRL's signature `f(prompts, completions, **columns)`, where the columns
are the samples' fields repeated once per completion. The combination, `total_rewards`, is a pure function
over [P, G] tensors (weighted sum + temporal bonus + length bonus + overlong penalty) that returns the
total with its statistics, so it can be checked by hand and the trainer only logs what it returns.
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
from videor1.rl.advantages import overlong_penalty


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


@dataclass(frozen=True)
class RewardRule:
    """How a step's rewards combine: the weights, T-GRPO's temporal knobs, the length and overlong terms."""

    weights: dict[str, float]
    """Reward function name -> weight in the sum."""
    alpha: float
    mu: float
    threshold: float
    """Accuracy above this is correct (temporal test, length bonus, group outcomes)."""
    group_accuracy: str = "correct_fraction"
    length_bonus: float | None = None
    """Video-R1's length bonus for correct answers of length in [length_min, length_max]; None = off."""
    length_min: int = 320
    length_max: int = 512
    overlong_cache: int | None = None
    """DAPO's soft overlong interval in tokens before max_tokens; None = off."""
    max_tokens: int = 0
    """The longest completion the sampler may write (for the overlong penalty)."""


def total_rewards(
    per_function: dict[str, Tensor],
    lengths: Tensor,
    is_video: Tensor,
    shuffled_accuracy: Tensor | None,
    rule: RewardRule,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total rewards [P, G] and their statistics (metric name -> values whose mean is logged).

    per_function: each reward function's raw rewards [P, G] ("accuracy" drives the temporal and length
    terms); lengths [P, G] completion tokens; is_video [P]; shuffled_accuracy [V, G~] for the V video rows in
    order, or None when no shuffled group was sampled (GRPO, or no video in the batch).
    Total = Σ_k w_k · r_k + temporal bonus + length bonus + overlong penalty.
    """
    stats = {f"reward/{name}": values for name, values in per_function.items()}
    total = weighted_sum(per_function, rule.weights)  # [P, G]
    accuracy = per_function.get("accuracy")
    bonus = torch.zeros_like(total)
    if shuffled_accuracy is not None and accuracy is not None:
        bonus, temporal = temporal_rewards(accuracy, shuffled_accuracy, is_video, alpha=rule.alpha, mu=rule.mu,
                                           threshold=rule.threshold, group_accuracy=rule.group_accuracy)
        stats |= {"temporal/rate": temporal.granted, "temporal/p": temporal.p,
                  "temporal/p_shuffled": temporal.p_shuffled}
    else:  # every step reports every key, so the step's metrics reduce as one tensor on every process
        stats |= {key: torch.zeros(0) for key in ("temporal/rate", "temporal/p", "temporal/p_shuffled")}
    stats["reward/temporal"] = bonus
    length = torch.zeros_like(total)
    if rule.length_bonus is not None and accuracy is not None:
        length = length_rewards(accuracy, lengths, threshold=rule.threshold, min_tokens=rule.length_min,
                                max_tokens=rule.length_max, bonus=rule.length_bonus)
    stats["reward/length"] = length
    overlong = torch.zeros_like(total)
    if rule.overlong_cache is not None:
        overlong = overlong_penalty(lengths.reshape(-1), max_tokens=rule.max_tokens,
                                    cache_tokens=rule.overlong_cache).view_as(total)
    stats["reward/overlong"] = overlong
    total = total + bonus + length + overlong
    stats["reward/total"] = total
    if accuracy is not None:
        all_correct, all_wrong = group_outcomes(accuracy, rule.threshold)
        stats |= {"groups/all_correct": torch.tensor([all_correct]), "groups/all_wrong": torch.tensor([all_wrong])}
    return total, stats
