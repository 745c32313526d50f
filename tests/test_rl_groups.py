"""Dynamic sampling's choice of groups, and regrouping completions from several generation rounds."""

import pytest
import torch

from videor1.models.generation import Completions
from videor1.rl.groups import choose_groups, concat_completions, select_completions


def test_informative_groups_first_then_the_dropped_ones_in_order():
    assert choose_groups([False, True, False, True, True], 2) == [1, 3]
    # only one group with a signal after every round: the micro-batch is filled with dropped groups
    assert choose_groups([False, True, False], 3) == [1, 0, 2]
    with pytest.raises(ValueError, match="2 groups cannot fill a micro-batch of 3"):
        choose_groups([True, True], 3)


def completions(rows, width, offset):
    ids = torch.arange(rows * width).view(rows, width) + offset  # [N, T]
    return Completions(ids=ids, mask=torch.ones_like(ids), texts=[f"{offset}:{r}" for r in range(rows)],
                       prompt_mismatches=0, logprobs=-ids.float())


def test_select_keeps_whole_groups_in_the_chosen_order():
    c = completions(6, 2, 0)  # 3 groups of G = 2
    picked = select_completions(c, [2, 0], group_size=2)
    assert picked.texts == ["0:4", "0:5", "0:0", "0:1"]
    assert picked.ids.tolist() == [[8, 9], [10, 11], [0, 1], [2, 3]]
    assert torch.equal(picked.logprobs, -picked.ids.float())


def test_concat_pads_shorter_rounds_on_the_right_with_a_zero_mask():
    merged = concat_completions([completions(2, 3, 0), completions(2, 1, 100)], pad_token_id=-1)
    assert merged.ids.tolist() == [[0, 1, 2], [3, 4, 5], [100, -1, -1], [101, -1, -1]]
    assert merged.mask.tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert merged.lengths.tolist() == [3, 3, 1, 1] and merged.texts[2:] == ["100:0", "100:1"]
    assert merged.logprobs[2].tolist() == [-100.0, 0.0, 0.0]


def test_a_micro_batch_keeps_exactly_its_size_when_the_extra_rounds_found_nothing():
    # round 1: one informative group of 2; rounds 2 and 3 sampled one each, both uninformative. The choice is
    # groups [0, 1], the first round's: the micro-batch must still drop the extra rounds' groups (a process that
    # kept all 4 sent 4 rows to the step's advantage gather while the others sent 2, and the run stopped)
    from videor1.rl.groups import Groups

    rounds = [Groups(["a", "b"], ["a", "b"], {"ids": 0}, completions(4, 2, 0), torch.tensor([[1.0, 0.0], [1.0, 1.0]])),
              Groups(["c"], ["c"], {"ids": 1}, completions(2, 2, 10), torch.tensor([[0.0, 0.0]])),
              Groups(["d"], ["d"], {"ids": 2}, completions(2, 2, 20), torch.tensor([[1.0, 1.0]]))]
    sampled = Groups.concat(rounds, pad_token_id=-1)
    chosen = choose_groups([True, False, False, False], 2)
    assert chosen == [0, 1]
    groups = sampled.select(chosen)
    assert groups.items == ["a", "b"] and groups.totals.shape == (2, 2) and groups.completions.ids.shape[0] == 4
    assert rounds[0].select([0, 1]) is rounds[0]  # all of one round's groups: kept whole, inputs included
