"""Decoding from one cached copy of each prompt against a copy per row, on the 32M-parameter model.

    python benchmarks/decode_cache.py                         # 16 frames, P=2 (+2 shuffled), G=8, G~=4, T=64
    python benchmarks/decode_cache.py --frames 64 --rounds 2

The lean sampler prefills each distinct prompt once. It then either copies each prompt's keys and values to
all its rows (`share_prompts=False`, the path before) or keeps them once and lets each row cache only its own
tokens (`videor1.models.shared_prompt`, the default on SDPA). This times one T-GRPO rollout both ways: P video
prompts with `--frames` made-up frames at 308x308 (121 merged tokens per 2 frames) and their shuffled copies,
G completions per ordered prompt and G~ per shuffled one, exactly T tokens each (the random model's
end-of-sequence token is taken away, as in scaling.py). Each way runs in fresh processes, alternating, and
reports the median rollout seconds, the peak memory the rollouts add over the resident model and inputs
(`ru_maxrss`), and the KV cache's size from its shapes. Both ways sample the same tokens (checked here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import SPEC_32M, peak_bytes, rss_bytes, work_folder  # benchmarks/common.py
from scaling import prompt_inputs  # benchmarks/scaling.py: one video question and its shuffled copy


def cache_bytes(model: object, prompts: int, prompt_len: int, rows: int, tokens: int, shared: bool) -> int:
    """Bytes of keys and values the rollout caches: the prompts once, or once per row."""
    config = model.config.get_text_config()
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * (
        config.hidden_size // config.num_attention_heads) * 4  # float32
    cached = prompts * prompt_len + rows * tokens if shared else rows * (prompt_len + tokens)
    return cached * per_token


def worker(args: argparse.Namespace, shared: bool) -> dict:
    """The rollouts of one way, in this (fresh) process."""
    import videor1.models.sampler as sampler_module
    from videor1.models.generation import SamplingParams, suppressed_token_ids
    from videor1.models.load import load_model_and_processor
    from videor1.models.sampler import concat_inputs, sample_completions

    sampler_module.eos_token_ids = lambda model, tokenizer: suppressed_token_ids(tokenizer)[:1]
    torch.manual_seed(0)
    model, processor = load_model_and_processor(args.work / "model32m", dtype="float32")
    ordered, shuffled = prompt_inputs(processor, args.work, args.frames)
    # the P ordered prompts first, then their shuffled copies, as the trainer lays them out
    inputs = concat_inputs([ordered] * args.prompts + [shuffled] * args.prompts, processor.tokenizer.pad_token_id)
    copies = [args.generations] * args.prompts + [args.shuffled] * args.prompts
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, top_p=0.95)

    def rollout(tokens: int) -> object:
        return sample_completions(model, processor.tokenizer, inputs, params, copies,
                                  generator=torch.Generator().manual_seed(0), share_prompts=shared)

    rollout(2)  # warm-up
    resident = rss_bytes()
    seconds, out = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = rollout(args.new_tokens)
        seconds.append(time.perf_counter() - start)
    prompt_len = int(inputs["input_ids"].shape[1])
    return {"shared": shared, "seconds": seconds, "extra_bytes": peak_bytes() - resident,
            "cache_bytes": cache_bytes(model, 2 * args.prompts, prompt_len, sum(copies), args.new_tokens, shared),
            "prompt_tokens": prompt_len, "rows": sum(copies), "ids": out.ids.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--shuffled", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per way, alternating")
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per process")
    parser.add_argument("--worker", choices=("shared", "copied"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args, args.worker == "shared")))
        return
    with work_folder(args.work) as work:
        if not (work / "model32m" / "config.json").exists():
            from videor1.models.tiny import build_tiny

            build_tiny(work / "model32m", seed=0, spec=SPEC_32M)
        results: dict[str, list[dict]] = {"copied": [], "shared": []}
        for _ in range(args.rounds):
            for way in results:
                command = [sys.executable, __file__, "--work", str(work), "--worker", way, *forwarded(args)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                results[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
    same = all(r["ids"] == results["copied"][0]["ids"] for rs in results.values() for r in rs)
    first = results["shared"][0]
    print(f"\n{args.prompts} video prompts of {first['prompt_tokens']} tokens ({args.frames} frames) and their "
          f"shuffled copies, {first['rows']} rows (G={args.generations}, G~={args.shuffled}), {args.new_tokens} "
          f"tokens each; 32M model; {args.rounds} processes x {args.repeats} rollouts per way")
    print(f"{'':8}{'rollout s (median)':>20}{'min-max':>16}{'KV cache MiB':>14}{'peak extra MiB':>16}")
    for way, runs in results.items():
        seconds = [s for r in runs for s in r["seconds"]]
        extra = statistics.median(r["extra_bytes"] for r in runs) / 2**20
        print(f"{way:8}{statistics.median(seconds):20.3f}{f'{min(seconds):.3f}-{max(seconds):.3f}':>16}"
              f"{runs[0]['cache_bytes'] / 2**20:14.1f}{extra:16.1f}")
    speed = statistics.median(s for r in results["copied"] for s in r["seconds"]) / statistics.median(
        s for r in results["shared"] for s in r["seconds"])
    print(f"copied / shared: {speed:.2f}x the time; the same tokens both ways: {same}")


def forwarded(args: argparse.Namespace) -> list[str]:
    """The measuring options, for a worker process."""
    return ["--frames", str(args.frames), "--prompts", str(args.prompts), "--generations", str(args.generations),
            "--shuffled", str(args.shuffled), "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]


if __name__ == "__main__":
    main()
