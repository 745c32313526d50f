"""Rewards of a batch of groups (videor1.rl.scoring): columns, reward functions, temporal and length bonuses.

Every expected tensor is derived by hand in the comments; shapes use P prompts, G ordered completions per
prompt, V video prompts and G~ shuffled completions per video prompt.
"""

from __future__ import annotations

import pytest
import torch

from videor1.data.schema import parse_row
from videor1.rewards import PRESETS, accuracy_reward, format_reward
from videor1.rl.scoring import (
    RewardFunction,
    RewardRule,
    evaluate_rewards,
    group_outcomes,
    length_rewards,
    resolve_rewards,
    reward_columns,
    temporal_rewards,
    total_rewards,
    weighted_sum,
)

from .rows import good_row

# ---------------------------------------------------------------------------------------------------- helpers


def _samples(tmp_path, *rows):
    return [parse_row(row, row_number=i + 1, media_root=tmp_path) for i, row in enumerate(rows)]


def _mc_and_numerical(tmp_path):
    """A multiple-choice video row (answer B, extra column `category`) and a numerical image row (1000)."""
    return _samples(
        tmp_path,
        good_row(problem_id=7, category="direction"),
        good_row(
            problem_id=8, data_type="image", problem_type="numerical", options=[], path="images/8.png",
            solution="<answer>1000</answer>", category="counting",
        ),
    )


# --------------------------------------------------------------------------------------------- reward columns


def test_reward_columns_repeat_every_field_per_completion(tmp_path):
    samples = _mc_and_numerical(tmp_path)
    columns = reward_columns(samples, repeats=3)
    # the 9 schema fields plus the extra column, each [P*G] = [2*3] = 6 long, sample-major like the completions
    assert set(columns) == {
        "problem_id", "problem", "data_type", "problem_type", "options", "process", "solution", "path",
        "data_source", "category",
    }
    assert all(len(values) == 6 for values in columns.values())
    assert columns["problem_id"] == [7, 7, 7, 8, 8, 8]
    assert columns["problem_type"] == ["multiple choice"] * 3 + ["numerical"] * 3
    assert columns["solution"] == ["<answer>B</answer>"] * 3 + ["<answer>1000</answer>"] * 3
    assert columns["category"] == ["direction"] * 3 + ["counting"] * 3
    assert columns["options"] == [["A. left", "B. right", "C. up", "D. down"]] * 3 + [[]] * 3
    # the path as written in the row, not resolved against the media root
    assert columns["path"] == ["./videos/000007.mp4"] * 3 + ["images/8.png"] * 3


def test_reward_columns_align_extra_columns_missing_from_some_rows(tmp_path):
    # sample 7 has no `category`, sample 8 has one; with G = 2 every column must be P*G = 4 long and
    # a missing value is None, so column[i] still belongs to completion i
    samples = _samples(tmp_path, good_row(problem_id=7), good_row(problem_id=8, category="counting"))
    columns = reward_columns(samples, repeats=2)
    assert columns["problem_id"] == [7, 7, 8, 8]
    assert columns["category"] == [None, None, "counting", "counting"]


# ------------------------------------------------------------------------------------------ reward functions


def test_resolve_rewards_keeps_names_and_weights():
    functions = resolve_rewards([("accuracy", 1.0), ("format", 0.5), ("tests.toy_rewards:contains_target", 2.0)])
    assert [(f.name, f.weight) for f in functions] == [
        ("accuracy", 1.0), ("format", 0.5), ("tests.toy_rewards:contains_target", 2.0),
    ]
    assert functions[0].fn is accuracy_reward
    assert functions[1].fn is format_reward


def test_evaluate_rewards_runs_builtins_on_real_completions(tmp_path):
    samples = _mc_and_numerical(tmp_path)
    G = 2
    completions = [
        "<think>it ends on the right</think><answer>B</answer>",  # MC, truth B: accuracy 1, format 1
        "<think>hmm</think><answer>A</answer>",  # MC, wrong letter: accuracy 0, format 1
        "<think>count</think> <answer>1,000</answer>",  # numerical 1,000 = 1000: accuracy 1; space allowed: format 1
        "I count 1000. <answer>1000.0</answer>",  # 1000.0 = 1000: accuracy 1; no <think>: format 0
    ]
    prompts = ["Which way?"] * G + ["How many?"] * G
    functions = resolve_rewards([("accuracy", 1.0), ("format", 1.0)])
    values = evaluate_rewards(functions, prompts, completions, reward_columns(samples, G))
    assert list(values) == ["accuracy", "format"]
    torch.testing.assert_close(values["accuracy"], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(values["format"], torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert values["accuracy"].dtype == torch.float32


def test_evaluate_rewards_passes_extra_columns_to_custom_rewards(tmp_path):
    samples = _mc_and_numerical(tmp_path)

    def counting_only(prompts, completions, category, **columns):
        return [float(c == "counting") for c in category]

    functions = [RewardFunction("counting_only", counting_only, 1.0)]
    values = evaluate_rewards(functions, ["p"] * 4, ["c"] * 4, reward_columns(samples, 2))
    # category column per completion: direction, direction, counting, counting
    torch.testing.assert_close(values["counting_only"], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_evaluate_rewards_wrong_length_names_the_function(tmp_path):
    samples = _mc_and_numerical(tmp_path)

    def one_value(prompts, completions, **columns):
        return [1.0]  # one value for four completions

    functions = [RewardFunction("format", format_reward, 1.0), RewardFunction("one_value", one_value, 1.0)]
    with pytest.raises(ValueError, match=r"'one_value' returned 1 values for 4 completions"):
        evaluate_rewards(functions, ["p"] * 4, ["c"] * 4, reward_columns(samples, 2))


def test_weighted_sum_two_functions():
    per_function = {
        "accuracy": torch.tensor([[1.0, 0.0], [0.5, 1.0]]),  # [P=2, G=2]
        "format": torch.tensor([[1.0, 1.0], [0.0, 0.0]]),
    }
    # 2·accuracy + 0.5·format: [[2 + 0.5, 0 + 0.5], [1 + 0, 2 + 0]]
    total = weighted_sum(per_function, {"accuracy": 2.0, "format": 0.5, "unused": 9.0})
    torch.testing.assert_close(total, torch.tensor([[2.5, 0.5], [1.0, 2.0]]))


# ------------------------------------------------------------------------------------------- temporal reward

# P = 3 prompts, G = 4: rows 0 and 2 are videos, row 1 an image. Continuous accuracies (0.3 is correct under
# threshold 0.1 but not under 0.5).
ACCURACY = torch.tensor(
    [
        [1.0, 0.3, 0.3, 0.0],  # video question 0
        [1.0, 1.0, 0.3, 0.0],  # image question 1: never gets a temporal bonus
        [1.0, 0.0, 0.0, 0.0],  # video question 2
    ]
)
# [V = 2, G~ = 2] for the video rows 0 and 2, in order
SHUFFLED = torch.tensor(
    [
        [0.3, 0.0],  # question 0 on shuffled frames
        [1.0, 0.3],  # question 2 on shuffled frames
    ]
)
IS_VIDEO = torch.tensor([True, False, True])


@pytest.mark.parametrize(
    ("preset", "bonus", "p", "p_shuffled"),
    [
        # paper: α = 0.3, μ = 1.0, correct = accuracy > 0.5
        #   q0: ordered correct [1, 0, 0, 0] -> p = 1/4; shuffled correct [0, 0] -> p~ = 0; 0.25 ≥ 1.0·0 -> granted
        #       bonus 0.3 on the one correct answer only (the 0.3-accuracy answers are wrong here)
        #   q2: ordered [1, 0, 0, 0] -> p = 1/4; shuffled [1, 0] -> p~ = 1/2; 0.25 < 1.0·0.5 -> not granted
        (
            "paper",
            [[0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [0.25, 0.25],
            [0.0, 0.5],
        ),
        # video-r1-code: α = 0.3, μ = 0.8, correct = accuracy > 0.1, p and p~ the mean accuracy rewards
        #   q0: p = (1 + 0.3 + 0.3 + 0) / 4 = 0.4; p~ = (0.3 + 0) / 2 = 0.15; 0.4 ≥ 0.8·0.15 = 0.12 -> granted
        #       bonus 0.3 on the three answers above 0.1
        #   q2: p = 1/4 = 0.25; p~ = (1 + 0.3) / 2 = 0.65; 0.25 < 0.8·0.65 = 0.52 -> not granted
        # (the original averaged over the batch: p = 0.325, p~ = 0.4, 0.325 ≥ 0.32 -> q2's answer rewarded too)
        (
            "video-r1-code",
            [[0.3, 0.3, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
            [0.4, 0.25],
            [0.15, 0.65],
        ),
    ],
)
def test_temporal_rewards_per_video_question(preset, bonus, p, p_shuffled):
    knobs = PRESETS[preset]
    got, stats = temporal_rewards(
        ACCURACY, SHUFFLED, IS_VIDEO, alpha=knobs.alpha, mu=knobs.mu, threshold=knobs.threshold,
        group_accuracy=knobs.group_accuracy,
    )
    torch.testing.assert_close(got, torch.tensor(bonus))
    # one entry per video question (V = 2), not one batch average
    torch.testing.assert_close(stats.p, torch.tensor(p))
    torch.testing.assert_close(stats.p_shuffled, torch.tensor(p_shuffled))
    assert stats.granted.tolist() == [True, False]


@pytest.mark.parametrize(("preset", "granted"), [("paper", False), ("video-r1-code", True)])
def test_temporal_rewards_margin_mu(preset, granted):
    # one video question, binary accuracy, G = 5, G~ = 2: p = 4/5 = 0.8, p~ = 2/2 = 1
    # paper: 0.8 ≥ 1.0·1 fails; video-r1-code: 0.8 ≥ 0.8·1 holds at the boundary
    accuracy = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    shuffled = torch.tensor([[1.0, 1.0]])
    knobs = PRESETS[preset]
    bonus, stats = temporal_rewards(
        accuracy, shuffled, torch.tensor([True]), alpha=knobs.alpha, mu=knobs.mu, threshold=knobs.threshold,
        group_accuracy=knobs.group_accuracy,  # binary accuracy: means and fractions agree
    )
    expected = [[0.3, 0.3, 0.3, 0.3, 0.0]] if granted else [[0.0] * 5]
    torch.testing.assert_close(bonus, torch.tensor(expected))
    assert stats.granted.tolist() == [granted]


@pytest.mark.parametrize(
    ("preset", "group_accuracy", "bonus", "p", "p_shuffled", "granted"),
    [
        # the released code (acc_mean >= 0.8 * shuffled_acc_mean; +0.3 where accuracy > 0.1):
        # p = 0.2, p~ = 0.9; 0.2 < 0.8·0.9 = 0.72 -> withheld
        ("video-r1-code", None, 0.0, 0.2, 0.9, False),
        # the same knobs on fractions: every answer is above 0.1, p = 8/8 = 1, p~ = 4/4 = 1; 1 ≥ 0.8 -> granted
        ("video-r1-code", "correct_fraction", 0.3, 1.0, 1.0, True),
        # the paper: 0.2 is not above 0.5, so p = 0 (nothing to reward); p~ = 4/4 = 1
        ("paper", None, 0.0, 0.0, 1.0, False),
    ],
)
def test_temporal_rewards_on_continuous_accuracy_follow_the_preset(preset, group_accuracy, bonus, p, p_shuffled,
                                                                   granted):
    # an OCR question: every ordered answer scores 0.2 (G = 8), every shuffled one 0.9 (G~ = 4)
    knobs = PRESETS[preset]
    got, stats = temporal_rewards(
        torch.full((1, 8), 0.2), torch.full((1, 4), 0.9), torch.tensor([True]), alpha=knobs.alpha, mu=knobs.mu,
        threshold=knobs.threshold, group_accuracy=group_accuracy or knobs.group_accuracy,
    )
    torch.testing.assert_close(got, torch.full((1, 8), bonus))
    torch.testing.assert_close(stats.p, torch.tensor([p]))
    torch.testing.assert_close(stats.p_shuffled, torch.tensor([p_shuffled]))
    assert stats.granted.tolist() == [granted]


def test_temporal_rewards_reject_an_unknown_group_accuracy():
    with pytest.raises(ValueError, match="group_accuracy must be one of correct_fraction, mean_reward"):
        temporal_rewards(ACCURACY, SHUFFLED, IS_VIDEO, alpha=0.3, mu=1.0, threshold=0.5, group_accuracy="mean")


def test_temporal_rewards_nothing_correct_is_not_granted():
    # p = 0 and p~ = 0: 0 ≥ μ·0 holds vacuously, but there is no correct answer to reward
    bonus, stats = temporal_rewards(
        torch.zeros(1, 4), torch.zeros(1, 2), torch.tensor([True]), alpha=0.3, mu=1.0, threshold=0.5
    )
    torch.testing.assert_close(bonus, torch.zeros(1, 4))
    assert stats.granted.tolist() == [False]


def test_temporal_rewards_keep_the_accuracy_dtype():
    # float64 accuracies (a user reward may return them): the float32 bonus of temporal_bonus is cast back;
    # paper preset on q0 of ACCURACY: only the 1.0 answer is correct and p = 1/4 ≥ 1.0 · p~ = 0
    bonus, _ = temporal_rewards(
        ACCURACY.double(), SHUFFLED.double(), IS_VIDEO, alpha=0.3, mu=1.0, threshold=0.5
    )
    assert bonus.dtype == torch.float64
    torch.testing.assert_close(bonus[0], torch.tensor([0.3, 0.0, 0.0, 0.0], dtype=torch.float64))


def test_temporal_rewards_shuffled_rows_must_match_video_rows():
    # shuffled accuracy given for all P = 3 rows instead of the V = 2 video rows
    with pytest.raises(ValueError, match="disagree on B: 2 vs 3"):
        temporal_rewards(ACCURACY, torch.zeros(3, 2), IS_VIDEO, alpha=0.3, mu=1.0, threshold=0.5)


# --------------------------------------------------------------------------------------------- length reward


def test_length_rewards_window_and_several_correct():
    # window [320, 512] tokens, bonus 0.2, correct = accuracy > 0.5
    accuracy = torch.tensor(
        [
            [1.0, 0.3, 0.0, 0.0],  # only one correct answer -> no bonus for anyone
            [1.0, 1.0, 1.0, 1.0],  # all correct -> bonus where the length is inside the window
            [1.0, 0.0, 1.0, 0.0],  # two correct, both at 400 tokens -> bonus on both
        ]
    )
    lengths = torch.tensor(
        [
            [400, 400, 400, 400],
            [319, 320, 512, 513],  # 319 and 513 are just outside, 320 and 512 are the inclusive edges
            [400, 400, 400, 400],
        ]
    )
    bonus = length_rewards(accuracy, lengths, threshold=0.5, min_tokens=320, max_tokens=512, bonus=0.2)
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.2, 0.2, 0.0],
            [0.2, 0.0, 0.2, 0.0],
        ]
    )
    torch.testing.assert_close(bonus, expected)


def test_length_rewards_threshold_decides_correctness():
    # [1.0, 0.3, 0, 0] at 400 tokens: under threshold 0.5 one answer is correct (no bonus);
    # under threshold 0.1 two are correct (1.0 and 0.3), so both get 0.2
    accuracy = torch.tensor([[1.0, 0.3, 0.0, 0.0]])
    lengths = torch.full((1, 4), 400)
    strict = length_rewards(accuracy, lengths, threshold=0.5, min_tokens=320, max_tokens=512, bonus=0.2)
    loose = length_rewards(accuracy, lengths, threshold=0.1, min_tokens=320, max_tokens=512, bonus=0.2)
    torch.testing.assert_close(strict, torch.zeros(1, 4))
    torch.testing.assert_close(loose, torch.tensor([[0.2, 0.2, 0.0, 0.0]]))


# -------------------------------------------------------------------------------------------- group outcomes


def test_group_outcomes_fractions():
    accuracy = torch.tensor(
        [
            [1.0, 1.0],  # all correct at both thresholds
            [0.0, 0.3],  # all wrong at 0.5; one correct at 0.1
            [1.0, 0.0],  # mixed
            [0.6, 0.6],  # all correct at both thresholds
        ]
    )
    # threshold 0.5: all correct rows {0, 3} -> 2/4; all wrong rows {1} -> 1/4
    assert group_outcomes(accuracy, 0.5) == pytest.approx((0.5, 0.25))
    # threshold 0.1: all correct rows {0, 3} -> 2/4; row 1 now has 0.3 > 0.1, so no group is all wrong
    assert group_outcomes(accuracy, 0.1) == pytest.approx((0.5, 0.0))


# ------------------------------------------------------------------------------------------------ total rewards


def test_total_rewards_hand_computed():
    # P = 2 (a video question, then an image one), G = 2; weights: accuracy 1, format 0.5
    per_function = {
        "accuracy": torch.tensor([[1.0, 0.0], [1.0, 1.0]]),
        "format": torch.tensor([[1.0, 1.0], [0.0, 1.0]]),
    }
    lengths = torch.tensor([[4, 6], [5, 2]])
    rule = RewardRule(weights={"accuracy": 1.0, "format": 0.5}, alpha=0.3, mu=1.0, threshold=0.5,
                      length_bonus=0.2, length_min=3, length_max=5, overlong_cache=2, max_tokens=6)
    total, stats = total_rewards(per_function, lengths, torch.tensor([True, False]), torch.tensor([[0.0, 0.0]]),
                                 rule)
    # weighted sum:  q0 [1 + 0.5, 0 + 0.5] = [1.5, 0.5];  q1 [1 + 0, 1 + 0.5] = [1.0, 1.5]
    # temporal:      q0 p = 1/2 ≥ 1.0 · p̃ = 0 -> +0.3 on its correct answer; q1 is an image: 0
    # length:        q0 has one correct answer (the bonus needs two); q1 both correct, 5 tokens in [3, 5] -> +0.2
    # overlong:      (6 − 2 − L) / 2 clamped to [−1, 0]: L 4 -> 0, 6 -> −1, 5 -> −0.5, 2 -> 0
    torch.testing.assert_close(stats["reward/temporal"], torch.tensor([[0.3, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(stats["reward/length"], torch.tensor([[0.0, 0.0], [0.2, 0.0]]))
    torch.testing.assert_close(stats["reward/overlong"], torch.tensor([[0.0, -1.0], [-0.5, 0.0]]))
    torch.testing.assert_close(total, torch.tensor([[1.8, -0.5], [0.7, 1.5]]))
    assert torch.equal(stats["reward/total"], total)
    assert stats["temporal/rate"].tolist() == [True]
    assert stats["temporal/p"].tolist() == [0.5] and stats["temporal/p_shuffled"].tolist() == [0.0]
    assert stats["groups/all_correct"].tolist() == [0.5] and stats["groups/all_wrong"].tolist() == [0.0]
    assert torch.equal(stats["reward/format"], per_function["format"])


def test_total_rewards_without_shuffled_group_or_shaping_is_the_weighted_sum():
    per_function = {"accuracy": torch.tensor([[1.0, 0.0]]), "format": torch.tensor([[1.0, 0.0]])}
    rule = RewardRule(weights={"accuracy": 2.0, "format": 1.0}, alpha=0.3, mu=1.0, threshold=0.5)
    total, stats = total_rewards(per_function, torch.tensor([[400, 9000]]), torch.tensor([True]), None, rule)
    torch.testing.assert_close(total, torch.tensor([[3.0, 0.0]]))  # 2·1 + 1·1 and 0; no length or overlong term
    # every key is there on every call, the temporal ones empty, so steps with and without videos reduce alike
    assert [stats[k].numel() for k in ("temporal/rate", "temporal/p", "temporal/p_shuffled")] == [0, 0, 0]
    assert stats["reward/length"].abs().sum() == 0 and stats["reward/overlong"].abs().sum() == 0
