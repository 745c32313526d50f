"""GRPO family as pure tensor functions: advantages, policy losses, KL and aggregation.

The façade the trainer imports: estimators and reward shaping live in `videor1.rl.advantages`, losses in
`videor1.rl.losses`. Pick an estimator from `ADVANTAGE_ESTIMATORS` and a loss type from `POLICY_LOSSES`
once at setup; each step is then

    advantages = ADVANTAGE_ESTIMATORS[name](rewards, **kwargs).flatten()   # [B, G] -> [N]
    loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, loss_type=..., kl_coef=...)
"""

from __future__ import annotations

from videor1.rl.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageFn,
    group_advantages,
    informative_groups,
    overlong_penalty,
    reinforce_pp_advantages,
    rloo_advantages,
)
from videor1.rl.losses import (
    POLICY_LOSSES,
    AggregationMode,
    PolicyLossSpec,
    aggregate,
    cispo_policy_loss,
    clipped_policy_loss,
    grpo_loss,
    gspo_policy_loss,
    k3_kl,
    masked_mean,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "POLICY_LOSSES",
    "AdvantageFn",
    "AggregationMode",
    "PolicyLossSpec",
    "aggregate",
    "cispo_policy_loss",
    "clipped_policy_loss",
    "group_advantages",
    "grpo_loss",
    "gspo_policy_loss",
    "informative_groups",
    "k3_kl",
    "masked_mean",
    "overlong_penalty",
    "reinforce_pp_advantages",
    "rloo_advantages",
]
