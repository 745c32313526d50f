"""vLLM as a generation engine beside the HF path, fed the same decoded media and checked against it.

The engine is colocated (in this process, as TRL's colocate mode): `VLLM_ENABLE_V1_MULTIPROCESSING=0` is set
before vLLM is imported. Prompts are the HF path's own: the chat-template text from `prompt_text` and the
frames `load_video` decoded, passed as `(frames, metadata)` with `do_sample_frames=False` and
`do_resize=False` (without the latter vLLM's processor resizes media under its min_pixels again), so vLLM
expands exactly the placeholders the HF processor does. Every request's expanded prompt ids can be compared
with the HF processor's (`prompt_mismatches`); the RL trainer checks its first batch and stops on a difference.

Three settings make vLLM compute what the HF model computes (each found by comparing the two on tiny models
of all three families; `benchmarks/vllm_probe.py`):
- `logprobs_mode="processed_logprobs"`: sampling log-probs after temperature, top-k/top-p and the vision-token
  bias, i.e. of the distribution actually sampled from, which the scorer reproduces (`Scores.sampled_logp`)
  for the trainer's gap metric and importance weights;
- `mm_device_do_normalize=False`: vLLM would otherwise normalise videos with the image processor's mean/std;
- M-RoPE positions of Qwen2.5-VL: vLLM resumes the text after a vision item at its largest position
  + 1, as the released models do, but floors a video's scaled time in float64 where the released code (and
  the HF path) rounds it in float32 first; for fractional seconds per grid (videos sampled at 1.2 fps, say)
  some temporal patches then land one position apart. vLLM's Qwen2.5-VL instance therefore gets the HF path's
  own function (`released_mrope_positions`, `videor1.models.mrope`); Qwen2-VL and Qwen3-VL scale no time and
  keep vLLM's rule.
Vision placeholder tokens are suppressed with a -100 logit bias, as the HF path suppresses them.

Weights follow the policy in place (`load_weights`: vLLM's `reload_weights` through `collective_rpc`, then the
prefix and encoder caches are reset, whose entries were computed with the old weights).

Several processes (a DDP or FSDP2 launch): each builds its own engine after the trainer's process group exists;
vLLM then joins that group, with a tensor-parallel group of one per process (each engine independent, as with
vLLM's external launcher). vLLM's shutdown would destroy the trainer's default group with its own, so `close`
takes down only vLLM's groups there (`_keeping_process_group`).
"""

from __future__ import annotations

import gc
import os
import types
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from videor1.models.generation import Completions, SamplingParams, completion_mask, suppressed_token_ids
from videor1.models.inputs import SampleMedia, video_metadata
from videor1.models.mrope import ReleasedRopeIndex, rope_rule

_VISION_BIAS = -100.0  # vLLM clamps logit biases to ±100: enough to never sample a placeholder
_TIME_SCALED_FAMILIES = ("qwen2_5_vl",)  # vLLM numbers Qwen2-VL and Qwen3-VL as released


class EngineMismatch(RuntimeError):
    """vLLM's expanded prompt differs from the HF processor's: its completions would not be the policy's."""


@dataclass(frozen=True)
class VLLMSettings:
    """How the colocated vLLM engine is built."""

    gpu_memory_utilization: float = 0.3
    """Share of GPU memory vLLM may take (weights + KV cache); the trainer keeps the rest."""
    enforce_eager: bool = False
    """Skip torch.compile and CUDA graphs (seconds to start instead of tens; slower decoding)."""
    max_model_len: int | None = None
    """Longest prompt + completion; None = the model's."""
    enable_sleep_mode: bool = False
    """GPU only: free vLLM's memory while training (`sleep` / `wake_up` around each update)."""
    cpu_kv_cache_gib: int = 1
    """KV cache size on the CPU backend (VLLM_CPU_KVCACHE_SPACE)."""


def _set_environment(settings: VLLMSettings) -> None:
    """vLLM reads these at import: the engine in this process, the CPU backend's KV cache size."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kv_cache_gib))


def released_mrope_positions(self: Any, input_tokens: list[int], mm_features: list[Any]) -> tuple[Any, int]:
    """vLLM's `get_mrope_input_positions` for Qwen2.5-VL, computed by the HF path's released rule."""
    features = sorted(mm_features, key=lambda f: f.mm_position.offset)

    def stacked(modality: str, key: str) -> torch.Tensor | None:
        values = [f.data[key].data.reshape(-1) for f in features
                  if f.modality == modality and f.data.get(key) is not None]
        return torch.stack(values) if values else None

    index = ReleasedRopeIndex(rope_rule(self.config), self.config.image_token_id, self.config.video_token_id)
    positions, deltas = index(
        torch.tensor([input_tokens]), image_grid_thw=stacked("image", "image_grid_thw"),
        video_grid_thw=stacked("video", "video_grid_thw"), second_per_grid_ts=stacked("video", "second_per_grid_ts"),
    )
    return positions[:, 0], int(deltas)


def _install_released_positions(worker: Any) -> bool:
    """Give a worker's Qwen2.5-VL model the released M-RoPE rule (run through collective_rpc)."""
    model = worker.model_runner.get_model()
    if getattr(getattr(model, "config", None), "model_type", "") not in _TIME_SCALED_FAMILIES:
        return False
    model.get_mrope_input_positions = types.MethodType(released_mrope_positions, model)
    return True


class VLLMEngine:
    """A colocated vLLM engine for one checkpoint, sampling from the HF path's prompts and media."""

    def __init__(self, model: str | Path, processor: Any, *, dtype: str = "float32", seed: int = 0,
                 settings: VLLMSettings | None = None) -> None:
        self.settings = settings or VLLMSettings()
        _set_environment(self.settings)
        from vllm import LLM

        # a trainer's group, made before the engine: vLLM joins it, and it must outlive the engine
        self.joins_process_group = torch.distributed.is_available() and torch.distributed.is_initialized()
        kwargs: dict[str, Any] = {"enable_sleep_mode": True} if self.settings.enable_sleep_mode else {}
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = self.settings.gpu_memory_utilization
        self.llm = LLM(
            model=str(model), dtype=dtype, seed=seed, max_model_len=self.settings.max_model_len,
            enforce_eager=self.settings.enforce_eager, limit_mm_per_prompt={"image": 1, "video": 1},
            logprobs_mode="processed_logprobs", mm_device_do_normalize=False, **kwargs,
        )
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.released_positions = any(self.llm.collective_rpc(_install_released_positions))
        self.bias = {token: _VISION_BIAS for token in suppressed_token_ids(self.tokenizer)}
        self.sleeping = False

    # ---- requests ----------------------------------------------------------------------------------------
    @staticmethod
    def request(text: str, media: SampleMedia) -> dict[str, Any]:
        """One vLLM prompt: the rendered text and the decoded media, neither resampled nor resized again."""
        if media.video is not None:
            frames = media.video.frames.permute(0, 2, 3, 1).contiguous().numpy()  # [F, 3, H, W] -> [F, H, W, 3]
            metadata = dict(video_metadata(media.video))
            metadata["do_sample_frames"] = False  # read by vLLM's Qwen3-VL processor for its timestamps
            data = {"video": [(frames, metadata)]}
            kwargs = {"do_resize": False, "do_sample_frames": False}
        elif media.image is not None:
            data, kwargs = {"image": media.image}, {"do_resize": False}
        else:
            return {"prompt": text}
        return {"prompt": text, "multi_modal_data": data, "mm_processor_kwargs": kwargs}

    def _sampling(self, params: SamplingParams, n: int, seed: int | None) -> Any:
        from vllm import SamplingParams as VSampling

        if params.repetition_penalty != 1.0:
            raise ValueError("the vLLM engine samples without a repetition penalty; use the hf engine for one")
        return VSampling(
            n=n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or -1,
            max_tokens=params.max_new_tokens, logprobs=0, seed=seed, logit_bias=dict(self.bias),
        )

    def generate(self, texts: Sequence[str], media: Sequence[SampleMedia], params: SamplingParams, *, n: int = 1,
                 seed: int | None = None) -> list[Any]:
        """vLLM's RequestOutputs for the prompts, n completions each, with the sampled tokens' log-probs."""
        self.wake()
        requests = [self.request(text, item) for text, item in zip(texts, media, strict=True)]
        return self.llm.generate(requests, self._sampling(params, n, seed), use_tqdm=False)

    def completions(self, texts: Sequence[str], media: Sequence[SampleMedia], params: SamplingParams, *, n: int,
                    eos_ids: list[int], prompt_ids: Sequence[Sequence[int]] | None = None,
                    seed: int | None = None) -> Completions:
        """n completions per prompt as the HF engine returns them (ids, mask, texts, sampling log-probs).

        `prompt_ids`: the HF processor's prompt ids per prompt (unpadded); rows whose vLLM prompt differs are
        counted in `prompt_mismatches`.
        """
        outputs = self.generate(texts, media, params, n=n, seed=seed)
        rows = [list(c.token_ids) for out in outputs for c in out.outputs]  # N = P * n
        width = max(1, max(len(r) for r in rows))
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)  # [N, T]
        logprobs = torch.zeros(len(rows), width)  # [N, T]
        for i, (row, completion) in enumerate(zip(rows, (c for out in outputs for c in out.outputs), strict=True)):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            for t, (token, entry) in enumerate(zip(row, completion.logprobs or [], strict=False)):
                logprobs[i, t] = entry[token].logprob
        mask = completion_mask(ids, eos_ids)  # a row shorter than T ended at its EOS
        texts_out = self.tokenizer.batch_decode(ids.masked_fill(mask == 0, pad), skip_special_tokens=True)
        mismatches = 0
        if prompt_ids is not None:
            mismatches = sum(list(out.prompt_token_ids) != list(expected) for out, expected
                             in zip(outputs, prompt_ids, strict=True)) * n
        return Completions(ids, mask, texts_out, mismatches, logprobs * mask)

    def texts(self, texts: Sequence[str], media: Sequence[SampleMedia], params: SamplingParams) -> list[str]:
        """One completion's text per prompt (evaluation), special tokens dropped as on the HF path."""
        outputs = self.generate(texts, media, params, n=1)
        decoded = self.tokenizer.batch_decode([list(out.outputs[0].token_ids) for out in outputs],
                                              skip_special_tokens=True)
        return decoded

    def check_prompts(self, texts: Sequence[str], media: Sequence[SampleMedia],
                      prompt_ids: Sequence[Sequence[int]]) -> None:
        """Raise EngineMismatch when vLLM expands any prompt differently from the HF processor."""
        outputs = self.generate(texts, media, SamplingParams(max_new_tokens=1, temperature=0.0))
        for i, (out, expected) in enumerate(zip(outputs, prompt_ids, strict=True)):
            got = list(out.prompt_token_ids)
            if got != list(expected):
                at = next((k for k, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                          min(len(got), len(expected)))
                raise EngineMismatch(
                    f"prompt {i}: vLLM's expanded prompt has {len(got)} tokens, the HF processor's {len(expected)}; "
                    f"they part at token {at} (vLLM {got[at:at + 4]}, HF {list(expected[at:at + 4])}). Completions "
                    "would not come from the policy's inputs; use generation.engine=hf, or check_prompts=false to "
                    "go on anyway"
                )

    # ---- weights and memory ------------------------------------------------------------------------------
    def load_weights(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights in place (HF parameter names), then drop caches built on the old ones."""
        self.wake()
        # lazily: a sharded policy's weights are gathered one at a time as vLLM reads them
        weights = ((name, tensor.detach()) for name, tensor in named)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()

    def sleep(self) -> None:
        """Free vLLM's GPU memory while the trainer runs (only with enable_sleep_mode)."""
        if self.settings.enable_sleep_mode and not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def wake(self) -> None:
        """Take the memory back before generating or loading weights."""
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    def close(self) -> None:
        """Shut the engine down and release its memory."""
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            if self.joins_process_group:
                with _keeping_process_group():
                    engine_core.shutdown()
            else:
                engine_core.shutdown()
        del self.llm
        gc.collect()


@contextmanager
def _keeping_process_group() -> Iterator[None]:
    """During vLLM's shutdown, destroy vLLM's own process groups but not torch's default one it joined."""
    import vllm.v1.engine.core as core
    from vllm.distributed import parallel_state

    def own_groups_only(shutdown_ray: bool = False) -> None:
        parallel_state.destroy_model_parallel()
        if parallel_state._WORLD is not None:  # vLLM's world coordinator: its own subgroups of the default group
            parallel_state._WORLD.destroy()
            parallel_state._WORLD = None
        gc.collect()

    original = core.cleanup_dist_env_and_memory
    core.cleanup_dist_env_and_memory = own_groups_only
    try:
        yield
    finally:
        core.cleanup_dist_env_and_memory = original


def policy_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's full weights under HF names, one tensor at a time; a LoRA policy's merged (W + scale·B·A per
    adapted weight, `videor1.models.lora_weights`). A sharded (FSDP2) weight is gathered when its turn comes and
    dropped after: every process must iterate it to the end, in the same order, and no second whole copy of the
    model is ever held."""
    from videor1.models.load import unwrap_peft
    from videor1.models.lora_weights import adapted_layers, merged_weights

    base = unwrap_peft(model)
    if base is model:
        return (_whole(name, tensor) for name, tensor in model.state_dict().items())
    layers = adapted_layers(base)
    return ((name, tensor.detach()) for name, tensor in merged_weights(base.state_dict(), layers, _full))


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a DTensor shard (a collective), the tensor otherwise."""
    full = getattr(tensor, "full_tensor", None)
    return full() if callable(full) else tensor


def _whole(name: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor]:
    """A weight as vLLM takes it: whole and detached."""
    return name, _full(tensor).detach()
