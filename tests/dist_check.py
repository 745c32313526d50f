"""Run under `accelerate launch --num_processes 2 --cpu`: train, then report per-rank weights and data."""

import json
import os
import sys

import torch
from accelerate.utils import gather_object

from videor1.config import TrainConfig, load_config
from videor1.rl.trainer import GRPOTrainer


def main() -> None:
    out, config = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.getcwd())  # the toy reward lives in tests/, imported as tests.toy_rewards
    trainer = GRPOTrainer(load_config(TrainConfig, config))
    start = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.train()
    params = list(trainer.policy.parameters())
    checksum = float(sum(p.detach().double().sum() for p in params))
    changed = any(not torch.equal(a, b) for a, b in zip(start, params, strict=True))
    report = gather_object([{"checksum": checksum, "changed": changed, "stream": trainer.stream.state_dict()}])
    if trainer.accelerator.is_main_process:
        with open(out, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
