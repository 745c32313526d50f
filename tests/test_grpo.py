"""GRPO-family math on hand-computed tensors: advantages, KL, aggregation, policy losses, overlong penalty.

Symbols: B prompts, G completions per prompt, N = B*G sequences, T completion tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from videor1.config import LOSS_DEFAULTS
from videor1.rl.advantages import (
    ADVANTAGE_ESTIMATORS,
    group_advantages,
    informative_groups,
    overlong_penalty,
    reinforce_pp_advantages,
    rloo_advantages,
)
from videor1.rl.losses import (
    POLICY_LOSSES,
    aggregate,
    cispo_policy_loss,
    clipped_policy_loss,
    grpo_loss,
    gspo_policy_loss,
    k3_kl,
    masked_mean,
)

E = math.e


# ---------------------------------------------------------------- advantages


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_give_zero_advantages(scale):
    # each group is constant, so R − mean_G = 0 whatever the std; the batch of row 2 has std 0 overall
    for rewards in (torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]]), torch.ones(2, 4)):
        advantages = group_advantages(rewards, scale=scale)
        assert torch.equal(advantages, torch.zeros(2, 4))


def test_equal_rewards_give_zero_advantages_for_every_estimator():
    rewards = torch.full((3, 4), 0.7)
    for name, estimator in ADVANTAGE_ESTIMATORS.items():
        advantages = estimator(rewards)
        assert torch.allclose(advantages, torch.zeros(3, 4), atol=1e-6), name


def test_group_advantages_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # mean = 0.5, deviations = [0.5, -0.5, -0.5, 0.5], sum of squares = 4 * 0.25 = 1
    # unbiased var = 1 / (4 - 1) = 1/3, std = sqrt(1/3) = 0.57735
    # A = ±0.5 / (0.57735 + 1e-4) = ±0.5 / 0.57745 = ±0.86588
    expected = torch.tensor([[0.86588, -0.86588, -0.86588, 0.86588]])
    torch.testing.assert_close(group_advantages(rewards), expected, atol=1e-5, rtol=0)


def test_batch_group_and_none_scaling_on_two_groups():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    # group means 0.5 and 0.5 -> centred rows [.5, -.5, -.5, .5] and [1.5, -.5, -.5, -.5]
    centred = torch.tensor([[0.5, -0.5, -0.5, 0.5], [1.5, -0.5, -0.5, -0.5]])
    # "none" (Dr.GRPO): the centred rewards themselves
    torch.testing.assert_close(group_advantages(rewards, scale="none"), centred)
    # "group": row 1 std = sqrt(1/3) = 0.57735 as above;
    # row 2 sum of squares = 2.25 + 3 * 0.25 = 3, var = 3 / 3 = 1, std = 1 -> A = centred / 1.0001
    expected_group = torch.tensor([[0.86588, -0.86588, -0.86588, 0.86588], [1.49985, -0.49995, -0.49995, -0.49995]])
    torch.testing.assert_close(group_advantages(rewards, scale="group"), expected_group, atol=1e-5, rtol=0)
    # "batch": all 8 rewards have mean 0.5 and sum of squares 1 + 3 = 4, var = 4 / 7, std = 0.755929
    # -> A = centred / 0.756029: 0.5 -> 0.661350, 1.5 -> 1.984051
    expected_batch = torch.tensor([[0.66135, -0.66135, -0.66135, 0.66135], [1.98405, -0.66135, -0.66135, -0.66135]])
    torch.testing.assert_close(group_advantages(rewards, scale="batch"), expected_batch, atol=1e-5, rtol=0)


def test_unknown_scale_raises():
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.ones(1, 2), scale="median")


def test_single_completion_per_prompt_gives_zero_not_nan():
    # G = 1: the std of one value is defined as 0, so A = 0 / (0 + eps) = 0 (torch.std would give NaN)
    rewards = torch.tensor([[3.0], [5.0]])
    for scale in ("group", "batch", "none"):
        assert torch.equal(group_advantages(rewards, scale=scale), torch.zeros(2, 1))
    assert torch.equal(rloo_advantages(rewards), torch.zeros(2, 1))
    assert torch.equal(reinforce_pp_advantages(rewards), torch.zeros(2, 1))
    # a single reward in the whole batch: batch std of one value is 0 as well
    assert torch.equal(group_advantages(torch.tensor([[4.0]]), scale="batch"), torch.zeros(1, 1))


def test_rloo_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    # A_0 = 1 − (0 + 0 + 1)/3 = 2/3, A_1 = 0 − (1 + 0 + 1)/3 = −2/3
    torch.testing.assert_close(rloo_advantages(rewards), torch.tensor([[2 / 3, -2 / 3, -2 / 3, 2 / 3]]))
    rewards = torch.tensor([[3.0, 1.0, 2.0]])
    # A = [3 − (1+2)/2, 1 − (3+2)/2, 2 − (3+1)/2] = [1.5, −1.5, 0]
    torch.testing.assert_close(rloo_advantages(rewards), torch.tensor([[1.5, -1.5, 0.0]]))


def test_reinforce_pp_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 0.0, 0.0, 0.0]])
    # group-mean baseline: [.5, -.5, -.5, .5] and [1.5, -.5, -.5, -.5]; their batch mean is 0
    # batch std: sum of squares 1 + 3 = 4 over 8 values -> unbiased var 4/7, std 0.755929
    # A = centred / (0.755929 + 1e-4): 0.5 -> 0.661350, 1.5 -> 1.984051
    expected = torch.tensor([[0.66135, -0.66135, -0.66135, 0.66135], [1.98405, -0.66135, -0.66135, -0.66135]])
    torch.testing.assert_close(reinforce_pp_advantages(rewards), expected, atol=1e-5, rtol=0)
    # unlike "batch"-scaled GRPO, a group-wide shift of one group's rewards changes nothing
    torch.testing.assert_close(reinforce_pp_advantages(rewards + torch.tensor([[10.0], [0.0]])), expected)


def test_advantage_registry_is_the_configs_list():
    from videor1.config import ADVANTAGES

    assert tuple(ADVANTAGE_ESTIMATORS) == ADVANTAGES


def test_advantage_registry_takes_rewards_and_kwargs():
    rewards = torch.tensor([[1.0, 0.0]])
    # "none" scaling: [0.5, -0.5]; rloo: [1 − 0, 0 − 1]
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["grpo"](rewards, scale="none"), torch.tensor([[0.5, -0.5]]))
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["rloo"](rewards), torch.tensor([[1.0, -1.0]]))
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "rloo", "reinforce_pp"}


def test_advantages_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        group_advantages(torch.ones(4))


def test_informative_groups():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.5, 0.5, 0.5 + 1e-8], [0.0, 0.0, 0.2]])
    # all equal -> False; a spread -> True; a spread below atol counts as equal
    assert informative_groups(rewards).tolist() == [False, True, False, True]


def test_inputs_are_not_modified():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    before = rewards.clone()
    for estimator in ADVANTAGE_ESTIMATORS.values():
        estimator(rewards)
    assert torch.equal(rewards, before)


# ---------------------------------------------------------------- KL


def test_k3_kl_is_zero_when_equal():
    logp = torch.tensor([[-0.1, -2.0, -5.0]])
    assert torch.equal(k3_kl(logp, logp.clone()), torch.zeros(1, 3))


def test_k3_kl_hand_value():
    logp = torch.tensor([[-1.0, -1.0]])
    ref_logp = torch.tensor([[-0.5, -1.5]])
    # x = ref − logp = [0.5, -0.5]
    # x = 0.5:  e^0.5 − 0.5 − 1 = 1.648721 − 1.5 = 0.148721
    # x = -0.5: e^-0.5 + 0.5 − 1 = 0.606531 − 0.5 = 0.106531
    torch.testing.assert_close(k3_kl(logp, ref_logp), torch.tensor([[0.148721, 0.106531]]), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- aggregation


def test_aggregation_modes_on_a_ragged_mask():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # sequence: row means (1+2+3)/3 = 2 and 5/1 = 5, then (2 + 5)/2 = 3.5
    assert aggregate(per_token, mask, mode="sequence").item() == pytest.approx(3.5)
    # token: (1+2+3+5) / 4 tokens = 11/4 = 2.75
    assert aggregate(per_token, mask, mode="token").item() == pytest.approx(2.75)
    # constant: 11 / (N * max_tokens) = 11 / (2 * 4) = 1.375
    assert aggregate(per_token, mask, mode="constant", max_tokens=4).item() == pytest.approx(1.375)


def test_aggregation_with_an_empty_sequence_is_finite():
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True, False], [True, False, False, False], [False, False, False, False]])
    # sequence: (2 + 5 + 0) / 3 = 7/3 — the empty row adds 0 and still counts in N
    assert aggregate(per_token, mask, mode="sequence").item() == pytest.approx(7 / 3)
    # token: still 11 / 4
    assert aggregate(per_token, mask, mode="token").item() == pytest.approx(2.75)
    # constant: 11 / (3 * 4)
    assert aggregate(per_token, mask, mode="constant", max_tokens=4).item() == pytest.approx(11 / 12)
    # nothing masked in at all: 0, not NaN
    nothing = torch.zeros_like(mask)
    for mode in ("sequence", "token", "constant"):
        assert aggregate(per_token, nothing, mode=mode, max_tokens=4).item() == 0.0
    assert masked_mean(per_token, nothing).item() == 0.0


def test_token_aggregation_over_a_whole_step():
    # two micro-batches of one step: [1, 2] (2 tokens) and [5, 6, 7] (3 tokens); the step's token mean is
    # (1 + 2 + 5 + 6 + 7) / 5 = 4.2. With num_tokens = 5 / 2 (the step's tokens per micro-batch), each part
    # gives 3 / 2.5 = 1.2 and 18 / 2.5 = 7.2, whose mean over the 2 micro-batches is 4.2 (a mean of the two
    # local token means would be (1.5 + 6) / 2 = 3.75).
    first = aggregate(torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[1, 1, 0]]), mode="token", num_tokens=2.5)
    second = aggregate(torch.tensor([[5.0, 6.0, 7.0]]), torch.tensor([[1, 1, 1]]), mode="token", num_tokens=2.5)
    assert first.item() == pytest.approx(1.2) and second.item() == pytest.approx(7.2)
    assert ((first + second) / 2).item() == pytest.approx(4.2)
    # num_tokens only changes the token mean
    per_token, mask = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1, 1], [1, 0]])
    assert aggregate(per_token, mask, mode="sequence", num_tokens=10).item() == pytest.approx((1.5 + 3) / 2)


def test_aggregation_errors():
    per_token, mask = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate(per_token, mask, mode="constant")
    with pytest.raises(ValueError, match="num_tokens"):
        aggregate(per_token, mask, mode="token", num_tokens=0)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(per_token, mask, mode="mean")


# ---------------------------------------------------------------- clipped (GRPO / DAPO / Dr.GRPO) policy loss


def test_clipping_engages_above_one_for_positive_advantage_only():
    # torchtune's example: logp − old_logp = 1 for every token, so ratio = e on both sequences
    old_logp = torch.tensor([[0.5, 0.8, 1.2], [0.5, 0.8, 1.2]])
    logp = torch.tensor([[1.5, 1.8, 2.2], [1.5, 1.8, 2.2]])
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 3)
    per_token, stats = clipped_policy_loss(logp, old_logp, advantages, mask)
    # A = 1:  max(−e, −clip(e, 0.8, 1.2)) = max(−2.718, −1.2) = −1.2 (clipped branch wins)
    # A = −1: max(e, 1.2) = e (the pessimistic bound keeps the unclipped term: no clipping)
    torch.testing.assert_close(per_token, torch.tensor([[-1.2] * 3, [E] * 3]))
    # sequence aggregation: (−1.2 + e) / 2 = 0.759141
    assert aggregate(per_token, mask, mode="sequence").item() == pytest.approx((E - 1.2) / 2)
    # 3 of 6 tokens clipped, all of them above 1
    assert stats["policy/clip_fraction"].item() == pytest.approx(0.5)
    assert stats["policy/clip_fraction_high"].item() == pytest.approx(0.5)
    assert stats["policy/clip_fraction_low"].item() == 0.0
    assert stats["policy/ratio_mean"].item() == pytest.approx(E)


def test_clipping_engages_below_one_for_negative_advantage_only():
    # logp − old_logp = −1 -> ratio e^-1 = 0.367879, clipped up to 1 − 0.2 = 0.8
    old_logp = torch.zeros(2, 2)
    logp = torch.full((2, 2), -1.0)
    per_token, stats = clipped_policy_loss(logp, old_logp, torch.tensor([1.0, -1.0]), torch.ones(2, 2))
    # A = 1:  max(−0.367879, −0.8) = −0.367879 (unclipped)
    # A = −1: max(0.367879, 0.8) = 0.8 (clipped)
    torch.testing.assert_close(per_token, torch.tensor([[-math.exp(-1)] * 2, [0.8] * 2]))
    assert stats["policy/clip_fraction"].item() == pytest.approx(0.5)
    assert stats["policy/clip_fraction_low"].item() == pytest.approx(0.5)


def test_clip_higher_is_asymmetric():
    # ratio 1.25 with A = 1: symmetric 0.2 clips to −1.2; DAPO's ε_high = 0.28 allows up to 1.28 -> −1.25
    logp, old_logp = torch.full((1, 1), math.log(1.25)), torch.zeros(1, 1)
    args = (logp, old_logp, torch.tensor([1.0]), torch.ones(1, 1))
    assert clipped_policy_loss(*args)[0].item() == pytest.approx(-1.2)
    assert clipped_policy_loss(*args, clip_low=0.2, clip_high=0.28)[0].item() == pytest.approx(-1.25)


def test_on_policy_ratio_is_one_and_gradient_is_minus_advantage_over_length():
    # one pass over the rollout batch: old_logp = logp.detach(), ratio = 1, yet gradients flow
    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.2, -0.7, -1.0, -1.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # T_0 = 3, T_1 = 2
    advantages = torch.tensor([1.0, -2.0])
    per_token, stats = clipped_policy_loss(logp, logp.detach(), advantages, mask)
    loss = aggregate(per_token, mask, mode="sequence")
    # loss = mean_i (1/T_i) Σ_t −A_i · 1 = (−1 + 2) / 2 = 0.5
    assert loss.item() == pytest.approx(0.5)
    assert stats["policy/ratio_mean"].item() == 1.0
    assert stats["policy/clip_fraction"].item() == 0.0
    loss.backward()
    # ∂loss/∂logp_it = −A_i · ratio / (N · T_i): row 0 −1/(2·3) = −1/6, row 1 +2/(2·2) = 0.5; masked 0
    expected = torch.tensor([[-1 / 6, -1 / 6, -1 / 6, 0.0], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected)


@pytest.mark.parametrize("loss_type", sorted(POLICY_LOSSES))
def test_masked_tokens_never_contribute(loss_type):
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    logp = torch.tensor([[-1.0, -0.5, -2.0], [-0.3, -1.0, -1.0]])
    old_logp = torch.tensor([[-1.1, -0.4, -2.0], [-0.5, -1.0, -1.0]])
    ref_logp = torch.tensor([[-0.9, -0.6, -2.0], [-0.4, -1.0, -1.0]])
    advantages = torch.tensor([0.7, -1.3])

    def run(logp, old_logp, ref_logp):
        logp = logp.clone().requires_grad_(True)
        loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, loss_type=loss_type, max_tokens=3)
        loss.backward()
        return loss.detach(), logp.grad, stats

    loss, grad, stats = run(logp, old_logp, ref_logp)
    # rewrite every masked position with very different (finite) values
    junk = torch.tensor([[0.0, 0.0, 7.0], [0.0, -9.0, 5.0]])
    loss2, grad2, stats2 = run(
        torch.where(mask, logp, junk), torch.where(mask, old_logp, -junk), torch.where(mask, ref_logp, 2 * junk)
    )
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(grad2, grad)
    assert torch.equal(grad[~mask], torch.zeros(3))
    for key, value in stats.items():
        torch.testing.assert_close(stats2[key], value, msg=key)


def test_policy_losses_reject_shape_mismatch():
    with pytest.raises(ValueError, match=r"\[N\]"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        clipped_policy_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3))


# ---------------------------------------------------------------- GSPO


def test_gspo_sequence_ratio_and_its_gradient():
    old_logp = torch.zeros(2, 3)
    # log-ratios: row 0 [0.1, 0.3, (9.0 masked)] -> mean 0.2; row 1 [−0.4, 0.0, 0.1] -> mean −0.1
    logp = torch.tensor([[0.1, 0.3, 9.0], [-0.4, 0.0, 0.1]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = torch.tensor([1.0, -1.0])
    # s_0 = e^0.2 = 1.221403, s_1 = e^-0.1 = 0.904837; a wide clip range keeps both unclipped
    per_token, stats = gspo_policy_loss(logp, old_logp, advantages, mask, clip_low=10.0, clip_high=10.0)
    s0, s1 = math.exp(0.2), math.exp(-0.1)
    # every token of a sequence carries the sequence's loss −A_i · s_i
    torch.testing.assert_close(per_token[0, :2], torch.tensor([-s0, -s0]))
    torch.testing.assert_close(per_token[1], torch.tensor([s1, s1, s1]))
    # token-weighted ratio mean: (2 · s_0 + 3 · s_1) / 5
    assert stats["policy/ratio_mean"].item() == pytest.approx((2 * s0 + 3 * s1) / 5)
    loss = aggregate(per_token, mask, mode="sequence")
    # (−1.221403 + 0.904837) / 2 = −0.158283
    assert loss.item() == pytest.approx((-s0 + s1) / 2)
    loss.backward()
    # gradient of the sequence objective −A_i · exp(mean_t log-ratio) / N is −A_i · s_i / (N · T_i) per token:
    # row 0: −1.221403 / (2·2) = −0.305351; row 1: +0.904837 / (2·3) = 0.150806; masked 0
    expected = torch.tensor([[-s0 / 4, -s0 / 4, 0.0], [s1 / 6, s1 / 6, s1 / 6]])
    torch.testing.assert_close(logp.grad, expected)
    # and it equals autograd of the sequence-level formula written directly
    direct_logp = logp.detach().clone().requires_grad_(True)
    seq_ratio = torch.stack([direct_logp[0, :2].mean().exp(), direct_logp[1].mean().exp()])  # [N]
    (-(advantages * seq_ratio)).mean().backward()
    torch.testing.assert_close(logp.grad, direct_logp.grad)


def test_gspo_default_clip_is_tight():
    # s = e^0.2 = 1.2214 with A = 1 is clipped to 1 + 4e-4: loss −1.0004, no gradient, every token clipped
    logp = torch.tensor([[0.2, 0.2]], requires_grad=True)
    per_token, stats = gspo_policy_loss(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2))
    torch.testing.assert_close(per_token, torch.full((1, 2), -1.0004))
    assert stats["policy/clip_fraction"].item() == 1.0
    per_token.sum().backward()
    assert torch.equal(logp.grad, torch.zeros(1, 2))


# ---------------------------------------------------------------- CISPO


def test_cispo_gradient_is_minus_clipped_ratio_times_advantage():
    old_logp = torch.zeros(1, 3)
    logp = torch.tensor([[1.0, 0.1, -1.0]], requires_grad=True)
    # ratio = [e, e^0.1, e^-1] = [2.718282, 1.105171, 0.367879]; max 1 + 0.28 = 1.28, no lower bound
    # -> weight [1.28, 1.105171, 0.367879]; A = 2 -> ∂(Σ loss)/∂logp = −2 · weight
    per_token, stats = cispo_policy_loss(logp, old_logp, torch.tensor([2.0]), torch.ones(1, 3))
    per_token.sum().backward()
    expected = torch.tensor([[-2.56, -2 * math.exp(0.1), -2 * math.exp(-1)]])
    torch.testing.assert_close(logp.grad, expected)
    # the value is −w · A · logp: [−1.28·2·1, −1.105171·2·0.1, −0.367879·2·(−1)]
    torch.testing.assert_close(per_token.detach(), expected * logp.detach())
    # only the first token's weight was truncated
    assert stats["policy/clip_fraction"].item() == pytest.approx(1 / 3)


def test_cispo_optional_lower_bound():
    # ratio e^-1 = 0.367879 raised to 1 − 0.2 = 0.8 with clip_low = 0.2 -> gradient −0.8 · A
    logp = torch.tensor([[-1.0]], requires_grad=True)
    per_token, _ = cispo_policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), clip_low=0.2)
    per_token.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.8]]))


def test_cispo_default_clip_low_is_no_lower_bound():
    # the default clip_low 1.0 clamps below at 1 − 1.0 = 0; a ratio exp(x) is > 0 (or underflows to exactly 0),
    # so values, gradients and stats equal those of clip_low=None, which skips the lower clamp
    # ratios: [e, 1, e^-1, e^-20 ≈ 2e-9, e^-200 = 0 in float32]
    old_logp, advantages, mask = torch.zeros(1, 5), torch.tensor([1.5]), torch.ones(1, 5)
    results = []
    for kwargs in ({}, {"clip_low": 1.0}, {"clip_low": None}):
        logp = torch.tensor([[1.0, 0.0, -1.0, -20.0, -200.0]], requires_grad=True)
        per_token, stats = cispo_policy_loss(logp, old_logp, advantages, mask, **kwargs)
        per_token.sum().backward()
        results.append((per_token.detach(), logp.grad, stats))
    values, grad, stats = results[0]
    for other_values, other_grad, other_stats in results[1:]:
        assert torch.equal(values, other_values) and torch.equal(grad, other_grad)
        assert stats.keys() == other_stats.keys()
        for key in stats:
            assert torch.equal(stats[key], other_stats[key]), key
    # only e is truncated (to 1.28), and nothing counts as clipped below
    assert stats["policy/clip_fraction"].item() == pytest.approx(1 / 5)
    assert stats["policy/clip_fraction_low"].item() == 0.0


# ---------------------------------------------------------------- full objective


def _batch():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.7, -1.0]], requires_grad=True)
    old_logp = torch.tensor([[-1.2, -1.5, -0.5], [-0.2, -1.0, -1.0]])
    advantages = torch.tensor([1.0, -0.5])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, old_logp, advantages, mask


def test_registry_specs():
    assert POLICY_LOSSES["grpo"] == (clipped_policy_loss, "sequence", 0.2, 0.2)
    assert POLICY_LOSSES["dapo"] == (clipped_policy_loss, "token", 0.2, 0.28)
    assert POLICY_LOSSES["dr_grpo"] == (clipped_policy_loss, "constant", 0.2, 0.2)
    assert POLICY_LOSSES["gspo"] == (gspo_policy_loss, "sequence", 3e-4, 4e-4)
    assert POLICY_LOSSES["cispo"] == (cispo_policy_loss, "token", 1.0, 0.28)


def test_registry_clips_come_from_the_config_table():
    # one table of default clips (videor1.config.LOSS_DEFAULTS), shared by the config and the losses
    assert set(POLICY_LOSSES) == set(LOSS_DEFAULTS)
    for name, spec in POLICY_LOSSES.items():
        assert (spec.clip_low, spec.clip_high) == LOSS_DEFAULTS[name], name


@pytest.mark.parametrize("loss_type", sorted(POLICY_LOSSES))
def test_grpo_loss_without_kl_is_the_policy_loss(loss_type):
    logp, old_logp, advantages, mask = _batch()
    spec = POLICY_LOSSES[loss_type]
    per_token, _ = spec.fn(logp, old_logp, advantages, mask, clip_low=spec.clip_low, clip_high=spec.clip_high)
    expected = aggregate(per_token, mask, mode=spec.aggregation, max_tokens=4)
    ref_logp = logp.detach() - 0.3  # a different reference, ignored when kl_coef = 0
    for ref, kl_coef in ((ref_logp, 0.0), (None, 0.04)):
        kwargs = {"loss_type": loss_type, "kl_coef": kl_coef, "max_tokens": 4}
        loss, stats = grpo_loss(logp, old_logp, ref, advantages, mask, **kwargs)
        torch.testing.assert_close(loss, expected)
        assert stats["loss/kl"].item() == 0.0
        torch.testing.assert_close(stats["loss/policy"], expected.detach())


def test_grpo_loss_kl_is_zero_when_reference_equals_policy():
    logp, old_logp, advantages, mask = _batch()
    no_kl, _ = grpo_loss(logp, old_logp, None, advantages, mask)
    loss, stats = grpo_loss(logp, old_logp, logp.detach().clone(), advantages, mask, kl_coef=0.04)
    torch.testing.assert_close(loss, no_kl)
    assert stats["loss/kl"].item() == 0.0


def test_grpo_loss_kl_hand_value():
    # A = 0 silences the policy term; ref − logp = 0.5 on every token -> k3 = 0.148721 per token
    # total = β · 0.148721 = 0.04 · 0.148721 = 0.005949 under every aggregation of a full mask
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    loss, stats = grpo_loss(logp, logp.detach(), logp.detach() + 0.5, torch.zeros(2), torch.ones(2, 3))
    assert loss.item() == pytest.approx(0.04 * (math.exp(0.5) - 1.5))
    assert stats["loss/kl"].item() == pytest.approx(math.exp(0.5) - 1.5)
    assert stats["loss/policy"].item() == 0.0
    loss.backward()
    # ∂/∂logp of β(e^x − x − 1), x = ref − logp: β(1 − e^x) / (N · T) = 0.04 · (1 − 1.648721) / 6
    torch.testing.assert_close(logp.grad, torch.full((2, 3), 0.04 * (1 - math.exp(0.5)) / 6))


def test_grpo_loss_stats_are_detached_scalars():
    logp, old_logp, advantages, mask = _batch()
    _, stats = grpo_loss(logp, old_logp, logp.detach() + 0.1, advantages, mask)
    expected_keys = {
        "loss/total",
        "loss/policy",
        "loss/kl",
        "policy/clip_fraction",
        "policy/clip_fraction_low",
        "policy/clip_fraction_high",
        "policy/ratio_mean",
        "policy/advantage_mean",
    }
    assert set(stats) == expected_keys
    for key, value in stats.items():
        assert value.dim() == 0 and not value.requires_grad, key
    # advantages [1, −0.5] -> mean 0.25
    assert stats["policy/advantage_mean"].item() == pytest.approx(0.25)


def test_grpo_loss_clip_override_and_errors():
    # ratio 1.25, A = 1: dapo's default ε_high 0.28 leaves it unclipped (−1.25); overriding 0.2 clips (−1.2)
    logp, old_logp = torch.full((1, 2), math.log(1.25)), torch.zeros(1, 2)
    args = (logp, old_logp, None, torch.tensor([1.0]), torch.ones(1, 2))
    assert grpo_loss(*args, loss_type="dapo")[0].item() == pytest.approx(-1.25)
    assert grpo_loss(*args, loss_type="dapo", clip_high=0.2)[0].item() == pytest.approx(-1.2)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(*args, loss_type="ppo")
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(*args, loss_type="dr_grpo")


# ---------------------------------------------------------------- DAPO overlong penalty


def test_overlong_penalty_boundaries():
    lengths = torch.tensor([0, 16, 17, 18, 20, 21, 100])
    # max 20, cache 4: 0 up to 16 tokens; (16 − L)/4 in (16, 20]: 17 -> −0.25, 18 -> −0.5, 20 -> −1; −1 beyond
    expected = torch.tensor([0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    torch.testing.assert_close(overlong_penalty(lengths, max_tokens=20, cache_tokens=4), expected)
    # no soft interval: only lengths above max are punished
    hard = overlong_penalty(torch.tensor([20, 21]), max_tokens=20, cache_tokens=0)
    torch.testing.assert_close(hard, torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError, match="cache_tokens"):
        overlong_penalty(lengths, max_tokens=4, cache_tokens=8)


def test_truncated_importance_weights_by_hand():
    from videor1.rl.losses import truncated_importance_weights

    old = torch.log(torch.tensor([[0.5, 0.5, 0.2]]))
    sampler = torch.log(torch.tensor([[0.25, 1.0, 0.1]]))  # ratios 2, 0.5, 2
    mask = torch.tensor([[1, 1, 0]])
    weights = truncated_importance_weights(old, sampler, mask, cap=1.5)
    assert torch.allclose(weights, torch.tensor([[1.5, 0.5, 0.0]]))
    with pytest.raises(ValueError, match="positive"):
        truncated_importance_weights(old, sampler, mask, cap=0)


def test_importance_weights_scale_the_policy_term_not_the_kl():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    adv, mask = torch.tensor([1.0]), torch.tensor([[1, 1]])
    plain, stats = grpo_loss(logp, logp.detach(), ref, adv, mask, kl_coef=0.1)
    ones, _ = grpo_loss(logp, logp.detach(), ref, adv, mask, kl_coef=0.1, importance_weights=torch.ones(1, 2))
    assert torch.allclose(plain, ones)
    halved, halved_stats = grpo_loss(logp, logp.detach(), ref, adv, mask, kl_coef=0.1,
                                     importance_weights=torch.full((1, 2), 0.5))
    # ratio 1 on the first pass: the policy term per token is -A = -1, the sequence mean -1; halved: -0.5
    assert float(stats["loss/policy"]) == pytest.approx(-1.0)
    assert float(halved_stats["loss/policy"]) == pytest.approx(-0.5)
    assert float(halved) - float(plain) == pytest.approx(0.5)  # the KL term is untouched
