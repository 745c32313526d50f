"""Log-prob + backward time of shared-prefix scoring against the full-sequence path, measured in one run.

    python benchmarks/scoring.py                      # both shapes (about 4 minutes on 2 CPU cores)
    python benchmarks/scoring.py --shape long --rounds 2

Each shape scores the same prompts and completions both ways on one model, alternating the two paths round
by round so that drift in the machine's speed hits both alike, and prints the median seconds of
- `reference`: a no-grad forward (the reference and old-policy passes of a step),
- `update`: a forward with gradients plus its backward (the policy update),
and the full/shared ratio of each. The vision features are encoded once beforehand and passed in, as the
trainer does with a frozen tower, so the figures are the language model's work.

Shapes: `tiny` is the demo's model and media (0.7M parameters, 4 frames at 56x56, 24-token completions, P = 8,
G = 8); `long` is the paper's shape scaled to this CPU: a 32M-parameter model, a 16-frame video of about
1,000 visual tokens, G = 8 completions of 256 tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import SPEC_32M, made_up_video, work_folder  # benchmarks/common.py, beside this script

from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.models.generation import suppressed_token_ids
from videor1.models.inputs import SampleMedia, load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model_and_processor
from videor1.models.tiny import TinySpec, build_tiny
from videor1.rl.logprobs import CompletionScorer, detach_vision, encode_vision


@dataclass(frozen=True)
class Shape:
    """A model size and a batch of prompts and completions to score."""

    spec: TinySpec
    prompts: int
    generations: int
    new_tokens: int
    frames: int
    side: int  # frame height and width in pixels


SHAPES: dict[str, Shape] = {
    "tiny": Shape(TinySpec(), prompts=8, generations=8, new_tokens=24, frames=4, side=56),
    # 16 frames of 308x308: 8 temporal patches x 11 x 11 merged tokens = 968 visual tokens
    "long": Shape(SPEC_32M, prompts=1, generations=8, new_tokens=256, frames=16, side=308),
}


def prompts(shape: Shape, processor: object, work: Path) -> object:
    """Processor inputs of `shape.prompts` video questions from the synthetic set, frames at the shape's size."""
    samples = [s for s in load_dataset(work / "synth" / "train.json", work / "synth").samples if s.is_video]
    samples = samples[: shape.prompts]
    media_config = MediaConfig(fps=2.0, min_frames=4, max_frames=4, video_min_pixels=3136, video_max_pixels=3136)
    media = []
    for sample in samples:
        if shape.frames == 4 and shape.side == 56:
            media.append(load_sample_media(sample, media_config, vision_factor(processor)))
            continue
        # the synthetic clips are small and short: a long video's frames are made up, only their count matters
        media.append(SampleMedia(video=made_up_video(shape.frames, shape.side, sample.media_path)))
    return processor_inputs(processor, [prompt_text(processor, s) for s in samples], media)


def measure(name: str, work: Path, rounds: int) -> dict[str, dict[str, float]]:
    """Median seconds of each phase under each scoring path for one shape."""
    shape = SHAPES[name]
    model_dir = work / name
    if not (model_dir / "config.json").exists():
        build_tiny(model_dir, spec=shape.spec, seed=0)
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    model.train()
    inputs = dict(prompts(shape, processor, work))
    suppressed = suppressed_token_ids(processor.tokenizer)
    vocab = model.config.get_text_config().vocab_size
    allowed = torch.tensor([t for t in range(vocab) if t not in suppressed])
    generator = torch.Generator().manual_seed(0)
    rows = shape.prompts * shape.generations
    ids = allowed[torch.randint(len(allowed), (rows, shape.new_tokens), generator=generator)]
    mask = torch.ones_like(ids)
    owners = [p for p in range(shape.prompts) for _ in range(shape.generations)]
    with torch.no_grad():
        vision = detach_vision(encode_vision(model, inputs))
    prompt_tokens = int(inputs["attention_mask"].sum(1).max())
    print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, P={shape.prompts}, "
          f"G={shape.generations}, prompt {prompt_tokens} tokens, completions {shape.new_tokens} tokens")
    scorers = {mode: CompletionScorer(model, suppressed, scoring=mode) for mode in ("full", "shared_prefix")}

    def reference(mode: str) -> None:
        with torch.no_grad():
            scorers[mode](inputs, ids, mask, owners, vision=vision)

    def update(mode: str) -> None:
        logp = scorers[mode](inputs, ids, mask, owners, vision=vision).logp
        (logp * mask).sum().backward()
        model.zero_grad(set_to_none=True)

    times: dict[str, dict[str, list[float]]] = {p: {m: [] for m in scorers} for p in ("reference", "update")}
    for phase, run in (("reference", reference), ("update", update)):
        for mode in scorers:
            run(mode)  # warm-up
        for _ in range(rounds):
            for mode in scorers:  # interleaved: both paths see the same machine
                start = time.perf_counter()
                run(mode)
                times[phase][mode].append(time.perf_counter() - start)
    return {phase: {mode: statistics.median(v) for mode, v in per.items()} for phase, per in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="where models and data go (default: a temp dir)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with work_folder(args.work) as work:
        results = {}
        for name in list(SHAPES) if args.shape == "all" else [args.shape]:
            results[name] = measure(name, work, args.rounds)
        print(f"\nmedian seconds over {args.rounds} interleaved rounds, fp32, {torch.get_num_threads()} threads")
        print(f"{'shape':8}{'phase':12}{'full':>10}{'shared':>10}{'ratio':>8}")
        for name, phases in results.items():
            for phase, seconds in phases.items():
                full, shared = seconds["full"], seconds["shared_prefix"]
                print(f"{name:8}{phase:12}{full:10.3f}{shared:10.3f}{full / shared:8.2f}x")


if __name__ == "__main__":
    main()
