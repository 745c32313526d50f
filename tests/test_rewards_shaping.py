"""Format, length and temporal (T-GRPO) rewards, and the reward registry."""

from __future__ import annotations

import pytest
import torch

from videor1.rewards import (
    BUILTIN_REWARDS,
    PRESETS,
    TemporalPreset,
    accuracy_reward,
    format_reward,
    is_correct,
    is_well_formed,
    length_bonus,
    length_bonus_batch,
    resolve_reward,
    temporal_bonus,
    temporal_stats,
)
from videor1.rewards.format import format_reward as format_reward_by_path
from videor1.rl.advantages import group_advantages
from videor1.rl.scoring import temporal_rewards

# ---------------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>reason</think><answer>A</answer>", True),
        ("<think>reason</think>\n\n<answer>A</answer>", True),  # whitespace between the blocks
        ("  \n<think>reason</think><answer>A</answer>\n ", True),  # surrounding whitespace is stripped
        ("<think>line 1\nline 2</think><answer>multi\nline</answer>", True),  # newlines inside
        ("<think></think><answer></answer>", True),
        ("<answer>A</answer>", False),  # missing think
        ("<think>reason</think>", False),  # missing answer
        ("<think>reason</think><answer>A</answer> because", False),  # text after the answer
        ("Sure! <think>reason</think><answer>A</answer>", False),  # text before the think
        ("<think>reason</think> so <answer>A</answer>", False),  # text between the blocks
        ("<answer>A</answer><think>reason</think>", False),  # wrong order
        ("<think>a <think>b</think> c</think><answer>A</answer>", False),  # nested think
        ("<think>a</think><answer>A <answer>B</answer></answer>", False),  # nested answer
        ("<think>a</think><answer>A</answer><think>b</think><answer>B</answer>", False),  # repeated pair
        ("<think>a</think><answer>A</answer><answer>B</answer>", False),  # repeated answer
        ("<think>a</answer><answer>A</think>", False),  # mismatched closing tags
    ],
)
def test_is_well_formed(text: str, expected: bool) -> None:
    assert is_well_formed(text) is expected


def test_format_reward_strings_and_messages() -> None:
    completions = [
        "<think>x</think><answer>A</answer>",
        "<answer>A</answer>",
        [{"role": "assistant", "content": "<think>x</think> <answer>B</answer>"}],
    ]
    assert format_reward(["p"] * 3, completions) == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------------------------------------------- length


@pytest.mark.parametrize(
    ("correct", "lengths", "expected"),
    [
        # window is [320, 512] inclusive: 319 and 513 fall outside, 320 and 512 inside
        ([True, True, True, True], [319, 320, 512, 513], [0.0, 0.2, 0.2, 0.0]),
        # wrong answers never get the bonus, whatever their length
        ([True, True, False, False], [400, 100, 400, 400], [0.2, 0.0, 0.0, 0.0]),
        # only one correct answer in the group: no bonus even in the window (as the original)
        ([True, False, False, False], [400, 400, 400, 400], [0.0, 0.0, 0.0, 0.0]),
        ([False, False, False, False], [400, 400, 400, 400], [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_length_bonus_truth_table(correct: list[bool], lengths: list[int], expected: list[float]) -> None:
    assert length_bonus(correct, lengths) == expected


def test_length_bonus_custom_window() -> None:
    assert length_bonus([True, True], [10, 30], min_tokens=5, max_tokens=20, bonus=1.0) == [1.0, 0.0]


def test_length_bonus_batch_is_per_group() -> None:
    # group 0 has two correct answers in the window; group 1 has only one correct answer
    correct = torch.tensor([[True, True, False], [True, False, False]])
    lengths = torch.tensor([[400, 400, 400], [400, 400, 400]])
    expected = torch.tensor([[0.2, 0.2, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(length_bonus_batch(correct, lengths), expected)


def test_length_bonus_batch_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="B, G"):
        length_bonus_batch(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, 4, dtype=torch.long))


# -------------------------------------------------------------------------------------------------- temporal


def test_temporal_bonus_is_per_question() -> None:
    # question 0: p = 3/4, p̃ = 1/2 -> 0.75 >= 1.0 · 0.5, granted: +0.3 on its three correct answers
    # question 1: p = 1/4, p̃ = 1/2 -> 0.25 <  1.0 · 0.5, not granted
    # averaged over the batch (the original), p = 0.5 >= p̃ = 0.5 would have rewarded question 1 too
    ordered = torch.tensor([[True, True, True, False], [True, False, False, False]])  # [B=2, G=4]
    shuffled = torch.tensor([[True, False], [True, False]])  # [B=2, G̃=2]
    bonus, stats = temporal_bonus(ordered, shuffled, alpha=0.3, mu=1.0)
    torch.testing.assert_close(stats.p, torch.tensor([0.75, 0.25]))
    torch.testing.assert_close(stats.p_shuffled, torch.tensor([0.5, 0.5]))
    assert stats.granted.tolist() == [True, False]
    torch.testing.assert_close(bonus, torch.tensor([[0.3, 0.3, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    # the stats are temporal_stats' own
    assert all(torch.equal(a, b) for a, b in zip(stats, temporal_stats(ordered, shuffled, mu=1.0), strict=True))


@pytest.mark.parametrize(
    ("n_ordered", "n_shuffled", "mu", "granted"),
    [
        # G = 5 ordered, G̃ = 4 shuffled; the boundary p == μ·p̃ grants
        (3, 3, 0.8, True),  # p = 0.6, μ·p̃ = 0.8 · 0.75 = 0.6 (0.6000000000000001 in float64)
        (3, 3, 1.0, False),  # p = 0.6 < 0.75
        (4, 4, 0.8, True),  # p = 0.8 == 0.8 · 1.0
        (4, 4, 1.0, False),  # p = 0.8 < 1.0
        (2, 1, 1.0, True),  # p = 0.4 >= 0.25
        (0, 0, 1.0, False),  # 0 >= 0 holds vacuously, but nobody is correct so nobody is rewarded
    ],
)
def test_temporal_mu_boundary(n_ordered: int, n_shuffled: int, mu: float, granted: bool) -> None:
    ordered = torch.arange(5).unsqueeze(0) < n_ordered  # [1, 5]: the first n_ordered are correct
    shuffled = torch.arange(4).unsqueeze(0) < n_shuffled  # [1, 4]
    assert temporal_stats(ordered, shuffled, mu=mu).granted.tolist() == [granted]
    expected = 0.3 * ordered.float() if granted else torch.zeros(1, 5)
    torch.testing.assert_close(temporal_bonus(ordered, shuffled, alpha=0.3, mu=mu)[0], expected)


def test_temporal_with_continuous_accuracy_threshold() -> None:
    # free-form accuracies: with the paper's threshold 0.5 two ordered answers are correct (0.9, 0.6),
    # with the code's threshold 0.1 three are (0.9, 0.6, 0.2); 0.1 itself is not above 0.1
    accuracy = torch.tensor([[0.9, 0.6, 0.2, 0.1]])
    shuffled_accuracy = torch.tensor([[0.7, 0.3]])
    paper, code = PRESETS["paper"], PRESETS["video-r1-code"]
    assert is_correct(accuracy, paper.threshold).tolist() == [[True, True, False, False]]
    assert is_correct(accuracy, code.threshold).tolist() == [[True, True, True, False]]
    # paper: p = 2/4 = 0.5, p̃ = 1/2 -> 0.5 >= 1.0 · 0.5, granted
    bonus, _ = temporal_bonus(
        is_correct(accuracy, paper.threshold),
        is_correct(shuffled_accuracy, paper.threshold),
        alpha=paper.alpha,
        mu=paper.mu,
    )
    torch.testing.assert_close(bonus, torch.tensor([[0.3, 0.3, 0.0, 0.0]]))
    # the code's threshold on fractions: p = 3/4, p̃ = 2/2 -> 0.75 < 0.8 · 1.0, not granted
    bonus, _ = temporal_bonus(
        is_correct(accuracy, code.threshold),
        is_correct(shuffled_accuracy, code.threshold),
        alpha=code.alpha,
        mu=code.mu,
    )
    torch.testing.assert_close(bonus, torch.zeros(1, 4))
    # the released code compares mean rewards: p = (0.9 + 0.6 + 0.2 + 0.1) / 4 = 0.45, p̃ = (0.7 + 0.3) / 2 = 0.5
    # -> 0.45 ≥ 0.8 · 0.5 = 0.4, granted: +0.3 on the three answers above 0.1
    assert code.group_accuracy == "mean_reward"
    bonus, stats = temporal_bonus(
        is_correct(accuracy, code.threshold),
        is_correct(shuffled_accuracy, code.threshold),
        alpha=code.alpha,
        mu=code.mu,
        ordered_scores=accuracy,
        shuffled_scores=shuffled_accuracy,
    )
    torch.testing.assert_close(stats.p, torch.tensor([0.45]))
    torch.testing.assert_close(stats.p_shuffled, torch.tensor([0.5]))
    torch.testing.assert_close(bonus, torch.tensor([[0.3, 0.3, 0.3, 0.0]]))


def test_temporal_scores_below_the_threshold_grant_nobody() -> None:
    # mean rewards: p = 0.05 ≥ 0.8 · p̃ = 0 holds, but no ordered answer is above 0.1: no bonus, not granted
    scores = torch.tensor([[0.05, 0.05]])
    shuffled = torch.zeros(1, 2)
    bonus, stats = temporal_bonus(scores > 0.1, shuffled > 0.1, alpha=0.3, mu=0.8, ordered_scores=scores,
                                  shuffled_scores=shuffled)
    torch.testing.assert_close(bonus, torch.zeros(1, 2))
    assert stats.granted.tolist() == [False]
    with pytest.raises(ValueError, match="both"):
        temporal_stats(scores > 0.1, shuffled > 0.1, mu=0.8, ordered_scores=scores)


def test_presets() -> None:
    assert PRESETS["paper"] == TemporalPreset(alpha=0.3, mu=1.0, threshold=0.5, group_accuracy="correct_fraction")
    assert PRESETS["video-r1-code"] == TemporalPreset(alpha=0.3, mu=0.8, threshold=0.1, group_accuracy="mean_reward")
    with pytest.raises(AttributeError):
        PRESETS["paper"].alpha = 1.0  # frozen


def test_temporal_rejects_mismatched_batches() -> None:
    with pytest.raises(ValueError, match="disagree on B"):
        temporal_stats(torch.ones(2, 4, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool), mu=1.0)
    with pytest.raises(ValueError, match="at least one"):
        temporal_stats(torch.ones(2, 4, dtype=torch.bool), torch.ones(2, 0, dtype=torch.bool), mu=1.0)


# Video-R1 issue #51, on the trainer's path: accuracy -> temporal_rewards -> R = accuracy + format + bonus
# -> group_advantages. One video question, G = 4, G~ = 2 shuffled answers that are both wrong, so with the
# paper's μ = 1.0 any p > 0 passes p ≥ μ·p~ = 0 and every correct ordered answer gets α = 0.3.
PAPER = PRESETS["paper"]


def _bonus(accuracy: torch.Tensor) -> torch.Tensor:
    """The trainer's temporal bonus [1, G] for one video question whose shuffled answers are all wrong."""
    bonus, stats = temporal_rewards(
        accuracy, torch.zeros(1, 2), torch.tensor([True]), alpha=PAPER.alpha, mu=PAPER.mu, threshold=PAPER.threshold
    )
    assert stats.granted.tolist() == [True]
    return bonus


def test_temporal_bonus_does_not_change_binary_group_advantages() -> None:
    # 0/1 accuracy plus an equal format reward 1: R = [2, 1, 2, 1]
    # mean 1.5, std (unbiased) = sqrt(4 · 0.25 / 3) = 0.57735 -> A = ±0.5 / 0.57735 = ±0.86603
    # with +0.3 on the correct answers: R = [2.3, 1, 2.3, 1], deviations ±0.65, std 0.75056
    # -> A = ±0.65 / 0.75056 = ±0.86603 again: R -> 1.3·a + 1 is affine, and normalisation removes it
    accuracy = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    rewards = accuracy + 1.0
    bonus = _bonus(accuracy)
    torch.testing.assert_close(bonus, torch.tensor([[0.3, 0.0, 0.3, 0.0]]))
    before, after = group_advantages(rewards), group_advantages(rewards + bonus)
    torch.testing.assert_close(
        before, torch.tensor([[0.86603, -0.86603, 0.86603, -0.86603]]), atol=2e-4, rtol=0
    )
    # the only difference is eps: 0.5/(0.57735+1e-4) vs 0.65/(0.75056+1e-4) differ by about 3e-5
    torch.testing.assert_close(before, after, atol=1e-4, rtol=0)
    assert not torch.equal(before, after)
    # without std scaling (scale_rewards=none, Dr.GRPO's default) the bonus does reach the advantages:
    # R − mean = ±0.5 becomes ±0.65
    torch.testing.assert_close(group_advantages(rewards, scale="none"), torch.tensor([[0.5, -0.5, 0.5, -0.5]]))
    torch.testing.assert_close(
        group_advantages(rewards + bonus, scale="none"), torch.tensor([[0.65, -0.65, 0.65, -0.65]])
    )


def test_temporal_bonus_changes_non_binary_group_advantages() -> None:
    # format rewards differ: accuracy [1, 1, 0, 0] + format [1, 0, 1, 0] -> R = [2, 1, 1, 0]
    # mean 1, std = sqrt((1 + 0 + 0 + 1) / 3) = 0.81650 -> A = [1.22474, 0, 0, -1.22474]
    # with +0.3 on the two correct answers: R = [2.3, 1.3, 1, 0], mean 1.15,
    # deviations [1.15, 0.15, -0.15, -1.15], std = sqrt(2.69 / 3) = 0.94692
    # -> A = [1.21446, 0.15841, -0.15841, -1.21446]: the correct answer without format now beats the
    # formatted wrong one, which plain normalisation ranked equal
    accuracy = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    rewards = accuracy + torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    bonus = _bonus(accuracy)
    torch.testing.assert_close(bonus, torch.tensor([[0.3, 0.3, 0.0, 0.0]]))
    before, after = group_advantages(rewards), group_advantages(rewards + bonus)
    torch.testing.assert_close(before, torch.tensor([[1.22474, 0.0, 0.0, -1.22474]]), atol=2e-4, rtol=0)
    torch.testing.assert_close(
        after, torch.tensor([[1.21446, 0.15841, -0.15841, -1.21446]]), atol=2e-4, rtol=0
    )


# -------------------------------------------------------------------------------------------------- registry


def test_resolve_builtin_rewards() -> None:
    assert resolve_reward("accuracy") is accuracy_reward
    assert resolve_reward("format") is format_reward
    assert set(BUILTIN_REWARDS) == {"accuracy", "format"}


def test_resolve_reward_by_path() -> None:
    assert resolve_reward("videor1.rewards.format:format_reward") is format_reward_by_path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "unknown reward 'nope'"),
        ("no_such_package_xyz.mod:fn", "cannot import module 'no_such_package_xyz.mod'"),
        ("videor1.rewards.format:missing", "has no attribute 'missing'"),
        ("videor1.rewards.temporal:PRESETS", "is not callable"),
        ("videor1.rewards.format:", "unknown reward"),
    ],
)
def test_resolve_reward_errors(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        resolve_reward(name)
    assert repr(name) in str(info.value)
