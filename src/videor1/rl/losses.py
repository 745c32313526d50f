"""Per-token policy losses, the k3 KL estimator and token aggregation of the GRPO family.

Symbols: N = B*G sequences (completions), T completion tokens. Inputs are per-token log-probs of the
sampled tokens: logp [N, T] under the policy being trained, old_logp [N, T] under the policy that sampled
the rollouts (no gradient), ref_logp [N, T] under the frozen reference; advantages [N]; mask [N, T]
(bool or 0/1) marks the completion tokens that count.

A loss type (`POLICY_LOSSES`) is a per-token policy loss with its default clip range (from
`videor1.config.LOSS_DEFAULTS`, the one table of those numbers) plus one of three aggregations, chosen once
at setup; `grpo_loss` adds the β-weighted k3 KL and aggregates. Each function
returns `(loss, stats)` with detached 0-d stats under namespaced keys; the trainer scales for gradient
accumulation, nothing here knows about devices or accelerators.

Conventions, and where they differ from a paper:
- Masked positions never reach the loss, its gradient or a statistic, as long as they hold finite values
  (log-softmax outputs do): aggregation selects with `torch.where`, not by multiplying with the mask.
- Statistics (clip fraction, ratio mean, KL) are means over all masked tokens of the batch, whatever the
  aggregation, as TRL logs them; so "loss/kl" · kl_coef equals the KL part of "loss/total" only under the
  "token" aggregation.
- A sequence with no counted token contributes 0 (and still counts in N) under "sequence" and "constant".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from videor1.config import LOSS_DEFAULTS

AggregationMode = Literal["sequence", "token", "constant"]
Stats = dict[str, Tensor]
PerTokenPolicyLoss = Callable[..., tuple[Tensor, Stats]]


def _check_inputs(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor) -> None:
    """Raise unless logp, old_logp and mask are [N, T] and advantages is [N]."""
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError(
            "expected logp, old_logp and mask of one shape [N, T]; got "
            f"{tuple(logp.shape)}, {tuple(old_logp.shape)} and {tuple(mask.shape)}"
        )
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"expected advantages of shape [N] = [{logp.shape[0]}]; got {tuple(advantages.shape)}")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values over the positions where mask is set (0 when none is): [N, T], [N, T] -> []."""
    mask = mask.bool()  # [N, T]
    total = torch.where(mask, values, torch.zeros_like(values)).sum()  # []
    return total / mask.sum().clamp(min=1)  # []


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 estimator of KL(π ‖ π_ref) per token: exp(x) − x − 1, x = ref_logp − logp.

    Schulman, "Approximating KL divergence", http://joschu.net/blog/kl-approx.html
    """
    x = ref_logp - logp  # [N, T] log(π_ref / π) of the sampled token
    return torch.exp(x) - x - 1  # [N, T] ≥ 0, exactly 0 where x = 0


def aggregate(
    per_token: Tensor, mask: Tensor, *, mode: AggregationMode, max_tokens: int | None = None,
    num_tokens: float | None = None,
) -> Tensor:
    """Reduce a per-token loss [N, T] over the masked tokens to a scalar, by one of three normalisations.

    "sequence": mean over a sequence's tokens, then over sequences (GRPO, arXiv 2402.03300; Video-R1);
    "token": sum over all tokens / number of tokens in the batch (DAPO, arXiv 2503.14476) — or / num_tokens
    when given, so a micro-batch can be normalised by the token count of the whole step, as DAPO defines it;
    "constant": sum over all tokens / (N * max_tokens) (Dr.GRPO, arXiv 2503.20783).
    """
    mask = mask.bool()  # [N, T]
    masked = torch.where(mask, per_token, torch.zeros_like(per_token))  # [N, T]
    if mode == "sequence":
        lengths = mask.sum(dim=1).clamp(min=1)  # [N] an empty sequence gives 0 / 1, not NaN
        return (masked.sum(dim=1) / lengths).mean()  # []
    if mode == "token":
        if num_tokens is not None:
            if num_tokens <= 0:
                raise ValueError(f"num_tokens must be positive; got {num_tokens}")
            return masked.sum() / num_tokens  # []
        return masked.sum() / mask.sum().clamp(min=1)  # []
    if mode == "constant":
        if max_tokens is None or max_tokens <= 0:
            raise ValueError(f"aggregation 'constant' needs max_tokens > 0 (max completion length); got {max_tokens}")
        return masked.sum() / (per_token.shape[0] * max_tokens)  # []
    raise ValueError(f"unknown aggregation {mode!r}; expected 'sequence', 'token' or 'constant'")


def _ratio_stats(ratio: Tensor, clipped: Tensor, mask: Tensor) -> Stats:
    """Detached clip fractions (all, below 1, above 1) and ratio mean over the masked tokens."""
    clipped = clipped.float()  # [N, T] 1 where the clip bound set the token's loss
    return {
        "policy/clip_fraction": masked_mean(clipped, mask).detach(),
        "policy/clip_fraction_low": masked_mean(clipped * (ratio < 1), mask).detach(),
        "policy/clip_fraction_high": masked_mean(clipped * (ratio > 1), mask).detach(),
        "policy/ratio_mean": masked_mean(ratio, mask).detach(),
    }


def _ppo_clip(ratio: Tensor, advantages: Tensor, *, clip_low: float, clip_high: float) -> tuple[Tensor, Tensor]:
    """Pessimistic PPO term max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high)) and where the clipped term won."""
    adv = advantages.detach().unsqueeze(1)  # [N, 1]
    unclipped = -adv * ratio  # [N, T]
    clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)  # [N, T]
    return torch.maximum(unclipped, clipped), clipped > unclipped  # [N, T], [N, T]


def clipped_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = LOSS_DEFAULTS["grpo"].clip_low,
    clip_high: float = LOSS_DEFAULTS["grpo"].clip_high,
) -> tuple[Tensor, Stats]:
    """PPO-clip per token, ratio exp(logp − old_logp) (GRPO, arXiv 2402.03300; DAPO clip-higher, arXiv 2503.14476)."""
    _check_inputs(logp, old_logp, advantages, mask)
    ratio = torch.exp(logp - old_logp.detach())  # [N, T] 1 on the first pass over a rollout batch
    per_token, clipped = _ppo_clip(ratio, advantages, clip_low=clip_low, clip_high=clip_high)  # [N, T]
    return per_token, _ratio_stats(ratio.detach(), clipped, mask)


def gspo_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = LOSS_DEFAULTS["gspo"].clip_low,
    clip_high: float = LOSS_DEFAULTS["gspo"].clip_high,
) -> tuple[Tensor, Stats]:
    """GSPO per token (arXiv 2507.18071): one sequence ratio s = exp(mean_t(logp − old_logp)), PPO-clipped.

    Written token-wise as in the paper's GSPO-token, s_t = sg[s] · exp(logp_t − sg[logp_t]): every token's
    value is s, and a token mean of the loss has the gradient of the sequence-level objective.
    """
    _check_inputs(logp, old_logp, advantages, mask)
    log_ratio = logp - old_logp.detach()  # [N, T]
    mask_f = mask.bool().to(log_ratio.dtype)  # [N, T]
    lengths = mask_f.sum(dim=1).clamp(min=1)  # [N]
    seq_log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio)).sum(dim=1) / lengths  # [N]
    # value sg[s], gradient s · ∇logp_t per token
    ratio = torch.exp(seq_log_ratio.detach().unsqueeze(1) + logp - logp.detach())  # [N, T]
    per_token, clipped = _ppo_clip(ratio, advantages, clip_low=clip_low, clip_high=clip_high)  # [N, T]
    return per_token, _ratio_stats(ratio.detach(), clipped, mask)


def cispo_policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float | None = LOSS_DEFAULTS["cispo"].clip_low,
    clip_high: float = LOSS_DEFAULTS["cispo"].clip_high,
) -> tuple[Tensor, Stats]:
    """CISPO per token, −sg(clip(r, max=1 + ε_high)) · A · logp (MiniMax-M1, arXiv 2506.13585).

    The paper sets no lower bound on the importance weight: the default clip_low 1.0 clamps below at
    1 − 1.0 = 0, which a ratio exp(·) > 0 never goes under, and None skips the lower clamp, so both mean
    "no lower bound" and give identical results. clip_high 0.28 as in verl/Trinity.
    """
    _check_inputs(logp, old_logp, advantages, mask)
    ratio = torch.exp(logp - old_logp.detach()).detach()  # [N, T] a weight only: no gradient through it
    lower = None if clip_low is None else 1 - clip_low
    weight = ratio.clamp(min=lower, max=1 + clip_high)  # [N, T]
    per_token = -weight * advantages.detach().unsqueeze(1) * logp  # [N, T] gradient −w·A·∇logp
    return per_token, _ratio_stats(ratio, weight != ratio, mask)


class PolicyLossSpec(NamedTuple):
    """A loss type: its per-token policy loss, default clip range and token aggregation."""

    fn: PerTokenPolicyLoss
    """Per-token loss f(logp, old_logp, advantages, mask, *, clip_low, clip_high) -> ([N, T], stats)."""
    aggregation: AggregationMode
    """How the per-token loss becomes a scalar (see `aggregate`)."""
    clip_low: float
    """Default ε_low: the ratio is clipped below at 1 − ε_low (1.0 for CISPO: no bound on a positive ratio)."""
    clip_high: float
    """Default ε_high: the ratio is clipped above at 1 + ε_high."""


POLICY_LOSSES: dict[str, PolicyLossSpec] = {
    "grpo": PolicyLossSpec(clipped_policy_loss, "sequence", *LOSS_DEFAULTS["grpo"]),
    "dapo": PolicyLossSpec(clipped_policy_loss, "token", *LOSS_DEFAULTS["dapo"]),
    "dr_grpo": PolicyLossSpec(clipped_policy_loss, "constant", *LOSS_DEFAULTS["dr_grpo"]),
    "gspo": PolicyLossSpec(gspo_policy_loss, "sequence", *LOSS_DEFAULTS["gspo"]),
    "cispo": PolicyLossSpec(cispo_policy_loss, "token", *LOSS_DEFAULTS["cispo"]),
}
"""Loss type by name, as TRL / ms-swift / verl users know them."""


def truncated_importance_weights(old_logp: Tensor, sampler_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Per-token min(π_old / π_sampler, cap) [N, T], 0 off the mask: truncated importance sampling (TIS).

    When another engine sampled the rollouts (vLLM), its probabilities differ slightly from the trainer's;
    weighting each token's policy term by the capped ratio corrects the bias, and the cap bounds the variance
    (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training").
    """
    if cap <= 0:
        raise ValueError(f"the importance weight cap must be positive, got {cap}")
    ratio = torch.exp(old_logp.detach() - sampler_logp.detach())  # [N, T]
    return ratio.clamp(max=cap) * mask.to(ratio.dtype)  # [N, T]


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    loss_type: str = "grpo",
    kl_coef: float = 0.04,
    clip_low: float | None = None,
    clip_high: float | None = None,
    max_tokens: int | None = None,
    num_tokens: float | None = None,
    importance_weights: Tensor | None = None,
) -> tuple[Tensor, Stats]:
    """GRPO-family objective −[policy term − β·KL] (arXiv 2402.03300; Video-R1 T-GRPO, arXiv 2503.21776).

    Per-token policy loss of `loss_type` + kl_coef · k3 KL, aggregated by the loss type's mode. The KL term
    is skipped (and logged as 0) when ref_logp is None or kl_coef is 0; clip_low / clip_high None keep the
    loss type's defaults; max_tokens is needed by "dr_grpo"; num_tokens replaces the batch's own token count
    in "token" aggregation (the trainer passes the step-wide count, see `aggregate`); importance_weights [N, T]
    (detached, e.g. `truncated_importance_weights`) scale each token's policy term, not the KL.
    """
    if loss_type not in POLICY_LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {sorted(POLICY_LOSSES)}")
    spec = POLICY_LOSSES[loss_type]
    policy, stats = spec.fn(
        logp,
        old_logp,
        advantages,
        mask,
        clip_low=spec.clip_low if clip_low is None else clip_low,
        clip_high=spec.clip_high if clip_high is None else clip_high,
    )  # [N, T]
    if importance_weights is not None:
        policy = policy * importance_weights.detach()  # [N, T]
    if ref_logp is None or kl_coef == 0:
        per_token = policy  # [N, T]
        kl_mean = torch.zeros((), dtype=policy.dtype, device=policy.device)  # []
    else:
        kl = k3_kl(logp, ref_logp.detach())  # [N, T]
        per_token = policy + kl_coef * kl  # [N, T]
        kl_mean = masked_mean(kl, mask).detach()  # []
    reduce = {"mode": spec.aggregation, "max_tokens": max_tokens, "num_tokens": num_tokens}
    loss = aggregate(per_token, mask, **reduce)  # []
    policy_loss = aggregate(policy.detach(), mask, **reduce)  # []
    return loss, {
        "loss/total": loss.detach(),
        "loss/policy": policy_loss,
        "loss/kl": kl_mean,
        **stats,
        "policy/advantage_mean": advantages.detach().float().mean(),
    }
