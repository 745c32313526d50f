"""Per-step metrics (videor1.metrics.MetricBag): means over items, per-process values and totals."""

from __future__ import annotations

import pytest
import torch

from videor1.metrics import MetricBag


def test_add_is_a_mean_over_items():
    bag = MetricBag()
    bag.add("reward/accuracy", 3.0, count=4)  # 3 correct of 4
    bag.add("reward/accuracy", 1.0, count=4)  # 1 correct of 4
    bag.add("groups/all_correct", 0.5)  # count defaults to 1
    bag.add("groups/all_correct", 0.0)
    # (3 + 1) / (4 + 4) = 0.5; (0.5 + 0) / 2 = 0.25
    assert bag.reduce() == pytest.approx({"reward/accuracy": 0.5, "groups/all_correct": 0.25})


def test_mean_weights_by_element_count():
    bag = MetricBag()
    bag.mean("reward/total", torch.tensor([[1.0, 0.0], [0.5, 0.5]]))  # sum 2, 4 items
    bag.mean("reward/total", torch.tensor([4.0]))  # sum 4, 1 item
    bag.mean("temporal/rate", torch.tensor([True, False, False]))  # bools count as 1/0: 1 of 3
    # (2 + 4) / (4 + 1) = 1.2, not the mean of the two batch means (0.5 + 4) / 2
    assert bag.reduce() == pytest.approx({"reward/total": 1.2, "temporal/rate": 1 / 3})


def test_empty_mean_has_no_value():
    bag = MetricBag()
    bag.mean("temporal/p", torch.empty(0))  # a step without video questions
    bag.mean("reward/length", torch.tensor([0.2, 0.0]))
    values = bag.reduce()
    # count 0: no mean to report (None, so every logged line has the same keys), never a 0 / 0 = nan
    assert values == {"temporal/p": None, "reward/length": pytest.approx(0.1)}


def test_total_is_kept_even_when_zero():
    bag = MetricBag()
    bag.total("rollout/prompt_mismatches", 0)
    bag.total("data/prompts", 2)
    bag.total("data/prompts", 3)
    # totals are sums, not means over the number of calls: 2 + 3 = 5
    assert bag.reduce() == {"rollout/prompt_mismatches": 0.0, "data/prompts": 5.0}


def test_per_process_is_the_local_total():
    bag = MetricBag()
    bag.per_process("time/logprobs", 1.5)
    bag.per_process("time/logprobs", 0.5)
    # one process: 1.5 + 0.5 = 2.0 seconds (a sum over calls, averaged over processes only)
    assert bag.reduce() == {"time/logprobs": 2.0}


def test_local_is_the_running_sum():
    bag = MetricBag()
    bag.add("reward/format", 3.0, count=4)
    bag.add("reward/format", 1.0, count=4)
    bag.total("data/skipped", 2)
    assert bag.local("reward/format") == 4.0  # the sum, not the mean
    assert bag.local("data/skipped") == 2.0
    assert bag.local("never/added") == 0.0


def test_empty_bag_reduces_to_nothing():
    assert MetricBag().reduce() == {}


class _TwoProcesses:
    """An accelerator whose all-reduce adds the other process's [K, 2] tensor of (sum, count)."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, other: MetricBag):
        self.other = other

    process_index = 0

    def reduce(self, tensor, reduction):
        assert reduction == "sum"
        keys = list(self.other._sums)
        other = torch.tensor([[self.other._sums[k], self.other._counts[k]] for k in keys], dtype=torch.float64)
        return tensor + other

    def gather(self, tensor):
        """Rows of both processes: this one's, then the other's (its key fingerprint, as reduce computes it)."""
        import zlib

        if tensor.dim() == 3:  # the maxima
            return torch.cat([tensor, self.other.maxima()[None]])

        keys = list(self.other._sums)
        other = torch.tensor([[len(keys), zlib.crc32("\n".join(keys).encode())]], dtype=torch.float64)
        return torch.cat([tensor, other])


def _rank_bag(rewards, seconds, skipped):
    bag = MetricBag()
    bag.mean("reward/accuracy", rewards)
    bag.per_process("time/generation", seconds)
    bag.total("data/skipped", skipped)
    return bag


def test_reduce_across_two_processes():
    rank0 = _rank_bag(torch.tensor([1.0, 1.0, 0.0]), seconds=3.0, skipped=1)
    rank1 = _rank_bag(torch.tensor([0.0]), seconds=5.0, skipped=0)
    values = rank0.reduce(_TwoProcesses(rank1))
    assert values == pytest.approx(
        {
            "reward/accuracy": 0.5,  # over all items: (2 + 0) / (3 + 1)
            "time/generation": 4.0,  # averaged over processes: (3 + 5) / 2
            "data/skipped": 1.0,  # summed: 1 + 0
        }
    )


def test_reduce_refuses_different_keys_on_two_processes():
    # a key only one process added (e.g. a metric logged only for videos) would misalign the summed rows
    rank0 = _rank_bag(torch.tensor([1.0]), seconds=1.0, skipped=0)
    rank0.mean("rollout/shuffled_length", torch.tensor([3.0]))
    rank1 = _rank_bag(torch.tensor([0.0]), seconds=1.0, skipped=0)
    with pytest.raises(RuntimeError, match="metric keys differ between processes"):
        rank0.reduce(_TwoProcesses(rank1))


def test_maximum_is_the_largest_value_and_none_without_any():
    bag = MetricBag()
    bag.maximum("gap", torch.tensor([0.1, 0.7]))
    bag.maximum("gap", torch.tensor([0.3]))
    bag.maximum("empty", torch.zeros(0))
    assert bag.reduce() == {"gap": pytest.approx(0.7), "empty": None}


def test_maximum_across_two_processes_is_the_largest_of_either():
    rank0, rank1 = _rank_bag(torch.tensor([1.0]), 1.0, 0), _rank_bag(torch.tensor([0.0]), 1.0, 0)
    rank0.maximum("engine/gap", torch.tensor([0.2, 0.1]))
    rank1.maximum("engine/gap", torch.tensor([0.9]))
    values = rank0.reduce(_TwoProcesses(rank1))
    assert values["engine/gap"] == pytest.approx(0.9) and values["reward/accuracy"] == pytest.approx(0.5)
