"""Batched chat generation with HF `generate`: the engine behind `videor1 serve` and the local annotation teacher.

Prompts arrive as processor outputs (left-padded, media already decoded under the stage's budgets), so a
batch of requests is one `generate` call. Each prompt may carry its own token limit: the batch runs to the
largest and every row is cut at its own limit afterwards, which for autoregressive decoding gives the tokens
that row would have got alone. Temperature 0 means greedy decoding, as in the OpenAI API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from videor1.rl.rollout import completion_mask, eos_token_ids, generation_mode, suppressed_token_ids

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to decode: temperature 0 is greedy; otherwise nucleus sampling with `top_p`."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """True when decoding takes the most likely token (temperature 0)."""
        return self.temperature == 0

    @property
    def batch_key(self) -> tuple[float, ...]:
        """Requests with equal keys can share one `generate` call (token limits may differ)."""
        return (0.0,) if self.greedy else (self.temperature, self.top_p)


@dataclass(frozen=True)
class GeneratedText:
    """One completion and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    """Generated tokens up to and including the end-of-turn token, as the OpenAI API counts them."""
    finish_reason: FinishReason


def _decoding_kwargs(params: SamplingParams) -> dict[str, Any]:
    if params.greedy:
        return {"do_sample": False}
    # top_k 0 switches off the model's own top_k default (Qwen checkpoints ship top_k=1, which would make
    # "sampling" greedy); the OpenAI API has no top_k
    return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}


@torch.no_grad()
def generate_from_inputs(
    model: Any,
    tokenizer: Any,
    inputs: Any,
    params: SamplingParams,
    *,
    num_return_sequences: int = 1,
    row_max_new_tokens: list[int] | None = None,
) -> list[list[GeneratedText]]:
    """Completions for a batch of left-padded prompts: [P][num_return_sequences] GeneratedTexts."""
    num_prompts = inputs["input_ids"].shape[0]
    limits = row_max_new_tokens or [params.max_new_tokens] * num_prompts
    if len(limits) != num_prompts:
        raise ValueError(f"{len(limits)} token limits for {num_prompts} prompts")
    # greedy decoding gives K identical completions: generate one and repeat it (HF refuses K > 1 when greedy)
    copies = num_return_sequences if params.greedy else 1
    num_return_sequences //= copies
    eos = eos_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    with generation_mode(model):
        out = model.generate(
            **inputs,
            **_decoding_kwargs(params),
            max_new_tokens=max(limits),
            num_return_sequences=num_return_sequences,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            suppress_tokens=suppressed_token_ids(tokenizer),  # a completion must never emit vision placeholders
            use_cache=True,
        )  # [P*K, Lp + T]
    prompt_tokens = inputs["attention_mask"].sum(1).tolist()  # [P]
    ids = out[:, inputs["input_ids"].shape[1] :]  # [P*K, T]
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
