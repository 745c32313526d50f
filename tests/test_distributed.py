"""Step-wide statistics: the same rewards give the same advantages however they are split over micro-batches
and processes (issue: at prompts_per_device 1, scale_rewards=batch used to equal group)."""

import json
from functools import partial

import pytest
import torch

from videor1.rl.advantages import ADVANTAGE_ESTIMATORS
from videor1.rl.trainer import step_advantages

# 4 prompts x G=4, non-binary rewards with different spreads, so batch and group scaling differ
REWARDS = torch.tensor([
    [1.0, 0.0, 0.0, 0.0],
    [1.3, 1.3, 0.2, 0.0],
    [0.5, 0.4, 0.6, 0.5],
    [2.0, 0.0, 1.0, 1.0],
])
ESTIMATORS = {
    "grpo/group": ("grpo", {"scale": "group"}),
    "grpo/batch": ("grpo", {"scale": "batch"}),
    "grpo/none": ("grpo", {"scale": "none"}),
    "rloo": ("rloo", {}),
    "reinforce_pp": ("reinforce_pp", {}),
}
TOKENS = [30.0, 50.0]  # completion tokens held by rank 0 and rank 1


def whole_batch(name):
    estimator, kwargs = ESTIMATORS[name]
    return ADVANTAGE_ESTIMATORS[estimator](REWARDS, **kwargs)


def one_process(values):
    return values, slice(0, values.shape[0])


@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("micro_batches", [1, 2, 4])
def test_micro_batches_see_the_whole_step(name, micro_batches):
    estimator, kwargs = ESTIMATORS[name]
    parts = list(REWARDS.split(REWARDS.shape[0] // micro_batches))
    got = step_advantages(parts, partial(ADVANTAGE_ESTIMATORS[estimator], **kwargs), one_process)
    assert [p.shape for p in got] == [p.shape for p in parts]
    torch.testing.assert_close(torch.cat(got), whole_batch(name))


def test_batch_scaling_differs_from_group_scaling_only_over_the_whole_step():
    # one prompt at a time (prompts_per_device 1, the 7B config): a local "batch" std is the group's own std
    batch = ADVANTAGE_ESTIMATORS["grpo"]
    local = torch.cat([batch(row.unsqueeze(0), scale="batch") for row in REWARDS])
    torch.testing.assert_close(local, whole_batch("grpo/group"))
    assert not torch.allclose(whole_batch("grpo/batch"), whole_batch("grpo/group"))


@pytest.mark.slow
@pytest.mark.parametrize("micro_batches", [1, 2])
def test_two_processes_give_the_one_process_advantages(tmp_path, micro_batches):
    """2 processes x k micro-batches x (2 / k) prompts == 1 process holding all 4 prompts."""
    from tests.launch import launch_two_cpu_processes

    report = tmp_path / "report.json"
    launch_two_cpu_processes("dist_stats.py", report, micro_batches)
    ranks = sorted(json.loads(report.read_text()), key=lambda r: r["rank"])
    for name in ESTIMATORS:
        got = torch.tensor([row for r in ranks for row in r["advantages"][name]])
        torch.testing.assert_close(got, whole_batch(name), msg=name)
    # the token-mean normaliser: every token of the step, per micro-batch share (k micro-batches x 2 processes)
    assert [r["tokens_per_micro"] for r in ranks] == [sum(TOKENS) / (2 * micro_batches)] * 2
