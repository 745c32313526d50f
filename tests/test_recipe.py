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


def _launch(zero_stage=None, fsdp=False, processes=2, device="cpu"):
    """An accelerator as check_launch reads it: its DeepSpeed / FSDP plugins, process count and device."""
    from types import SimpleNamespace

    import torch

    deepspeed = SimpleNamespace(zero_stage=zero_stage) if zero_stage is not None else None
    state = SimpleNamespace(deepspeed_plugin=deepspeed, fsdp_plugin=object() if fsdp else None)
    return SimpleNamespace(state=state, num_processes=processes, device=torch.device(device))


@pytest.mark.parametrize(("overrides", "launch", "message"), [
    ([], _launch(zero_stage=3), "DeepSpeed ZeRO-3 is not supported"),
    (["distributed.sharding=fsdp2"], _launch(zero_stage=2), "launch without --use_deepspeed / --use_fsdp"),
    (["distributed.sharding=fsdp2"], _launch(fsdp=True), "launch without --use_deepspeed / --use_fsdp"),
    (["distributed.sharding=fsdp2", "mixed_precision=bf16"], _launch(), "distributed.param_dtype"),
    (["distributed.sharding=fsdp2"], _launch(processes=1), "this run has one"),
    (["distributed.sharding=fsdp2", "distributed.cpu_offload=true"], _launch(), "this run is on the CPU"),
])
def test_launches_that_cannot_shard_stop_at_start_with_one_line(overrides, launch, message):
    from videor1.config import TrainConfig, load_config
    from videor1.recipe import check_launch

    config = load_config(TrainConfig, "configs/tgrpo_tiny.yaml", overrides)
    with pytest.raises(ValueError, match=message):
        check_launch(config, launch)


def test_zero_1_and_2_and_plain_fsdp2_launches_pass():
    from videor1.config import TrainConfig, load_config
    from videor1.recipe import check_launch

    check_launch(load_config(TrainConfig, "configs/tgrpo_tiny.yaml"), _launch(zero_stage=2))
    check_launch(load_config(TrainConfig, "configs/tgrpo_tiny.yaml", ["distributed.sharding=fsdp2"]), _launch())
    offload = ["distributed.sharding=fsdp2", "distributed.cpu_offload=true"]
    check_launch(load_config(TrainConfig, "configs/tgrpo_tiny.yaml", offload), _launch(device="cuda"))
