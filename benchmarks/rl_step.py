"""Seconds per RL step and tokens per second, GRPO vs T-GRPO, on a tiny model and synthetic data.

    python benchmarks/rl_step.py --steps 12 --prompts 2 --generations 8 --new-tokens 32

Builds (or reuses) a tiny Qwen2.5-VL and a synthetic dataset under --work, runs each algorithm for
--steps steps and prints the median over steps after the first (warm-up) one. The T-GRPO step also
generates G/2 completions on shuffled frames for every video prompt, which is its extra cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from videor1.config import TrainConfig, load_config
from videor1.rl.trainer import GRPOTrainer


def run(work: Path, name: str, temporal: bool, args: argparse.Namespace) -> dict[str, float]:
    """Train for args.steps steps and return medians of the step's timing metrics."""
    out = work / name
    overrides = [
        f"output_dir={out}", f"max_steps={args.steps}", f"prompts_per_device={args.prompts}",
        f"algorithm.num_generations={args.generations}", f"generation.max_new_tokens={args.new_tokens}",
        f"algorithm.temporal={str(temporal).lower()}", "tensorboard=false", "save_every=100000",
        f"model.name_or_path={work / 'tiny'}", f"data.train_file={work / 'synth' / 'train.json'}",
        f"data.media_root={work / 'synth'}",
    ]
    GRPOTrainer(load_config(TrainConfig, args.config, overrides)).train()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]
    keys = ["perf/step_seconds", "perf/tokens_per_s", "time/generation", "time/logprobs", "time/backward", "time/media"]
    return {key: statistics.median(m[key] for m in lines) for key in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tgrpo_tiny.yaml")
    parser.add_argument("--work", type=Path, default=None, help="folder for the tiny model, data and runs")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="videor1-bench-"))
    results = {name: run(work, name, temporal, args) for name, temporal in (("grpo", False), ("tgrpo", True))}
    print(f"{args.steps} steps, P={args.prompts}, G={args.generations}, {args.new_tokens} new tokens; medians:")
    print(f"{'':8}" + "".join(f"{k:>20}" for k in next(iter(results.values()))))
    for name, values in results.items():
        print(f"{name:8}" + "".join(f"{v:>20.3f}" for v in values.values()))


if __name__ == "__main__":
    main()
