"""The recipe skeleton's pure parts: DeepSpeed settings follow our config or fail; the failure budget."""

import pytest

from videor1.data.failures import FailureBudget, TooManyFailures
from videor1.recipe import deepspeed_overrides

OURS = {"gradient_clipping": 5.0, "gradient_accumulation_steps": 2, "train_micro_batch_size_per_gpu": 1}


def test_deepspeed_auto_values_are_filled_from_our_config():
    ds = {"gradient_clipping": "auto", "gradient_accumulation_steps": "auto", "zero_optimization": {"stage": 3}}
    # absent keys count as "auto": accelerate would otherwise fill gradient_clipping with 1.0, not max_grad_norm
    assert deepspeed_overrides(ds, OURS) == OURS


def test_deepspeed_values_that_agree_are_kept():
    ds = {"gradient_clipping": 5, "gradient_accumulation_steps": 2, "train_micro_batch_size_per_gpu": 1}
    assert deepspeed_overrides(ds, OURS) == {}


@pytest.mark.parametrize(("key", "value", "ours"), [
    ("gradient_clipping", 1.0, "optim.max_grad_norm"),
    ("gradient_accumulation_steps", 4, "gradient_accumulation_steps"),
])
def test_deepspeed_values_that_disagree_are_an_error(key, value, ours):
    with pytest.raises(ValueError, match=rf"sets {key}={value} but {ours} is"):
        deepspeed_overrides({key: value}, OURS)


def test_failure_budget_is_judged_after_one_over_limit_attempts():
    budget = FailureBudget(0.25)
    budget.record(1, 1)  # 1 of 1 failed, but 4 attempts are needed before judging
    budget.record(2, 0)
    with pytest.raises(TooManyFailures, match=r"2 of 4 samples failed .* data.max_failure_fraction=0.25"):
        budget.record(1, 1)
    resumed = FailureBudget(0.25)
    resumed.load_state_dict(budget.state_dict())
    assert (resumed.attempted, resumed.failed) == (4, 2)
