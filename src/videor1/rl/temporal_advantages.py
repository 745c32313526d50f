"""Temporal signals that survive group normalisation: advantages of the ordered rollouts of video questions.

T-GRPO as published adds +α to every correct ordered answer of a group whose ordered accuracy p beats μ·p̃ on
shuffled frames. With 0/1 accuracy that is an affine map of the group's rewards, which per-group std scaling
removes (Video-R1 issue #51; `tests/test_rewards_shaping.py`). Two formulations from the follow-up literature
carry the ordered-against-shuffled comparison into the advantages instead (facts from the papers, code ours):

- **Joint normalisation** (after STRIVE, arXiv 2604.01824): the ordered rollouts are centred and scaled by the
  mean and std of the ordered and shuffled rewards together. Where the shuffled answers fail, the baseline
  drops and correct ordered answers gain, even in a group GRPO finds uninformative (all ordered answers
  right); where shuffled frames answer as well as ordered ones (a single frame suffices), the baseline rises
  and only the ordered answers that beat it gain.
- **A running std per task** (EMA-GRPO, tulerfeng/OneThinker): rewards are centred per group but divided by an
  exponential moving average of the groups' reward std for their task rather than by the group's own std.
  Scaling a group's rewards by 1 + α then scales its advantages by 1 + α, so the published bonus survives.

Both are pure functions over reward tensors; the trainer gathers the rewards and keeps the running state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from videor1.rl.advantages import check_rewards, group_advantages, unbiased_std


def joint_advantages(ordered: Tensor, shuffled: Tensor, *, eps: float = 1e-4) -> Tensor:
    """Ordered rollouts' advantages against the ordered and shuffled rewards together: [V, G], [V, G̃] -> [V, G].

    A_i = (R_i − mean(R ∪ R̃)) / (std(R ∪ R̃) + eps), the std unbiased over the G + G̃ rewards of a question.
    """
    ordered, shuffled = check_rewards(ordered), check_rewards(shuffled)
    if ordered.shape[0] != shuffled.shape[0]:
        raise ValueError(f"ordered and shuffled rewards disagree on V: {ordered.shape[0]} vs {shuffled.shape[0]}")
    both = torch.cat([ordered, shuffled.to(ordered.dtype)], dim=1)  # [V, G + G~]
    mean = both.mean(dim=1, keepdim=True)  # [V, 1]
    std = unbiased_std(both, dim=1, keepdim=True)  # [V, 1]
    return (ordered - mean) / (std + eps)  # [V, G]


def joint_group_advantages(rewards: Tensor, group_size: int, *, eps: float = 1e-4) -> Tensor:
    """Ordered rewards then shuffled ones per question, [B, G + G̃] -> [B, G]: `joint_advantages` where the question
    has a shuffled group, GRPO's per-group advantages where its shuffled rewards are NaN (an image question)."""
    rewards = check_rewards(rewards)
    ordered, shuffled = rewards[:, :group_size], rewards[:, group_size:]  # [B, G], [B, G~]
    advantages = group_advantages(ordered, scale="group", eps=eps)  # [B, G]
    has_shuffled = ~shuffled.isnan().any(dim=1)  # [B]
    if has_shuffled.any():
        advantages[has_shuffled] = joint_advantages(ordered[has_shuffled], shuffled[has_shuffled], eps=eps)
    return advantages


def ema_std_advantages(rewards: Tensor, scale: Tensor, *, eps: float = 1e-4) -> Tensor:
    """(R − mean_G R) / (scale + eps) with a given std per group (its task's running std): [B, G], [B] -> [B, G]."""
    rewards = check_rewards(rewards)  # [B, G]
    if scale.shape != rewards.shape[:1]:
        raise ValueError(f"expected one scale per group, [{rewards.shape[0]}]; got {tuple(scale.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # [B, G]
    return centred / (scale.to(rewards.dtype).unsqueeze(1) + eps)  # [B, G]


def task_key(sample: Any) -> str:
    """The task whose running std scales a question's group: its media and problem type ("video/numerical")."""
    return f"{sample.data_type}/{sample.problem_type}"


def updated_task_stds(
    previous: Mapping[str, float], rewards: Tensor, tasks: list[str], *, decay: float
) -> dict[str, float]:
    """The running reward std of each task after one step: s ← decay·s + (1 − decay)·(mean group std this step).

    rewards [B, G] of the step's groups, tasks [B] their task names; a task seen for the first time starts at
    this step's value. Tasks absent from the step keep their std.
    """
    rewards = check_rewards(rewards)
    if len(tasks) != rewards.shape[0]:
        raise ValueError(f"{len(tasks)} task names for {rewards.shape[0]} groups")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    stds = unbiased_std(rewards, dim=1)  # [B]
    updated = dict(previous)
    for task in dict.fromkeys(tasks):  # first-seen order
        value = float(stds[[i for i, t in enumerate(tasks) if t == task]].mean())
        updated[task] = value if task not in previous else decay * previous[task] + (1.0 - decay) * value
    return updated
