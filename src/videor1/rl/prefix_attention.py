"""Attention over a packed row [prompt | completion 1 | … | completion G] that shares the prompt among completions.

Shared-prefix scoring (`videor1.rl.logprobs`, `algorithm.scoring: shared_prefix`) feeds each prompt once with
its G completions laid after it, every completion in a block of the same width T. Here the prompt attends
causally to itself, and each completion block attends to the prompt's keys and causally to its own block,
never to another completion: the numbers are those of G separate prompt+completion sequences, while the
prompt's tokens go through every layer once instead of G times and no [L, L] mask over the packed row is
ever built (attention costs Lp² + G·T·(Lp + T) instead of G·(Lp + T)²).

How it reaches the model without copying its code: the layout travels as the attention mask, a boolean
[B, 1, G, Lp] tensor of valid (non-padding) prompt keys. transformers passes a 4-D mask through untouched to
the attention function registered under the model's `attn_implementation`; for SDPA and FlashAttention this
module registers, under the same names, a function that recognises the layout (its last dimension is the
prompt's, shorter than the keys, which no mask transformers builds can be) and hands every other call, from
any model, to the original function unchanged. Registering under the existing names, rather than switching a
model to a new one around each call, keeps the name-based checks in transformers true, and holds during
backward, when gradient checkpointing re-runs the layers outside any context a call could set up.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from videor1.models.load import unwrap_peft


def layout_mask(prompt_mask: torch.Tensor, groups: int) -> torch.Tensor:
    """The [B, 1, G, Lp] layout a packed batch is scored with, from the prompts' [B, Lp] attention mask."""
    return prompt_mask.bool()[:, None, None, :].expand(-1, 1, groups, -1)


def is_layout(mask: Any, key: torch.Tensor) -> bool:
    """True for a layout mask: boolean, 4-D, covering the prompt only (any model-built mask spans every key)."""
    return isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.ndim == 4 \
        and mask.shape[-1] < key.shape[-2]


def _blocks(states: torch.Tensor, prompt_len: int, groups: int) -> torch.Tensor:
    """[B, H, Lp + G·T, D] -> [B·G, H, Lp + T, D]: each completion block behind its own copy of the prompt."""
    batch, heads, _, dim = states.shape
    prefix = states[:, None, :, :prompt_len].expand(batch, groups, heads, prompt_len, dim)
    own = states[:, :, prompt_len:].unflatten(2, (groups, -1)).transpose(1, 2)  # [B, G, H, T, D]
    return torch.cat([prefix, own], dim=3).flatten(0, 1)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where attention is allowed, -inf elsewhere: SDPA converts a boolean mask to this on every call."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def layout_masks(layout: torch.Tensor, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive masks of the prompt [B, 1, Lp, Lp] and of the completion blocks [B·G, 1, T, Lp + T]."""
    batch, _, groups, prompt_len = layout.shape
    device = layout.device
    valid = layout[:, :, :1, :]  # [B, 1, 1, Lp]
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
    # a padding query attends to itself alone: a row with no key would give NaN, which masked keys still spread
    itself = torch.eye(prompt_len, dtype=torch.bool, device=device)
    own_causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    blocks = torch.cat([valid.expand(batch, 1, width, prompt_len), own_causal.expand(batch, 1, width, width)], -1)
    blocks = blocks[:, None].expand(batch, groups, 1, width, prompt_len + width).flatten(0, 1)
    return _additive((causal & valid) | itself, dtype), _additive(blocks, dtype)


class _LastMasks:
    """The masks of the layout seen last: every layer of a forward (and its recomputation) passes the same one."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.masks: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self, layout: torch.Tensor, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (layout, width, dtype)
        if self.key is None or self.key[0] is not layout or self.key[1:] != key[1:]:
            self.key, self.masks = key, layout_masks(layout, width, dtype)
        return self.masks  # type: ignore[return-value]


_LAST = _LastMasks()


def shared_prefix_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: torch.Tensor,
    *, dropout: float = 0.0, scaling: float | None = None,
) -> torch.Tensor:
    """Attention output [B, L, H, D] for q/k/v [B, H(kv), L, D] laid out as `layout` [B, 1, G, Lp] describes."""
    batch, heads, length, _ = query.shape
    groups, prompt_len = layout.shape[-2:]
    width = (length - prompt_len) // groups
    if prompt_len + groups * width != length:
        raise ValueError(f"{length} positions do not split into a prompt of {prompt_len} and {groups} equal blocks")
    prompt_mask, block_mask = _LAST.get(layout, width, query.dtype)
    gqa = key.shape[1] != heads  # grouped-query heads: SDPA repeats them without a copy
    prompt_out = F.scaled_dot_product_attention(
        query[:, :, :prompt_len], key[:, :, :prompt_len], value[:, :, :prompt_len],
        attn_mask=prompt_mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa,
    )  # [B, H, Lp, D]
    queries = query[:, :, prompt_len:].unflatten(2, (groups, width)).transpose(1, 2).flatten(0, 1)  # [B·G, H, T, D]
    block_out = F.scaled_dot_product_attention(
        queries, _blocks(key, prompt_len, groups), _blocks(value, prompt_len, groups),
        attn_mask=block_mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa,
    )  # [B·G, H, T, D]
    block_out = block_out.unflatten(0, (batch, groups)).transpose(1, 2).flatten(2, 3)  # [B, H, G·T, D]
    return torch.cat([prompt_out, block_out], dim=2).transpose(1, 2).contiguous()  # [B, L, H, D]


def _dispatching(original: Any) -> Any:
    """`original` (an attention function) extended with the shared-prefix layout."""

    def attention(
        module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        if is_layout(attention_mask, key):
            out = shared_prefix_attention(
                query, key, value, attention_mask, dropout=kwargs.get("dropout", 0.0), scaling=kwargs.get("scaling")
            )
            return out, None
        return original(module, query, key, value, attention_mask, **kwargs)

    # the markers of what it wraps (`videor1.models.shared_prompt` registers its own dispatch the same way),
    # so each module's check finds its own however many wrap the original and in whichever order
    attention.__dict__.update(getattr(original, "__dict__", {}))
    attention.shares_prefix = True  # type: ignore[attr-defined]
    return attention


SUPPORTED = ("sdpa", "flash_attention_2", "flash_attention_3")
for _name in SUPPORTED:
    _original = AttentionInterface._global_mapping.get(_name)
    if _original is not None and not getattr(_original, "shares_prefix", False):
        AttentionInterface.register(_name, _dispatching(_original))


def text_config(model: Any) -> Any:
    """The config the language model's attention layers read."""
    return unwrap_peft(model).config.get_text_config()


def check_prefix_attention(model: Any) -> None:
    """Refuse a model whose language layers run an attention implementation that cannot take layout masks."""
    current = text_config(model)._attn_implementation
    if current not in SUPPORTED:
        raise ValueError(
            f"algorithm.scoring=shared_prefix runs on {' or '.join(SUPPORTED)} attention, and this model uses "
            f"{current!r}; set model.attn_implementation=sdpa, or algorithm.scoring=full"
        )
