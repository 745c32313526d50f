"""Rollouts with HF `generate` and its KV cache.

G completions per prompt come from one `generate` call with `num_return_sequences=G`; completions stop at
EOS and everything after it is masked. Vision placeholder tokens are suppressed while sampling, so a
completion can never smuggle an `<|image_pad|>` that would desynchronise the vision features.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from videor1.models.load import set_checkpointing

VISION_TOKENS: tuple[str, ...] = (
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"
)


@dataclass
class Completions:
    """G completions for each of P prompts, in prompt-major order (N = P*G)."""

    ids: torch.Tensor  # [N, T] token ids, padded after EOS
    mask: torch.Tensor  # [N, T] 1 on completion tokens up to and including EOS
    texts: list[str]  # N decoded completions (special tokens dropped)
    prompt_mismatches: int  # sequences whose returned prefix differs from the prompt ids (should be 0)

    @property
    def lengths(self) -> torch.Tensor:
        """[N] completion lengths in tokens."""
        return self.mask.sum(1)


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
def generation_mode(model: Any):
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


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, torch.Tensor],
    *,
    num_generations: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int | None = None,
) -> Completions:
    """Sample `num_generations` completions per prompt; inputs are left-padded processor outputs."""
    eos = eos_token_ids(model, tokenizer)
    with generation_mode(model):
        out = model.generate(
            **inputs,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k if top_k is not None else 0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_generations,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            suppress_tokens=suppressed_token_ids(tokenizer),
            use_cache=True,
        )  # [N, Lp + T]
    prompt_len = inputs["input_ids"].shape[1]
    prompts = inputs["input_ids"].repeat_interleave(num_generations, dim=0)  # [N, Lp]
    mismatches = int((out[:, :prompt_len] != prompts).any(1).sum())
    ids = out[:, prompt_len:]  # [N, T]
    mask = completion_mask(ids, eos)  # [N, T]
    ids = ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Completions(ids=ids, mask=mask, texts=texts, prompt_mismatches=mismatches)
