"""Run under a 2-process CPU launch: step-wide statistics as the trainers compute them, written per rank.

Each process holds its share of a fixed set of rewards (rank r: prompts r·k·P …), k micro-batches of P
prompts; the report holds every estimator's advantages for this process's rows and the token normaliser.
"""

import json
import sys
from functools import partial

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from tests.test_distributed import ESTIMATORS, REWARDS, TOKENS
from videor1.distributed import shutdown
from videor1.recipe import gather_rows, tokens_per_micro
from videor1.rl.advantages import ADVANTAGE_ESTIMATORS
from videor1.rl.trainer import step_advantages


def main() -> None:
    out, micro_batches = sys.argv[1], int(sys.argv[2])
    accelerator = Accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    rows = REWARDS.shape[0] // world
    mine = REWARDS[rank * rows : (rank + 1) * rows]
    totals = list(mine.split(rows // micro_batches))  # k micro-batches of P prompts
    advantages = {
        name: torch.cat(step_advantages(totals, partial(ADVANTAGE_ESTIMATORS[est], **kw),
                                        partial(gather_rows, accelerator))).tolist()
        for name, (est, kw) in ESTIMATORS.items()
    }
    normaliser = tokens_per_micro(accelerator, TOKENS[rank], micro_batches)
    report = gather_object([{"rank": rank, "advantages": advantages, "tokens_per_micro": normaliser}])
    if accelerator.is_main_process:
        with open(out, "w") as f:
            json.dump(report, f)
    shutdown(accelerator)


if __name__ == "__main__":
    main()
