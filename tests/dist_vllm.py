"""Run under a 2-process CPU launch (vLLM venv): each process's colocated vLLM engine takes the weights pushed
from an FSDP2-sharded policy, and its sampling log-probs then equal the sharded scorer's."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import distribute_tensor

from videor1.config import DistributedConfig, MediaConfig
from videor1.data.dataset import load_dataset
from videor1.models.generation import SamplingParams, eos_token_ids, suppressed_token_ids
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model_and_processor
from videor1.models.vllm_engine import VLLMEngine, VLLMSettings, policy_weights
from videor1.rl.logprobs import CompletionScorer
from videor1.sharding import gathered, shard

MEDIA = MediaConfig(fps=2.0, min_frames=4, max_frames=4, video_min_pixels=3136, video_max_pixels=3136,
                    image_min_pixels=12544, image_max_pixels=12544)


def main() -> None:
    model_dir, synth_root, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    scorer = CompletionScorer(model, suppressed_token_ids(processor.tokenizer))
    shard(scorer, model, DistributedConfig(sharding="fsdp2"), torch.device("cpu"))
    engine = VLLMEngine(model_dir, processor, dtype="float32", seed=rank, settings=VLLMSettings(enforce_eager=True))
    samples = [s for s in load_dataset(synth_root / "train.json", synth_root).samples if s.is_video]
    sample = samples[rank]  # each process its own prompt, as in a run
    media = load_sample_media(sample, MEDIA, vision_factor(processor))
    text = prompt_text(processor, sample)
    params = SamplingParams(max_new_tokens=8, temperature=0.7)
    eos = eos_token_ids(model, processor.tokenizer)

    def gap() -> float:
        completions = engine.completions([text], [media], params, n=4, eos_ids=eos, seed=7)
        inputs = processor_inputs(processor, [text], [media])
        with torch.no_grad(), gathered(scorer):
            scores = scorer(inputs, completions.ids, completions.mask, [0] * 4, temperature=params.temperature)
        return float(((scores.logp - completions.logprobs).abs() * completions.mask).max())

    before = gap()
    generator = torch.Generator().manual_seed(0)  # the same change on every process, applied to its shard
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "visual" not in name and p.dim() == 2:
                changed = p.full_tensor() + torch.randn(p.shape, generator=generator) * 0.02
                p.to_local().copy_(distribute_tensor(changed, p.device_mesh, p.placements).to_local())
    stale = gap()
    engine.load_weights(policy_weights(model))
    after = gap()
    result = torch.tensor([before, stale, after])
    every = [torch.zeros(3) for _ in range(dist.get_world_size())]
    dist.all_gather(every, result)
    if rank == 0:
        Path(out).write_text("\n".join(" ".join(f"{v:.3e}" for v in r.tolist()) for r in every))
    engine.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
