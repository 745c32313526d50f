"""Peak memory and time of the vocabulary projection at Qwen2.5-VL's vocabulary: chunked against all at once.

    python benchmarks/logit_memory.py                      # V = 152,064, G = 8, T = 768 (about 5 minutes, ~16 GB)
    python benchmarks/logit_memory.py --tokens 256         # a shorter completion

A tiny Qwen2.5-VL (hidden size 64, 2 layers) gets the real vocabulary of 152,064 tokens, so the language
model's own work is small and what is measured is the [N, T, V] part. Each case runs in a fresh process,
which reports its resident memory before the step (model, inputs) and the peak during it (`ru_maxrss`); the
difference is the step's extra memory. Cases:
- `scoring update`: completion log-probs of one prompt's G completions of T tokens (shared-prefix scoring, the
  default) with gradients, then backward: the policy update of an RL step;
- `scoring no-grad`: the same forward without gradients: the reference and old-policy passes;
- `SFT step`: the assistant-only loss over G sequences of T labelled tokens, then backward.
`before` is the code as it was before chunking, written out here (the model's logits for every token at once,
cast to float32, divided by the temperature, suppressed tokens at -inf, log-softmax; SFT: `F.cross_entropy`
over the labelled tokens' logits); `chunked` is `videor1.models.head` at `model.logit_chunk_tokens` (1024).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import peak_bytes, rss_bytes  # benchmarks/common.py, beside this script

CASES = ("scoring update", "scoring no-grad", "SFT step")
PATHS = ("before", "chunked")
VOCAB = 152_064


def build_model(folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """A tiny Qwen2.5-VL whose language model has the real vocabulary (random weights)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from videor1.models.tiny import build_tiny

    if not (folder / "config.json").exists():
        build_tiny(folder, seed=0)
    config = AutoConfig.from_pretrained(folder)
    config.text_config.vocab_size = VOCAB
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa").to(dtype)
    return model.train()


def before_scoring(scorer, prompt, ids, mask, owners, temperature):
    """The shared-prefix scorer before chunking: the model's logits for all completion tokens at once."""
    from videor1.models.head import selective_log_softmax
    from videor1.rl.logprobs import group_size, packed_inputs

    inputs = packed_inputs(scorer.model, prompt, ids, group_size(owners, len(prompt["input_ids"])))
    out = scorer.model(**inputs, mm_encoder_outputs={}, use_cache=False)
    logits = out.logits.reshape(len(owners), ids.shape[1], -1).float() / temperature  # [N, T, V]
    logits[..., scorer.suppressed] = float("-inf")
    return selective_log_softmax(logits, ids)


def before_sft(model, inputs, labels):
    """SFT's loss before chunking: cross-entropy over the labelled tokens' logits, all at once."""
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum")


def worker(case: str, path: str, folder: Path, generations: int, tokens: int, rounds: int, dtype: str) -> dict:
    """One case in this (fresh) process: median seconds and the step's peak extra bytes."""
    from videor1.rl.logprobs import CompletionScorer
    from videor1.sft.trainer import AssistantLoss

    model = build_model(folder, getattr(torch, dtype))
    resident = rss_bytes()  # the model and, below, inputs of a few kilobytes
    generator = torch.Generator().manual_seed(0)
    prompt_len = 64
    prompt = {"input_ids": torch.randint(100, 1000, (1, prompt_len), generator=generator),
              "attention_mask": torch.ones(1, prompt_len, dtype=torch.long)}
    ids = torch.randint(100, VOCAB, (generations, tokens), generator=generator)  # [N, T]
    mask = torch.ones_like(ids)
    owners = [0] * generations
    suppressed = list(range(10))
    scorer = CompletionScorer(model, suppressed, scoring="shared_prefix", chunk_tokens=1024)

    def step() -> None:
        if case == "SFT step":
            inputs = {"input_ids": ids, "attention_mask": mask}
            labels = ids.clone()
            if path == "before":
                loss = before_sft(model, inputs, labels)
            else:
                loss = AssistantLoss(model, 1024)(inputs, labels)[0]
            loss.backward()
        else:
            with torch.set_grad_enabled(case == "scoring update"):
                if path == "before":
                    logp = before_scoring(scorer, prompt, ids, mask, owners, 0.7)
                else:
                    logp = scorer(prompt, ids, mask, owners, temperature=0.7, vision={}).logp
                if case == "scoring update":
                    (logp * mask).sum().backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up (its peak counts too: it is the same step)
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return {"case": case, "path": path, "seconds": statistics.median(seconds), "extra_bytes": peak_bytes() - resident,
            "resident_bytes": resident}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=8, help="G: completions of the prompt")
    parser.add_argument("--tokens", type=int, default=768, help="T: tokens per completion")
    parser.add_argument("--rounds", type=int, default=2, help="timed steps per case (median)")
    parser.add_argument("--dtype", default="float32", help="the model's dtype (bfloat16 is slow on most CPUs)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of the cases")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(*args.worker, args.folder, args.generations, args.tokens, args.rounds, args.dtype)
        print(json.dumps(result))
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    print(f"V = {VOCAB:,}, G = {args.generations}, T = {args.tokens}, {args.dtype}: one fp32 [N, T, V] tensor is "
          f"{args.generations * args.tokens * VOCAB * 4 / 2**30:.2f} GiB")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for path in PATHS:  # one fresh process each: ru_maxrss only grows
                command = [sys.executable, __file__, "--worker", case, path, "--folder", str(Path(tmp) / "tiny"),
                           "--generations", str(args.generations), "--tokens", str(args.tokens),
                           "--rounds", str(args.rounds), "--dtype", args.dtype]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(f"  {case:18s} {path:8s} {r['seconds']:7.2f} s   peak extra {r['extra_bytes'] / 2**30:6.2f} GiB",
                      flush=True)
    print("\n| case | before: s | chunked: s | time ratio | before: GiB | chunked: GiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        b, c = (next(r for r in results if r["case"] == case and r["path"] == p) for p in PATHS)
        print(f"| {case} | {b['seconds']:.2f} | {c['seconds']:.2f} | {c['seconds'] / b['seconds']:.2f}x | "
              f"{b['extra_bytes'] / 2**30:.2f} | {c['extra_bytes'] / 2**30:.2f} | "
              f"{b['extra_bytes'] / max(c['extra_bytes'], 1):.1f}x lower |")
    if args.json:
        args.json.write_text(json.dumps({"vocab": VOCAB, "generations": args.generations, "tokens": args.tokens,
                                         "dtype": args.dtype, "results": results}, indent=1))


if __name__ == "__main__":
    main()
