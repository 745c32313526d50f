"""Per-token log-probabilities of completions under a Qwen-VL model, with the vision encoder run once per prompt.

The original Video-R1 repeated every prompt's pixels G times, so the vision encoder ran G times for the
policy and G times again for the reference. Here the vision tower encodes the P prompts' media once; the
per-item features are then repeated for the N = P*G sequences and handed to the model through
`mm_encoder_outputs` (transformers 5), which skips the encoder and keeps Qwen3-VL's deepstack features.
M-RoPE positions are computed by the model from the full sequence's ids and grids, exactly as during
generation, so the scored tokens see the positions they were sampled with.

Two ways to score (`algorithm.scoring`). `full` builds the N = P*G prompt+completion sequences, so every
prompt token goes through the language model G times; it is the reference. `shared_prefix` packs each prompt
once with its G completions after it (`videor1.rl.prefix_attention`) and numbers the completion tokens where
the full sequence would have them (`videor1.models.positions`): the same log-probs and gradients (tested to
fp32 rounding), with Lp + G*T tokens per group instead of G*(Lp + T).

Given top-k / top-p, a call also returns the log-probs under the truncated, renormalised distribution the
rollouts were drawn from (`Scores.sampled_logp`): what vLLM reports for its samples, so the trainer can tell
an engine mismatch from the truncation itself.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from videor1.models.head import DEFAULT_CHUNK_TOKENS, token_logprobs, truncated_logprobs  # noqa: F401 (re-exported)
from videor1.models.load import unwrap_peft
from videor1.models.mrope import use_released_positions
from videor1.models.positions import completion_positions, prompt_positions
from videor1.rl.prefix_attention import check_prefix_attention, layout_mask

Scoring = Literal["shared_prefix", "full"]

_REPEATED_KEYS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")


class Scores(NamedTuple):
    """What one scorer call returns."""

    logp: torch.Tensor
    """[N, T] log-probs under softmax(logits / temperature) without the suppressed tokens (the policy's)."""
    vision: dict[str, Any]
    """The per-prompt vision outputs used (for reuse)."""
    sampled_logp: torch.Tensor | None = None
    """[N, T] log-probs under the distribution sampled from: top-k / top-p applied and renormalised, 0 off the
    completion mask, no gradient; None when neither truncates (then it is `logp`)."""


def media_owners(input_ids: torch.Tensor, token_id: int) -> list[int]:
    """Indices of the prompts that hold a media item of this kind, in batch order."""
    return [i for i in range(input_ids.shape[0]) if bool((input_ids[i] == token_id).any())]


def encode_vision(model: Any, prompt: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Run the vision tower once over the prompts' images and videos; outputs hold per-item features."""
    base = unwrap_peft(model)
    outputs: dict[str, Any] = {}
    if prompt.get("pixel_values") is not None:
        outputs["image"] = base.get_image_features(prompt["pixel_values"], prompt["image_grid_thw"], return_dict=True)
    if prompt.get("pixel_values_videos") is not None:
        outputs["video"] = base.get_video_features(
            prompt["pixel_values_videos"], prompt["video_grid_thw"], return_dict=True
        )
    return outputs


def _pick(items: Any, order: list[int]) -> Any:
    return tuple(items[i] for i in order)


def repeat_vision(outputs: dict[str, Any], orders: dict[str, list[int]]) -> dict[str, Any]:
    """Per-sequence vision features: item `orders[kind][k]` becomes the k-th item of that kind."""
    repeated = {}
    for kind, out in outputs.items():
        fields = {"pooler_output": _pick(out.pooler_output, orders[kind])}
        if getattr(out, "deepstack_features", None) is not None:
            fields["deepstack_features"] = [_pick(layer, orders[kind]) for layer in out.deepstack_features]
        repeated[kind] = type(out)(**fields)
    return repeated


def detach_vision(outputs: dict[str, Any]) -> dict[str, Any]:
    """The same features cut from the graph, for a reference model that shares a frozen vision tower."""
    detached = {}
    for kind, out in outputs.items():
        fields = {"pooler_output": tuple(t.detach() for t in out.pooler_output)}
        if getattr(out, "deepstack_features", None) is not None:
            fields["deepstack_features"] = [tuple(t.detach() for t in layer) for layer in out.deepstack_features]
        detached[kind] = type(out)(**fields)
    return detached


def packed_inputs(
    model: Any, prompt: dict[str, torch.Tensor], completion_ids: torch.Tensor, groups: int
) -> dict[str, Any]:
    """Model inputs for rows [prompt p | its G completions], each completion a block of width T (shared prefix)."""
    num_prompts, prompt_len = prompt["input_ids"].shape
    width = completion_ids.shape[1]
    positions, next_position = prompt_positions(model, prompt)  # [3, P, Lp], [P]
    # logits at position i predict token i + 1; a block's first token is predicted by the prompt's last one
    predictors = torch.arange(groups * width, device=completion_ids.device) + prompt_len - 1
    predictors[::width] = prompt_len - 1
    return {
        "input_ids": torch.cat([prompt["input_ids"], completion_ids.reshape(num_prompts, groups * width)], 1),
        "attention_mask": layout_mask(prompt["attention_mask"], groups),
        "position_ids": torch.cat([positions, completion_positions(next_position, width).repeat(1, 1, groups)], 2),
        "logits_to_keep": predictors,
    }


def group_size(owners: list[int], num_prompts: int) -> int:
    """G when sequence n continues prompt n // G for every n (prompt-major, equal groups); else ValueError."""
    groups = len(owners) // max(num_prompts, 1)
    if owners != [p for p in range(num_prompts) for _ in range(groups)]:
        raise ValueError("shared-prefix scoring takes G completions per prompt, prompt-major; use scoring='full'")
    return groups


def sequence_inputs(
    prompt: dict[str, torch.Tensor], completion_ids: torch.Tensor, completion_mask: torch.Tensor, owners: list[int],
    *, image_token_id: int, video_token_id: int,
) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """Model inputs for prompt+completion sequences (sequence n continues prompt owners[n]) and media orders."""
    index = torch.tensor(owners, device=completion_ids.device)
    ids = torch.cat([prompt["input_ids"][index], completion_ids], dim=1)  # [N, Lp + T]
    mask = torch.cat([prompt["attention_mask"][index], completion_mask.to(prompt["attention_mask"].dtype)], dim=1)
    inputs: dict[str, torch.Tensor] = {"input_ids": ids, "attention_mask": mask}
    if "mm_token_type_ids" in prompt:
        zeros = torch.zeros_like(completion_ids, dtype=prompt["mm_token_type_ids"].dtype)
        inputs["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"][index], zeros], dim=1)
    orders: dict[str, list[int]] = {}
    for kind, token_id in (("image", image_token_id), ("video", video_token_id)):
        holders = media_owners(prompt["input_ids"], token_id)
        item_of = {p: k for k, p in enumerate(holders)}
        orders[kind] = [item_of[p] for p in owners if p in item_of]
    for key in _REPEATED_KEYS:
        if prompt.get(key) is not None:
            kind = "image" if key.startswith("image") else "video"
            inputs[key] = prompt[key][torch.tensor(orders[kind], dtype=torch.long, device=prompt[key].device)]
    return inputs, orders


class CompletionScorer(nn.Module):
    """Wraps a Qwen-VL model so one forward call (and one DDP/FSDP wrapper) yields completion log-probs.

    The log-probs are those of the distribution rollouts sample from: softmax(logits / temperature) over the
    vocabulary without the `suppressed` tokens (the vision placeholders, which generation never samples).
    `scoring` picks the shared-prefix path or the full-sequence reference (module docstring).
    """

    def __init__(
        self, model: nn.Module, suppressed: list[int] | None = None, *, scoring: Scoring = "full",
        chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS,
    ):  # fmt: skip
        super().__init__()
        if scoring not in ("shared_prefix", "full"):
            raise ValueError(f"unknown scoring {scoring!r}; expected shared_prefix or full")
        use_released_positions(model)  # the full path's forward numbers positions itself
        self.model = model
        self.suppressed = list(suppressed or [])
        self.scoring = scoring
        self.chunk_tokens = chunk_tokens  # None: the [N, T, V] logits at once (`videor1.models.head`)
        if scoring == "shared_prefix":
            check_prefix_attention(model)

    def forward(
        self,
        prompt: dict[str, torch.Tensor],
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        owners: list[int],
        *,
        temperature: float = 1.0,
        vision: dict[str, Any] | None = None,
        top_k: int | None = None,
        top_p: float = 1.0,
    ) -> Scores:
        """Log-probs [N, T] of completion tokens, the vision outputs used and, when top-k / top-p truncate, the
        log-probs under the truncated distribution that was sampled from (see `Scores`)."""
        if vision is None:
            vision = encode_vision(self.model, prompt)
        num_tokens = completion_ids.shape[1]
        # the language model's final hidden states, then lm_head a chunk at a time (`videor1.models.head`);
        # peft injects LoRA into these modules, so the inner model is the adapted one
        base = unwrap_peft(self.model)
        if self.scoring == "shared_prefix":
            inputs = packed_inputs(self.model, prompt, completion_ids, group_size(owners, len(prompt["input_ids"])))
            predictors = inputs.pop("logits_to_keep")  # [G*T]
            hidden = base.model(**inputs, mm_encoder_outputs=vision, use_cache=False).last_hidden_state
            hidden = hidden[:, predictors].reshape(len(owners), num_tokens, -1)  # [N, T, H]
        else:
            inputs, orders = sequence_inputs(
                prompt, completion_ids, completion_mask, owners,
                image_token_id=base.config.image_token_id, video_token_id=base.config.video_token_id,
            )
            out = base.model(**inputs, mm_encoder_outputs=repeat_vision(vision, orders), use_cache=False)
            # position i predicts token i + 1: positions -(T+1) .. -2 predict the T completion tokens
            hidden = out.last_hidden_state[:, -(num_tokens + 1) : -1]  # [N, T, H]
        scores = token_logprobs(
            hidden, base.lm_head, completion_ids, temperature=temperature, suppressed=self.suppressed, top_k=top_k,
            top_p=top_p, chunk_tokens=self.chunk_tokens,
        )
        sampled = scores.sampled
        if sampled is not None:
            sampled = sampled.masked_fill(completion_mask == 0, 0.0)  # padding may fall outside the nucleus
        return Scores(scores.logp, vision, sampled)  # [N, T]
