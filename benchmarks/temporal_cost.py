"""What T-GRPO's shuffled group costs on top of GRPO, piece by piece, with the trainer's own objects.

    python benchmarks/temporal_cost.py                      # P=8, G=4, G~=2, 24 new tokens, top_p 0.95
    python benchmarks/temporal_cost.py --rounds 12 --top-p 1.0
    python benchmarks/temporal_cost.py --shuffle-mode patch --freeze-vision   # shuffled prompts from the ordered

Builds the demo's tiny Qwen2.5-VL and a synthetic video set (as `benchmarks/rl_step.py` does), takes one
micro-batch of P video prompts through the trainer's own `_next_prompts` and `_shuffled_prompts`, then times,
in interleaved rounds (medians):

    shuffle    the shuffled prompts as the trainer builds them: the decoded frames permuted, then per frame
               a processor call (and, with a frozen tower, its pass over them); per temporal patch the ordered
               prompts' pixels (and features) permuted
    prefill    one sampler call with max_new_tokens=1: the ordered prompts alone (GRPO) against ordered and
               shuffled together (T-GRPO: one prefill; the shuffled prompts' vision tower included unless the
               frozen tower's features came with them)
    rollout    the whole rollout, GRPO (G per prompt) against T-GRPO (G + G~ in one decode loop)
    reward     the accuracy reward of the G~ shuffled completions

`decode` is rollout minus prefill: the extra G~ rows' decoding. What T-GRPO does not do is not timed: it reads
and decodes no media twice (the frames are permuted in memory) and scores no shuffled completion (only the
ordered ones enter the loss; `time/logprobs` of both algorithms in rl_step.py are equal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from videor1.config import TrainConfig, load_config
from videor1.data.synthetic import generate
from videor1.metrics import MetricBag
from videor1.models.generation import SamplingParams
from videor1.models.sampler import concat_inputs, concat_vision, sample_completions
from videor1.models.tiny import build_tiny
from videor1.rl.rollout import PromptBatch
from videor1.rl.scoring import evaluate_rewards, reward_columns
from videor1.rl.trainer import GRPOTrainer


def build(work: Path, args: argparse.Namespace) -> GRPOTrainer:
    """A T-GRPO trainer on the tiny model, reading video rows only."""
    if not (work / "tiny" / "config.json").exists():
        build_tiny(work / "tiny", seed=0)
    if not (work / "synth" / "train.json").exists():
        generate(work / "synth", n=64, seed=0)
    rows = json.loads((work / "synth" / "train.json").read_text())
    (work / "synth" / "videos.json").write_text(json.dumps([r for r in rows if r["data_type"] == "video"]))
    overrides = [
        f"output_dir={work / 'run'}", f"prompts_per_device={args.prompts}", "tensorboard=false",
        f"algorithm.num_generations={args.generations}", f"algorithm.num_shuffled={args.shuffled}",
        f"generation.max_new_tokens={args.new_tokens}", f"generation.top_p={args.top_p}", "algorithm.temporal=true",
        f"model.name_or_path={work / 'tiny'}", f"data.train_file={work / 'synth' / 'videos.json'}",
        f"data.media_root={work / 'synth'}", f"algorithm.shuffle_mode={args.shuffle_mode}",
        f"model.freeze_vision={str(args.freeze_vision).lower()}",
    ]
    return GRPOTrainer(load_config(TrainConfig, args.config, overrides), overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tgrpo_tiny.yaml")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--shuffled", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--shuffle-mode", choices=("frame", "patch"), default="frame")
    parser.add_argument("--freeze-vision", action="store_true", help="the vision tower frozen (the config's: trained)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="videor1-temporal-"))
    trainer = build(work, args)
    model, processor = trainer.policy, trainer.processor
    tokenizer = processor.tokenizer
    batch, texts, inputs = trainer._next_prompts(args.prompts, MetricBag())
    videos = [i for i, item in enumerate(batch) if item.sample.is_video]
    P, G, S = len(batch), args.generations, args.shuffled
    generator = torch.Generator().manual_seed(0)

    # both algorithms encode the ordered prompts' media once with a frozen tower, for sampling and scoring alike
    ordered = PromptBatch(texts, [item.media for item in batch], inputs, trainer._frozen_vision(inputs))

    def shuffle() -> PromptBatch:
        return trainer._shuffled_prompts(batch, texts, videos, ordered)

    shuffled = shuffle()
    both = concat_inputs([dict(inputs), dict(shuffled.inputs)], tokenizer.pad_token_id)
    copies = {"GRPO": [G] * P, "T-GRPO": [G] * P + [S] * len(videos)}
    prompt = {"GRPO": dict(inputs), "T-GRPO": both}
    vision = {"GRPO": ordered.vision, "T-GRPO": None if ordered.vision is None else concat_vision(
        [ordered.vision, shuffled.vision])}

    def sample(algo: str, tokens: int) -> object:
        params = SamplingParams(max_new_tokens=tokens, temperature=1.0, top_p=args.top_p)
        return sample_completions(model, tokenizer, prompt[algo], params, copies[algo], generator=generator,
                                  vision=vision[algo])

    last = sample("T-GRPO", args.new_tokens)
    shuffled_texts = last.texts[G * P:]
    accuracy = [r for r in trainer.rewards if r.name == "accuracy"]

    def reward() -> None:
        evaluate_rewards(accuracy, [texts[i] for i in videos for _ in range(S)], shuffled_texts,
                         reward_columns([batch[i].sample for i in videos], S))

    tasks = {
        "shuffle": shuffle, "reward": reward,
        "prefill GRPO": lambda: sample("GRPO", 1), "prefill T-GRPO": lambda: sample("T-GRPO", 1),
        "rollout GRPO": lambda: sample("GRPO", args.new_tokens),
        "rollout T-GRPO": lambda: sample("T-GRPO", args.new_tokens),
    }
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for task in tasks.values():
        task()  # warm-up
    for _ in range(args.rounds):
        for name, task in tasks.items():
            start = time.perf_counter()
            task()
            times[name].append(time.perf_counter() - start)
    m = {name: statistics.median(values) for name, values in times.items()}
    decode = {algo: m[f"rollout {algo}"] - m[f"prefill {algo}"] for algo in ("GRPO", "T-GRPO")}
    extra = {
        "shuffled prompts (see shuffle above)": m["shuffle"],
        "prefill of the shuffled prompts": m["prefill T-GRPO"] - m["prefill GRPO"],
        "decoding the G~ extra rows": decode["T-GRPO"] - decode["GRPO"],
        "accuracy reward of the shuffled rows": m["reward"],
    }
    print(f"\nP={P} video prompts, G={G}, G~={S}, {args.new_tokens} new tokens, top_p {args.top_p}, shuffled per "
          f"{args.shuffle_mode}, vision tower {'frozen' if args.freeze_vision else 'trained'}; "
          f"median of {args.rounds} interleaved rounds, seconds")
    print(f"prompt tokens: ordered {int(inputs['attention_mask'].sum(1).max())}, visual "
          f"{int(inputs['video_grid_thw'].prod(1).sum()) // 4} in the batch")
    for name in tasks:
        print(f"  {name:34s} {m[name]:.4f}")
    print(f"  {'decode GRPO / T-GRPO':34s} {decode['GRPO']:.4f} / {decode['T-GRPO']:.4f}")
    print("T-GRPO's extra work per micro-batch:")
    for name, seconds in extra.items():
        print(f"  {name:38s} {seconds:.4f}")
    print(f"  {'total':38s} {sum(extra.values()):.4f}")
    trainer.stream.close()
    trainer.run.close()


if __name__ == "__main__":
    main()
