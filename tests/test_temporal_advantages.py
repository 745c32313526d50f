"""Temporal formulations whose signal survives group normalisation, on hand-computed numbers.

The reference case (Video-R1 issue #51): one video question, G = 4 ordered answers with 0/1 accuracy and an
equal format reward 1, so R = [2, 1, 2, 1]; T-GRPO's bonus +0.3 on the correct ones gives [2.3, 1, 2.3, 1],
and GRPO's advantages are ±0.86603 either way (up to eps).
"""

import pytest
import torch

from videor1.rl.advantages import group_advantages
from videor1.rl.temporal_advantages import (
    ema_std_advantages,
    joint_advantages,
    joint_group_advantages,
    updated_task_stds,
)

REWARDS = torch.tensor([[2.0, 1.0, 2.0, 1.0]])
BONUS = torch.tensor([[0.3, 0.0, 0.3, 0.0]])


def test_grpo_cannot_see_the_bonus():
    torch.testing.assert_close(group_advantages(REWARDS), group_advantages(REWARDS + BONUS), atol=1e-4, rtol=0)


def test_joint_normalisation_sees_whether_shuffled_frames_answer_too():
    # shuffled answers wrong (formatted): values [2, 1, 2, 1, 1, 1], mean 4/3, deviations +2/3 (×2) and −1/3 (×4),
    # unbiased variance (2·4/9 + 4·1/9) / 5 = 4/15, std 0.51640 -> A = [1.29099, −0.64550, 1.29099, −0.64550]
    wrong = joint_advantages(REWARDS, torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(wrong, torch.tensor([[1.29099, -0.64550, 1.29099, -0.64550]]), atol=5e-4, rtol=0)
    # shuffled answers right, as a single frame would allow: mean 5/3, the same std
    # -> A = [0.64550, −1.29099, 0.64550, −1.29099]: correct ordered answers gain half as much, wrong ones lose more
    right = joint_advantages(REWARDS, torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(right, torch.tensor([[0.64550, -1.29099, 0.64550, -1.29099]]), atol=5e-4, rtol=0)
    grpo = group_advantages(REWARDS)  # ±0.86603 whatever the shuffled answers did
    assert not torch.allclose(wrong, grpo, atol=0.1) and not torch.allclose(right, grpo, atol=0.1)


def test_joint_normalisation_gives_a_signal_where_grpo_has_none():
    # every ordered answer right: GRPO's advantages are 0; with both shuffled answers wrong the joint mean is 5/3
    # and the std 0.51640, so each ordered answer gets +1/3 / 0.51640 = 0.64550
    all_right = torch.full((1, 4), 2.0)
    assert group_advantages(all_right).abs().max() == 0
    torch.testing.assert_close(joint_advantages(all_right, torch.tensor([[1.0, 1.0]])), torch.full((1, 4), 0.64550),
                               atol=5e-4, rtol=0)
    # and none where the shuffled frames do as well: nothing to tell apart
    assert joint_advantages(all_right, torch.tensor([[2.0, 2.0]])).abs().max() == 0


def test_a_step_of_images_and_videos_takes_joint_advantages_only_where_a_shuffled_group_exists():
    # row 0 a video (shuffled answers wrong), row 1 an image (no shuffled group: NaN), as the trainer gathers them
    step = torch.tensor([[2.0, 1.0, 2.0, 1.0, 1.0, 1.0], [2.0, 1.0, 2.0, 1.0, float("nan"), float("nan")]])
    advantages = joint_group_advantages(step, group_size=4)
    torch.testing.assert_close(advantages[0], torch.tensor([1.29099, -0.64550, 1.29099, -0.64550]), atol=5e-4, rtol=0)
    torch.testing.assert_close(advantages[1:], group_advantages(REWARDS))  # GRPO's ±0.86603


def test_a_running_std_keeps_the_bonus():
    # scale 0.5 for the task: ±0.5 / 0.5 = ±1 without the bonus, ±0.65 / 0.5 = ±1.3 with it (eps aside)
    scale = torch.tensor([0.5])
    before, after = ema_std_advantages(REWARDS, scale), ema_std_advantages(REWARDS + BONUS, scale)
    torch.testing.assert_close(before, torch.tensor([[1.0, -1.0, 1.0, -1.0]]), atol=5e-4, rtol=0)
    torch.testing.assert_close(after, torch.tensor([[1.3, -1.3, 1.3, -1.3]]), atol=5e-4, rtol=0)
    torch.testing.assert_close(after / before, torch.full((1, 4), 1.3))


def test_task_stds_start_at_the_first_value_then_move_by_the_decay():
    # group stds (unbiased): [2, 1, 2, 1] 0.57735, [1, 1, 1, 1] 0, [3, 1, 3, 1] sqrt(4/3) = 1.15470
    rewards = torch.tensor([[2.0, 1.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 3.0, 1.0]])
    first = updated_task_stds({}, rewards, ["a", "b", "a"], decay=0.9)
    assert first == pytest.approx({"a": (0.57735 + 1.15470) / 2, "b": 0.0}, abs=1e-5)
    # task b again with std 0.57735: 0.9 · 0 + 0.1 · 0.57735; task a, absent, keeps its value
    second = updated_task_stds(first, torch.tensor([[1.0, 0.0, 1.0, 0.0]]), ["b"], decay=0.9)
    assert second == pytest.approx({"a": 0.86603, "b": 0.057735}, abs=1e-5)


def test_shapes_and_settings_are_checked():
    with pytest.raises(ValueError, match="disagree on V: 1 vs 2"):
        joint_advantages(REWARDS, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"one scale per group, \[1\]"):
        ema_std_advantages(REWARDS, torch.ones(2))
    with pytest.raises(ValueError, match="decay must be in"):
        updated_task_stds({}, REWARDS, ["a"], decay=1.0)
    with pytest.raises(ValueError, match="2 task names for 1 groups"):
        updated_task_stds({}, REWARDS, ["a", "b"], decay=0.9)
