"""Run under a 2-process CPU launch: train (rl or sft), then report per-rank weights and data position."""

import json
import os
import sys
import time
from pathlib import Path

import torch

from videor1.config import SFTConfig, TrainConfig, load_config
from videor1.distributed import shutdown
from videor1.rl.trainer import GRPOTrainer
from videor1.sft.trainer import SFTTrainer


def main() -> None:
    kind, out, config = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sys.path.insert(0, os.getcwd())  # the toy reward lives in tests/, imported as tests.toy_rewards
    if kind == "sft":
        trainer = SFTTrainer(load_config(SFTConfig, config))
        model = trainer.model
    else:
        trainer = GRPOTrainer(load_config(TrainConfig, config))
        model = trainer.policy
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    start = [p.detach().clone() for p in model.parameters()]
    trainer.train()
    shutdown(trainer.accelerator)  # a no-op where train() already ended the process group, as the recipes do
    params = list(model.parameters())
    checksum = float(sum(p.detach().double().sum() for p in params))
    changed = any(not torch.equal(a, b) for a, b in zip(start, params, strict=True))
    position = trainer.stream.state_dict() if kind == "rl" else {"step": trainer.step}
    # the process group is gone once a run ends, so the ranks meet through files: each writes its part,
    # rank 0 waits for all of them and writes the report in rank order
    part = out.with_name(f"{out.name}.rank{rank}")
    scratch = out.with_name(f"{part.name}.tmp")
    scratch.write_text(json.dumps({"checksum": checksum, "changed": changed, "stream": position}))
    scratch.replace(part)  # whole or absent: rank 0 never reads half a file
    if rank == 0:
        parts = [out.with_name(f"{out.name}.rank{r}") for r in range(world)]
        deadline = time.monotonic() + 300
        while not all(p.exists() for p in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no report from ranks {[r for r, p in enumerate(parts) if not p.exists()]}")
            time.sleep(0.1)
        out.write_text(json.dumps([json.loads(p.read_text()) for p in parts]))


if __name__ == "__main__":
    main()
