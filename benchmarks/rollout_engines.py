"""Rollout throughput, HF `generate` vs the vLLM engine, on the same prompts, media and sampling settings.

    .venv-vllm/bin/python benchmarks/rollout_engines.py                  # both shapes, on this machine
    .venv-vllm/bin/python benchmarks/rollout_engines.py --shape tiny --rounds 5

For each shape (the 0.7M-parameter tiny model and a 32M-parameter one of the same Qwen2.5-VL layout) it
samples G completions for P prompts with 4-frame videos, --rounds times per engine after one warm-up round,
and prints generated tokens per second (median over rounds) and the ratio. Run it with the vLLM venv's
python (constraints-vllm.txt). On a CPU vLLM's advantage (paged attention, continuous batching, CUDA graphs)
mostly does not apply; the figure that matters is on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import SPEC_32M, work_folder  # benchmarks/common.py, beside this script

from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.models.generation import SamplingParams, eos_token_ids, generate_completions
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model_and_processor
from videor1.models.tiny import TinySpec, build_tiny
from videor1.models.vllm_engine import VLLMEngine, VLLMSettings

SHAPES: dict[str, TinySpec] = {
    "tiny": TinySpec(),
    "32m": SPEC_32M,  # frames are 56x56 here, so the vision tower's share stays small
}
MEDIA = MediaConfig(fps=2.0, min_frames=4, max_frames=4, video_min_pixels=3136, video_max_pixels=3136,
                    image_min_pixels=3136, image_max_pixels=3136)


def measure(shape: str, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Median generated tokens per second of each engine for one model shape."""
    model_dir = work / shape
    if not (model_dir / "config.json").exists():
        build_tiny(model_dir, spec=SHAPES[shape], seed=0)
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    print(f"{shape}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    samples = [s for s in load_dataset(work / "synth" / "train.json", work / "synth").samples if s.is_video]
    samples = samples[: args.prompts]
    media = [load_sample_media(s, MEDIA, vision_factor(processor)) for s in samples]
    texts = [prompt_text(processor, s) for s in samples]
    inputs = processor_inputs(processor, texts, media)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, top_p=0.95)
    eos = eos_token_ids(model, processor.tokenizer)

    def hf() -> int:
        return int(generate_completions(model, processor.tokenizer, inputs, params,
                                        num_generations=args.generations).mask.sum())

    engine = VLLMEngine(model_dir, processor, dtype="float32", settings=VLLMSettings(enforce_eager=args.eager))

    def vllm() -> int:
        return int(engine.completions(texts, media, params, n=args.generations, eos_ids=eos).mask.sum())

    rates: dict[str, float] = {}
    for name, run in (("hf", hf), ("vllm", vllm)):
        run()  # warm-up
        per_round = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            tokens = run()
            per_round.append(tokens / (time.perf_counter() - start))
        rates[name] = statistics.median(per_round)
    engine.close()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start)")
    parser.add_argument("--work", type=Path, default=None, help="where models and data go (default: a temp dir)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with work_folder(args.work) as work:
        shapes = list(SHAPES) if args.shape == "all" else [args.shape]
        print(f"P={args.prompts} prompts x G={args.generations}, {args.new_tokens} new tokens, 4 frames, fp32")
        for shape in shapes:
            rates = measure(shape, work, args)
            print(f"{shape}: hf {rates['hf']:.0f} tok/s, vllm {rates['vllm']:.0f} tok/s, "
                  f"vllm/hf {rates['vllm'] / rates['hf']:.2f}")


if __name__ == "__main__":
    main()
