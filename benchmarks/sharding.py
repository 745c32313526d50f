"""FSDP2 on CPU processes: per-process parameter + optimizer bytes on 1 and 2 processes, and rollout decoding
with the model gathered once against gathered block by block at every decode step.

    python benchmarks/sharding.py                  # the 32M model, 2 CPU processes over gloo (a few minutes)
    python benchmarks/sharding.py --tokens 32      # shorter decodes

It launches itself with torchrun: once on 1 process (unsharded) and once on 2 (sharded), each measuring
- the bytes of this process's parameters (its shards when sharded) and AdamW state after one update;
- sharded only: decoding G completions of `--tokens` tokens for a prompt (a) inside `videor1.sharding.gathered`
  (one all-gather of the whole model, then local forwards: what `videor1 train` does) and (b) with the blocks
  gathered at every forward, as FSDP2 does by default: every process must then decode the same number of steps,
  so end-of-sequence is suppressed to make them agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SPEC_32M  # noqa: E402


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes this process holds for a tensor: its local shard when it is a DTensor."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def worker(model_dir: str, tokens: int, rounds: int, out: str) -> None:
    """One process of the measurement (torchrun sets RANK and WORLD_SIZE)."""
    import torch.distributed as dist

    from videor1.config import DistributedConfig
    from videor1.models.generation import SamplingParams
    from videor1.models.load import load_model_and_processor
    from videor1.models.sampler import sample_completions
    from videor1.rl.logprobs import CompletionScorer
    from videor1.sharding import gathered, shard

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    model.train()
    if world > 1:  # the model itself as the root unit, so the sampler's direct forwards go through its hooks
        shard(model, model, DistributedConfig(sharding="fsdp2"), torch.device("cpu"))
    scorer = CompletionScorer(model)
    optimizer = torch.optim.AdamW([p for p in scorer.parameters() if p.requires_grad], lr=1e-5)
    text = processor.apply_chat_template([{"role": "user", "content": "describe the video"}],
                                         add_generation_prompt=True)
    inputs = processor(text=[text], return_tensors="pt")
    ids = torch.randint(0, 100, (2, 8))
    logp = scorer(dict(inputs), ids, torch.ones_like(ids), [0, 0]).logp
    logp.sum().backward()
    optimizer.step()
    params = sum(tensor_bytes(p) for p in scorer.parameters())
    state = sum(tensor_bytes(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    result = {"world": world, "param_bytes": params, "optimizer_bytes": state}
    if world > 1:
        params_ = SamplingParams(max_new_tokens=tokens, temperature=1.0)
        model.generation_config.eos_token_id = [-1]  # never sampled: every process decodes all `tokens` steps

        def decode() -> None:
            with torch.no_grad():
                sample_completions(model, processor.tokenizer, dict(inputs), params_, [4])

        timings: dict[str, list[float]] = {"gathered once": [], "per forward": []}
        for _ in range(rounds):
            dist.barrier()
            start = time.perf_counter()
            with gathered(scorer):
                decode()
            timings["gathered once"].append(time.perf_counter() - start)
            dist.barrier()
            start = time.perf_counter()
            decode()
            timings["per forward"].append(time.perf_counter() - start)
        result["decode_seconds"] = {k: statistics.median(v) for k, v in timings.items()}
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps(result))
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "TOKENS", "ROUNDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model_dir, tokens, rounds, out = args.worker
        worker(model_dir, int(tokens), int(rounds), out)
        return
    from videor1.models.tiny import build_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(Path(tmp) / "model", spec=SPEC_32M)
        results = []
        for world in (1, 2):
            out = Path(tmp) / f"result-{world}.json"
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
                            "--master_port", str(29400 + world), __file__, "--worker", str(model_dir),
                            str(args.tokens), str(args.rounds), str(out)], check=True, env=env)
            results.append(json.loads(out.read_text()))
    one, two = results
    print(f"32M model; bytes per process (parameters + AdamW state after one update), {args.tokens}-token decodes")
    for r in results:
        total = r["param_bytes"] + r["optimizer_bytes"]
        print(f"  {r['world']} process(es): parameters {r['param_bytes'] / 2**20:7.1f} MiB, optimizer "
              f"{r['optimizer_bytes'] / 2**20:7.1f} MiB, total {total / 2**20:7.1f} MiB")
    ratio = (two["param_bytes"] + two["optimizer_bytes"]) / (one["param_bytes"] + one["optimizer_bytes"])
    print(f"  2 processes hold {ratio:.2f}x the 1-process bytes each")
    seconds = two["decode_seconds"]
    print(f"  decode 4 x {args.tokens} tokens on 2 processes: gathered once {seconds['gathered once']:.2f} s, "
          f"gathered per forward {seconds['per forward']:.2f} s "
          f"({seconds['per forward'] / seconds['gathered once']:.1f}x)")


if __name__ == "__main__":
    main()
