"""Generation with HF `generate`, and the one place its sampling arguments are built.

Every `generate` call of the package (RL rollouts, evaluation, `videor1 serve`, the local annotation teacher)
goes through `_generate` with a `GenerationConfig` from `build_generation_config`: the distribution sampled from
is set by a `SamplingParams` and nothing else. That matters most for RL, whose scorer
(`videor1.rl.logprobs.CompletionScorer`) models exactly softmax(logits / temperature); any other logits
processor would make importance ratios and KL silently wrong.

Why the checkpoint's `generation_config` is swapped out rather than overridden: transformers 5
(`GenerationMixin._prepare_generation_config`) fills every field our config leaves at `None` from
`model.generation_config`, then from global defaults. Explicit values win, but a field we never name
(`no_repeat_ngram_size`, `min_p`, `bad_words_ids`, `sequence_bias`, a custom entry...) would leak from a
checkpoint's `generation_config.json`, and some ("off" for `bad_words_ids` or `min_p`) can only be expressed
as `None`. So for the duration of the call the model sees a neutral config holding only its special-token
ids; the ignored settings are logged once per model.

Prompts arrive as processor outputs (left-padded, media already decoded under the stage's budgets).
`generate_completions` samples G completions per prompt for RL; `generate_from_inputs` serves chat requests,
each prompt with its own token limit: the batch runs to the largest and every row is cut at its own limit
afterwards, which for autoregressive decoding gives the tokens that row would have got alone. Temperature 0
means greedy decoding, as in the OpenAI API. Vision placeholder tokens are suppressed while decoding, so a
completion can never smuggle an `<|image_pad|>` that would desynchronise the vision features.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from transformers import GenerationConfig

from videor1.models.load import set_checkpointing, unwrap_peft
from videor1.models.mrope import use_released_positions

logger = logging.getLogger("videor1.generation")

VISION_TOKENS: tuple[str, ...] = (
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"
)
# the only generation_config fields taken from the checkpoint: token ids, not sampling settings
_TOKEN_KEYS: tuple[str, ...] = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
# fields a checkpoint may set that leave the distribution alone, so ignoring them is not worth a warning
_NOT_SAMPLING: frozenset[str] = frozenset({
    *_TOKEN_KEYS, "transformers_version", "max_length", "max_new_tokens", "num_return_sequences", "use_cache",
    "cache_implementation", "cache_config", "output_attentions", "output_hidden_states", "output_scores",
    "output_logits", "return_dict_in_generate",
})
# base models whose ignored generation settings have been logged already (weak: a freed model is forgotten)
_WARNED: weakref.WeakSet[Any] = weakref.WeakSet()

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Every decoding knob we support; temperature 0 is greedy, anything not here is off."""

    max_new_tokens: int
    temperature: float = 1.0
    """0 = greedy decoding; otherwise logits are divided by it before sampling."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 = off."""
    top_k: int | None = None
    """Keep the k most likely tokens; None = off."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on tokens already in the sequence (prompt included); 1.0 = none."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be positive or None (off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        """True when decoding takes the most likely token (temperature 0)."""
        return self.temperature == 0

    @property
    def batch_key(self) -> tuple[float, ...]:
        """Requests with equal keys can share one `generate` call (token limits may differ)."""
        if self.greedy:  # top_p and top_k are moot; the repetition penalty still applies
            return (0.0, self.repetition_penalty)
        return (self.temperature, self.top_p, self.top_k or 0, self.repetition_penalty)


@dataclass
class Completions:
    """G completions for each of P prompts, in prompt-major order (N = P*G)."""

    ids: torch.Tensor  # [N, T] token ids, padded after EOS
    mask: torch.Tensor  # [N, T] 1 on completion tokens up to and including EOS
    texts: list[str]  # N decoded completions (special tokens dropped)
    prompt_mismatches: int  # sequences whose returned prefix differs from the prompt ids (should be 0)
    logprobs: torch.Tensor | None = None  # [N, T] log-probs under the sampler's distribution, 0 after EOS

    @property
    def lengths(self) -> torch.Tensor:
        """[N] completion lengths in tokens."""
        return self.mask.sum(1)


@dataclass(frozen=True)
class GeneratedText:
    """One completion and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    """Generated tokens up to and including the end-of-turn token, as the OpenAI API counts them."""
    finish_reason: FinishReason


def completion_mask(ids: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """[N, T] mask that keeps tokens up to and including the first EOS of each row."""
    is_eos = torch.isin(ids, torch.tensor(eos_ids, device=ids.device))  # [N, T]
    # position of the first EOS, or T when a row has none (truncated at max_new_tokens)
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(ids[:, 0], ids.shape[1]))  # [N]
    positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # [1, T]
    return (positions <= first.unsqueeze(1)).long()  # [N, T]


def suppressed_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vision placeholder tokens this tokenizer knows."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS ids from the generation config (Qwen lists several), falling back to the tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


@contextmanager
def generation_mode(model: Any) -> Iterator[None]:
    """Eval mode with the KV cache on and gradient checkpointing off; restored afterwards."""
    was_training = model.training
    # transformers 5 renamed is_gradient_checkpointing; read the new name first to avoid its deprecation path
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        set_checkpointing(model, False)
    model.eval()
    try:
        yield
    finally:
        if checkpointing:
            set_checkpointing(model, True)
        model.train(was_training)


def build_generation_config(
    params: SamplingParams,
    *,
    eos_token_id: list[int],
    pad_token_id: int | None,
    suppress_tokens: list[int],
    num_return_sequences: int = 1,
    output_scores: bool = False,
) -> GenerationConfig:
    """The config of every `generate` call: our knobs and token ids only (see the module docstring)."""
    if params.greedy:
        sampling: dict[str, Any] = {"do_sample": False}
    else:
        # top_k must be named even when off: transformers' global default would be 50
        sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p,
                    "top_k": params.top_k or 0}
    return GenerationConfig(
        **sampling,
        repetition_penalty=params.repetition_penalty,
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=num_return_sequences,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        suppress_tokens=suppress_tokens,
        use_cache=True,
        return_dict_in_generate=True,
        output_scores=output_scores,
    )


def _ignored_sampling_settings(checkpoint: GenerationConfig) -> dict[str, Any]:
    """The settings of a checkpoint's generation config that could change the distribution, by name."""
    # an allow-list of harmless keys rather than a list of sampling ones: a field unknown to us gets reported
    return {
        key: value for key, value in sorted(checkpoint.to_diff_dict().items())
        if key not in _NOT_SAMPLING and not key.startswith("_") and value is not None
    }


@contextmanager
def _checkpoint_settings_ignored(model: Any) -> Iterator[None]:
    """Show `generate` a neutral `generation_config` (token ids only) for the duration; restored afterwards."""
    base = unwrap_peft(model)  # generate reads the transformers model's attribute, not the peft wrapper's
    checkpoint = base.generation_config
    if base not in _WARNED:
        _WARNED.add(base)
        ignored = _ignored_sampling_settings(checkpoint)
        if ignored:
            logger.warning("ignoring the checkpoint's generation settings (videor1 sets sampling itself): %s",
                           ", ".join(f"{k}={v!r}" for k, v in ignored.items()))
    # not thread-safe against a concurrent generate on the same model; each model has one generating thread
    base.generation_config = GenerationConfig(**{k: getattr(checkpoint, k, None) for k in _TOKEN_KEYS})
    try:
        yield
    finally:
        base.generation_config = checkpoint


def _generate(model: Any, inputs: Any, config: GenerationConfig, stopping_criteria: Any = None) -> Any:
    """The package's only `model.generate` call: an output with `.sequences` [N, Lp + T] (`.scores` if asked)."""
    extra = {} if stopping_criteria is None else {"stopping_criteria": stopping_criteria}
    use_released_positions(model)  # a model loaded outside `load_model` numbers positions as released too
    with generation_mode(model), _checkpoint_settings_ignored(model):
        return model.generate(**inputs, generation_config=config, **extra)


def _sampled_logprobs(scores: tuple[torch.Tensor, ...], ids: torch.Tensor) -> torch.Tensor:
    """[N, T] log-probs of the chosen tokens under the processed scores each step sampled from."""
    # one [N, V] step at a time: a stacked [N, T, V] log-softmax would double the scores' memory
    return torch.stack(
        [step.float().log_softmax(-1).gather(1, ids[:, t, None]).squeeze(1) for t, step in enumerate(scores)], 1
    )  # [N, T]


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, torch.Tensor],
    params: SamplingParams,
    *,
    num_generations: int,
    return_logprobs: bool = False,
) -> Completions:
    """Sample `num_generations` completions per left-padded prompt; optionally the sampler's log-probs."""
    if params.greedy:
        raise ValueError("rollouts sample: temperature must be > 0 (greedy would give G identical completions)")
    eos = eos_token_ids(model, tokenizer)
    # output_scores keeps T steps of [N, V] processed scores on the device, hence off unless asked for
    config = build_generation_config(
        params, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, suppress_tokens=suppressed_token_ids(tokenizer),
        num_return_sequences=num_generations, output_scores=return_logprobs,
    )
    out = _generate(model, inputs, config)
    prompt_len = inputs["input_ids"].shape[1]
    prompts = inputs["input_ids"].repeat_interleave(num_generations, dim=0)  # [N, Lp]
    mismatches = int((out.sequences[:, :prompt_len] != prompts).any(1).sum())
    ids = out.sequences[:, prompt_len:]  # [N, T]
    mask = completion_mask(ids, eos)  # [N, T]
    logprobs = None
    if return_logprobs:
        # after EOS the rows hold pad tokens the sampler never drew: zero them, as the mask does
        logprobs = _sampled_logprobs(out.scores, ids).masked_fill(mask == 0, 0.0)  # [N, T]
    ids = ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Completions(ids=ids, mask=mask, texts=texts, prompt_mismatches=mismatches, logprobs=logprobs)


@torch.no_grad()
def generate_from_inputs(
    model: Any,
    tokenizer: Any,
    inputs: Any,
    params: SamplingParams,
    *,
    num_return_sequences: int = 1,
    row_max_new_tokens: list[int] | None = None,
    stopping_criteria: Any = None,
) -> list[list[GeneratedText]]:
    """Completions for a batch of left-padded prompts: [P][num_return_sequences] GeneratedTexts.

    `stopping_criteria`: a transformers StoppingCriteriaList checked between tokens (the server's cancellation).
    """
    num_prompts = inputs["input_ids"].shape[0]
    limits = row_max_new_tokens or [params.max_new_tokens] * num_prompts
    if len(limits) != num_prompts:
        raise ValueError(f"{len(limits)} token limits for {num_prompts} prompts")
    # greedy decoding gives K identical completions: generate one and repeat it (HF refuses K > 1 when greedy)
    copies = num_return_sequences if params.greedy else 1
    num_return_sequences //= copies
    eos = eos_token_ids(model, tokenizer)
    config = build_generation_config(
        replace(params, max_new_tokens=max(limits)), eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
        suppress_tokens=suppressed_token_ids(tokenizer), num_return_sequences=num_return_sequences,
    )
    inputs = inputs.to(next(model.parameters()).device)
    out = _generate(model, inputs, config, stopping_criteria)
    prompt_tokens = inputs["attention_mask"].sum(1).tolist()  # [P]
    ids = out.sequences[:, inputs["input_ids"].shape[1] :]  # [P*K, T]
    results: list[list[GeneratedText]] = []
    for p in range(num_prompts):
        rows = ids[p * num_return_sequences : (p + 1) * num_return_sequences, : limits[p]]  # [K, T_p]
        mask = completion_mask(rows, eos)  # [K, T_p], through the first EOS
        stopped = torch.isin(rows, torch.tensor(eos, device=rows.device)).any(1)  # [K]
        texts = tokenizer.batch_decode(rows.masked_fill(mask == 0, tokenizer.pad_token_id), skip_special_tokens=True)
        results.append([
            GeneratedText(text, int(prompt_tokens[p]), int(count), "stop" if done else "length")
            for text, count, done in zip(texts, mask.sum(1).tolist(), stopped.tolist(), strict=True)
        ] * copies)
    return results
