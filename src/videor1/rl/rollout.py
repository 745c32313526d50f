"""Rollout engines behind one interface: a step's ordered and shuffled groups, and the engine's life around updates.

The trainer builds one engine at set-up (`build_rollout_engine`, from `generation.engine`) and never asks which
one it has:
- `LeanRollouts` (`hf`): videor1's sampler on the policy, each prompt prefilled once (from the trainer's vision
  features when it has them), ordered and shuffled rows decoded in one loop (`videor1.models.sampler`);
- `GenerateRollouts` (`hf-generate`): HF `generate`, one call per group kind, the reference;
- `VLLMRollouts` (`vllm`): the colocated vLLM engine, fed the trainer's own prompt texts and decoded frames,
  its first prompts checked against the HF processor's, its weights replaced after every optimizer step.

What varies between engines is exactly the interface: how a group is sampled, whether the engine is off-policy
(another implementation than the policy's forward, whose log-probs the trainer checks and may correct), and
what happens to weights and memory around an update (no-ops for the HF engines). Sharded training slots in
here: an engine decides how it decodes in step with the other processes and how it gathers the weights it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from videor1.config import TrainConfig
from videor1.models.generation import Completions, SamplingParams, generate_completions
from videor1.models.inputs import SampleMedia
from videor1.models.sampler import concat_inputs, concat_vision, sample_completions, split_completions


@dataclass
class PromptBatch:
    """Prompts to sample from: their chat-template texts, decoded media and processor inputs (on the device)."""

    texts: list[str]
    media: list[SampleMedia]
    inputs: Any
    vision: dict[str, Any] | None = None
    """The media through the policy's vision tower (items in prompt order), where the trainer has them: the
    lean sampler's prefill takes them instead of encoding the pixels again."""


class RolloutEngine(Protocol):
    """Samples G completions per ordered prompt and G~ per shuffled prompt; lives alongside the policy."""

    off_policy: bool
    """True when another implementation than the policy's forward samples (vLLM): completions carry its
    log-probs, which the trainer compares with its own and may importance-weight."""

    takes_vision: bool
    """True when the engine prefills from `PromptBatch.vision` (vision features) instead of the pixels."""

    def sample(self, ordered: PromptBatch, shuffled: PromptBatch | None) -> tuple[Completions, Completions | None]:
        """G completions per ordered prompt, G~ per shuffled one (None when there is none), prompt-major."""
        ...

    def sync_weights(self, policy: Any) -> None:
        """After an optimizer step: the next rollouts sample from `policy`'s current weights."""
        ...

    def sleep(self) -> None:
        """Before the updates: give memory back to the trainer where the engine can."""
        ...

    def close(self) -> None:
        """Release the engine (idempotent)."""
        ...


class _InProcess:
    """The HF engines sample from the policy itself: weights are always current, nothing to free or close."""

    off_policy = False
    takes_vision = False

    def __init__(self, policy: Callable[[], Any], tokenizer: Any, sampling: SamplingParams, num_generations: int,
                 num_shuffled: int):
        self.policy, self.tokenizer, self.sampling = policy, tokenizer, sampling
        self.num_generations, self.num_shuffled = num_generations, num_shuffled

    def sync_weights(self, policy: Any) -> None:
        """Nothing to do: the policy samples with its own weights."""

    def sleep(self) -> None:
        """Nothing to free."""

    def close(self) -> None:
        """Nothing to release."""


class LeanRollouts(_InProcess):
    """`generation.engine: hf`: ordered and shuffled prompts prefilled once each and decoded in one loop."""

    takes_vision = True

    def sample(self, ordered: PromptBatch, shuffled: PromptBatch | None) -> tuple[Completions, Completions | None]:
        """G completions per ordered prompt and G~ per shuffled one, from one decode loop."""
        G, num_prompts = self.num_generations, len(ordered.texts)
        if shuffled is None:
            return sample_completions(self.policy(), self.tokenizer, ordered.inputs, self.sampling,
                                      [G] * num_prompts, vision=ordered.vision), None
        merged = concat_inputs([ordered.inputs, shuffled.inputs], self.tokenizer.pad_token_id)
        vision = None
        if ordered.vision is not None and shuffled.vision is not None:
            vision = concat_vision([ordered.vision, shuffled.vision])
        both = sample_completions(self.policy(), self.tokenizer, merged, self.sampling,
                                  [G] * num_prompts + [self.num_shuffled] * len(shuffled.texts), vision=vision)
        first, second = split_completions(both, [G * num_prompts, self.num_shuffled * len(shuffled.texts)])
        return first, second


class GenerateRollouts(_InProcess):
    """`generation.engine: hf-generate`: HF `generate`, once for the ordered and once for the shuffled group."""

    def sample(self, ordered: PromptBatch, shuffled: PromptBatch | None) -> tuple[Completions, Completions | None]:
        """G completions per ordered prompt, then G~ per shuffled one, each from its own `generate` call."""
        def run(batch: PromptBatch, n: int) -> Completions:
            return generate_completions(self.policy(), self.tokenizer, batch.inputs, self.sampling, num_generations=n)

        return run(ordered, self.num_generations), None if shuffled is None else run(shuffled, self.num_shuffled)


class VLLMRollouts:
    """`generation.engine: vllm`: the colocated engine samples from the trainer's texts and decoded frames."""

    off_policy = True
    takes_vision = False

    def __init__(self, engine: Any, sampling: SamplingParams, eos_ids: list[int], device: torch.device, *,
                 num_generations: int, num_shuffled: int, check_prompts: bool):
        self.engine, self.sampling, self.eos_ids, self.device = engine, sampling, eos_ids, device
        self.num_generations, self.num_shuffled = num_generations, num_shuffled
        self.prompts_checked = not check_prompts

    def _group(self, batch: PromptBatch, n: int) -> Completions:
        inputs = batch.inputs
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"],
                                                                     strict=True)]
        if not self.prompts_checked:  # the run's first prompts: EngineMismatch names the first difference
            self.engine.check_prompts(batch.texts, batch.media, prompt_ids)
            self.prompts_checked = True
        out = self.engine.completions(batch.texts, batch.media, self.sampling, n=n, eos_ids=self.eos_ids,
                                      prompt_ids=prompt_ids)
        return Completions(out.ids.to(self.device), out.mask.to(self.device), out.texts, out.prompt_mismatches,
                           out.logprobs.to(self.device))

    def sample(self, ordered: PromptBatch, shuffled: PromptBatch | None) -> tuple[Completions, Completions | None]:
        """G completions per ordered prompt, then G~ per shuffled one, with vLLM's sampling log-probs."""
        first = self._group(ordered, self.num_generations)
        return first, None if shuffled is None else self._group(shuffled, self.num_shuffled)

    def sync_weights(self, policy: Any) -> None:
        """Push the policy's weights (LoRA merged in, one weight at a time) into the running engine."""
        from videor1.models.vllm_engine import policy_weights

        self.engine.load_weights(policy_weights(policy))

    def sleep(self) -> None:
        """With enable_sleep_mode (GPUs) vLLM's memory is the trainer's until the next push."""
        self.engine.sleep()

    def close(self) -> None:
        """Shut the engine down once."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def build_rollout_engine(cfg: TrainConfig, policy: Callable[[], Any], processor: Any, eos_ids: list[int],
                         sampling: SamplingParams, *, device: torch.device, process_index: int,
                         log: Callable[[str], None]) -> RolloutEngine:
    """The engine `generation.engine` names, holding the policy's current weights (a resumed run's included)."""
    algo = cfg.algorithm
    counts = {"num_generations": algo.num_generations, "num_shuffled": algo.num_shuffled}
    if cfg.generation.engine == "hf":
        return LeanRollouts(policy, processor.tokenizer, sampling, **counts)
    if cfg.generation.engine == "hf-generate":
        return GenerateRollouts(policy, processor.tokenizer, sampling, **counts)
    options = cfg.generation.vllm
    if options.importance_cap is None:
        log("generation.engine=vllm without generation.vllm.importance_cap: no off-policy correction")
    from videor1.models.vllm_engine import VLLMEngine, VLLMSettings

    settings = VLLMSettings(
        gpu_memory_utilization=options.gpu_memory_utilization, enforce_eager=options.enforce_eager,
        max_model_len=options.max_model_len, enable_sleep_mode=options.enable_sleep_mode,
    )
    seed = cfg.seed + 1_000_003 * process_index  # each process samples its own
    engine = VLLMEngine(cfg.model.name_or_path, processor, dtype=cfg.model.dtype, seed=seed, settings=settings)
    rollouts = VLLMRollouts(engine, sampling, eos_ids, device, check_prompts=options.check_prompts, **counts)
    rollouts.sync_weights(policy())
    return rollouts
