"""Seconds per RL step and per phase: the old paths against the new ones, and T-GRPO against GRPO, in one run.

    python benchmarks/rl_step.py                          # P=8, G=4, G~=2, 24 new tokens, 4 frames at 56x56
    python benchmarks/rl_step.py --steps 12 --prompts 8 --generations 8
    python benchmarks/rl_step.py --top-p 0.95                 # the original's nucleus (the config's is 1.0)

It measures what `videor1 train` does: each step is the trainer's own `train_step` and `perf/step_seconds` is
timed inside it, as in a CLI run's metrics.jsonl; what the CLI adds after each step (metrics.jsonl and the
trackers, the progress line, checkpoints) is outside both. Measured side by side on 2026-12-07 at P = 8, G = 4,
G~ = 2, top_p 1.0: 0.294 s a T-GRPO step here, 0.272 s through `videor1 train`.

Builds (or reuses) the demo's tiny Qwen2.5-VL and a synthetic dataset under --work, then trains four runs
side by side in this process, one step of each in turn (so drift in the machine's speed hits all alike):

    old T-GRPO   generation.engine=hf-generate  algorithm.scoring=full            (HF generate, full sequences)
    new T-GRPO   generation.engine=hf           algorithm.scoring=shared_prefix   (lean sampler, shared prefix)
    old GRPO / new GRPO   the same with algorithm.temporal=false

and prints the median over steps after the first (warm-up) of each phase (`time/generation` the rollout,
`time/logprobs` reference + policy log-probs, `time/backward`), the old/new ratio of each, each path's
T-GRPO/GRPO step ratio, and the new T-GRPO step's seconds per prompt. The runs sample different tokens (the
samplers draw differently), so completions lengths differ a little between old and new at the same step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from videor1.config import TrainConfig, load_config
from videor1.rl.trainer import GRPOTrainer

PHASES = ("perf/step_seconds", "time/generation", "time/logprobs", "time/backward", "time/media")
RUNS = {
    "old T-GRPO": ("hf-generate", "full", True),
    "new T-GRPO": ("hf", "shared_prefix", True),
    "old GRPO": ("hf-generate", "full", False),
    "new GRPO": ("hf", "shared_prefix", False),
}


def trainer(work: Path, name: str, args: argparse.Namespace) -> GRPOTrainer:
    """A trainer for one of RUNS on the shared tiny model and data."""
    engine, scoring, temporal = RUNS[name]
    overrides = [
        f"output_dir={work / name.replace(' ', '-')}", f"max_steps={args.steps}", f"prompts_per_device={args.prompts}",
        f"algorithm.num_generations={args.generations}", f"algorithm.num_shuffled={args.shuffled}",
        f"generation.max_new_tokens={args.new_tokens}", f"algorithm.temporal={str(temporal).lower()}",
        *([f"generation.top_p={args.top_p}"] if args.top_p is not None else []),
        f"generation.engine={engine}", f"algorithm.scoring={scoring}", "tensorboard=false", "save_every=100000",
        f"model.name_or_path={work / 'tiny'}", f"data.train_file={work / 'synth' / 'train.json'}",
        f"data.media_root={work / 'synth'}",
    ]
    return GRPOTrainer(load_config(TrainConfig, args.config, overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tgrpo_tiny.yaml")
    parser.add_argument("--work", type=Path, default=None, help="folder for the tiny model, data and runs")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--shuffled", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--top-p", type=float, default=None, help="generation.top_p (default: the config's)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="videor1-bench-"))
    trainers = {name: trainer(work, name, args) for name in RUNS}
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in RUNS}
    for step in range(args.steps):
        for name, run in trainers.items():
            metrics = run.train_step()
            run.run.step += 1
            if step:  # the first step of each run warms caches up
                steps[name].append(metrics)
    for run in trainers.values():
        run.stream.close()
        run.run.close()
    median = {name: {key: statistics.median(m[key] for m in rows) for key in PHASES} for name, rows in steps.items()}
    print(f"\n{args.steps - 1} steps after warm-up, P={args.prompts}, G={args.generations}, G~={args.shuffled}, "
          f"{args.new_tokens} new tokens; median seconds per step")
    print(f"{'':12}" + "".join(f"{key.split('/')[1]:>16}" for key in PHASES))
    for name, values in median.items():
        print(f"{name:12}" + "".join(f"{values[key]:16.3f}" for key in PHASES))
    for algo in ("T-GRPO", "GRPO"):
        old, new = median[f"old {algo}"], median[f"new {algo}"]
        print(f"old/new {algo:7}" + "".join(f"{old[k] / max(new[k], 1e-9):15.2f}x" for k in PHASES))
    for path in ("old", "new"):
        ratio = median[f"{path} T-GRPO"]["perf/step_seconds"] / median[f"{path} GRPO"]["perf/step_seconds"]
        print(f"{path} T-GRPO step / GRPO step: {ratio:.2f}x")
    per_prompt = median["new T-GRPO"]["perf/step_seconds"] / args.prompts
    # the original trainer is compared in one run, on its own stack (docs/performance.md): seconds drift between days
    print(f"new T-GRPO: {per_prompt:.3f} s per prompt")


if __name__ == "__main__":
    main()
