"""Advantage estimators and reward shaping of the GRPO family: rewards [B, G] -> advantages [B, G].

B prompts (questions), G completions per prompt. Every estimator is a pure function registered in
`ADVANTAGE_ESTIMATORS` and chosen once at setup; the trainer flattens the result to [N] = [B*G].

Decisions worth knowing:
- Standard deviations are unbiased (divide by n − 1), as `torch.std`'s default and as TRL and Video-R1 use;
  the std of a single value is defined as 0 rather than NaN, so G = 1 (or a batch of one reward) gives
  A = 0 instead of NaN.
- RLOO with G = 1 has no other sample to form a baseline; it returns 0 there too, like GRPO.
- Groups whose G rewards are all equal get A = 0 under every estimator here: they carry no signal, and
  DAPO's dynamic sampling drops them (`informative_groups`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from videor1.config import SCALE_REWARDS

AdvantageFn = Callable[..., Tensor]


def check_rewards(rewards: Tensor) -> Tensor:
    """Rewards as a floating [B, G] tensor (float64 stays float64); raise unless [B, G] with G ≥ 1."""
    if rewards.dim() != 2 or rewards.shape[1] == 0:
        raise ValueError(f"expected rewards of shape [B, G] with G >= 1; got {tuple(rewards.shape)}")
    return rewards if rewards.is_floating_point() else rewards.float()


def unbiased_std(values: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Unbiased std (n − 1 denominator) that is 0, not NaN, when only one value is reduced."""
    n = values.numel() if dim is None else values.shape[dim]
    mean = values.mean() if dim is None else values.mean(dim=dim, keepdim=True)
    squares = (values - mean).pow(2)
    total = squares.sum() if dim is None else squares.sum(dim=dim, keepdim=keepdim)
    return (total / max(n - 1, 1)).sqrt()


def group_advantages(
    rewards: Tensor, *, scale: Literal["group", "batch", "none"] = "group", eps: float = 1e-4
) -> Tensor:
    """GRPO advantages A = (R − mean_G R) / (std + eps) (DeepSeekMath, arXiv 2402.03300): [B, G] -> [B, G].

    scale="group": unbiased std of each group (GRPO, Video-R1); "batch": unbiased std of all B*G rewards
    (the mean is still per group); "none": no division (Dr.GRPO, arXiv 2503.20783).
    """
    rewards = check_rewards(rewards)  # [B, G]
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "none":
        return centred  # [B, G]
    if scale == "group":
        std = unbiased_std(rewards, dim=1, keepdim=True)  # [B, 1]
    elif scale == "batch":
        std = unbiased_std(rewards)  # []
    else:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALE_REWARDS)}")
    return centred / (std + eps)  # [B, G]


def rloo_advantages(rewards: Tensor) -> Tensor:
    """RLOO advantages A_i = R_i − mean_{j≠i} R_j (Ahmadian et al., arXiv 2402.14740): [B, G] -> [B, G]."""
    rewards = check_rewards(rewards)  # [B, G]
    g = rewards.shape[1]
    if g == 1:
        return torch.zeros_like(rewards)  # [B, 1] no other sample to form a baseline
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)  # [B, G]
    return rewards - others_mean  # [B, G]


def reinforce_pp_advantages(rewards: Tensor, *, eps: float = 1e-4) -> Tensor:
    """REINFORCE++ with group baseline (arXiv 2501.03262): R − mean_G R, then batch-whitened: [B, G] -> [B, G]."""
    rewards = check_rewards(rewards)  # [B, G]
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # [B, G]
    # batch normalisation with the (unbiased) std of all B*G centred rewards; the batch mean is 0 up to
    # rounding after group centring, subtracted anyway to follow the paper's global whitening
    return (centred - centred.mean()) / (unbiased_std(centred) + eps)  # [B, G]


ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": group_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
}
"""Advantage estimator by name (`videor1.config.ADVANTAGES` lists them for the config), each called as
f(rewards [B, G], **kwargs) -> advantages [B, G]."""


def informative_groups(rewards: Tensor, *, atol: float = 1e-6) -> Tensor:
    """Groups whose rewards are not all equal (DAPO dynamic sampling, arXiv 2503.14476): [B, G] -> [B] bool."""
    rewards = check_rewards(rewards)  # [B, G]
    spread = rewards.amax(dim=1) - rewards.amin(dim=1)  # [B]
    return spread > atol  # [B]


def overlong_penalty(lengths: Tensor, *, max_tokens: int, cache_tokens: int) -> Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13): completion lengths [N] -> penalty [N] in [−1, 0].

    0 up to max − cache tokens, then falling linearly to −1 at max tokens, −1 beyond.
    """
    if not 0 <= cache_tokens <= max_tokens:
        raise ValueError(f"need 0 <= cache_tokens <= max_tokens; got {cache_tokens} and {max_tokens}")
    lengths = lengths.float()  # [N]
    if cache_tokens == 0:
        return -(lengths > max_tokens).float()  # [N] hard cut-off: no soft interval
    soft = (max_tokens - cache_tokens - lengths) / cache_tokens  # [N] 0 at max − cache, −1 at max
    return soft.clamp(min=-1.0, max=0.0)  # [N]
