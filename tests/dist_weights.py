"""Run under a 2-process CPU launch: the weights a vLLM push streams from an FSDP2-sharded policy are the whole
model's, one full tensor at a time, in the unsharded model's names and order."""

import sys

import torch
import torch.distributed as dist

from videor1.config import DistributedConfig
from videor1.models.load import load_model
from videor1.models.vllm_engine import policy_weights
from videor1.rl.logprobs import CompletionScorer
from videor1.sharding import shard


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    reference = load_model(model_dir, dtype="float32").state_dict()
    model = load_model(model_dir, dtype="float32")
    scorer = CompletionScorer(model)
    shard(scorer, model, DistributedConfig(sharding="fsdp2"), torch.device("cpu"))
    assert any(hasattr(p, "full_tensor") for p in model.parameters())  # really sharded
    largest, names = 0, []
    for name, tensor in policy_weights(model):  # every rank iterates: each sharded tensor is a collective
        assert not hasattr(tensor, "full_tensor"), name
        assert torch.equal(tensor, reference[name]), name
        largest = max(largest, tensor.numel())
        names.append(name)
    assert names == list(reference), "names or order differ from the unsharded model's"
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            f.write(f"{len(names)} {largest}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
