"""Run under a 2-process CPU launch: train (rl or sft), then report per-rank weights and data position."""

import json
import os
import sys

import torch
from accelerate.utils import gather_object

from videor1.config import SFTConfig, TrainConfig, load_config
from videor1.distributed import shutdown
from videor1.rl.trainer import GRPOTrainer
from videor1.sft.trainer import SFTTrainer


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a sharded (DTensor) parameter, the tensor itself otherwise."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def main() -> None:
    kind, out, config = sys.argv[1], sys.argv[2], sys.argv[3]
    resume = sys.argv[4:] == ["resume"]  # a second launch of a config continues from its newest checkpoint
    sys.path.insert(0, os.getcwd())  # the toy reward lives in tests/, imported as tests.toy_rewards
    if kind == "sft":
        trainer = SFTTrainer(load_config(SFTConfig, config), resume=resume)
        model = trainer.model
    else:
        trainer = GRPOTrainer(load_config(TrainConfig, config), resume=resume)
        model = trainer.policy
    start = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    params = [whole(p.detach()) for p in model.parameters()]  # collective for sharded parameters: every rank
    checksum = float(sum(p.double().sum() for p in params))
    changed = any(not torch.equal(whole(a), b) for a, b in zip(start, params, strict=True))
    position = trainer.stream.state_dict() if kind == "rl" else {"step": trainer.step}
    report = gather_object([{"checksum": checksum, "changed": changed, "stream": position}])
    if trainer.accelerator.is_main_process:
        with open(out, "w") as f:
            json.dump(report, f)
    # the trainer's DDP wrapper holds the process group: drop it, so shutdown can destroy the group
    accelerator = trainer.accelerator
    del trainer
    shutdown(accelerator)


if __name__ == "__main__":
    main()
