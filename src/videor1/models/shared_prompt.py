"""Decoding a prompt's completions from one copy of its KV cache (the lean sampler's path on SDPA).

A prefilled prompt used to be copied to each of its G (or G~) rows before decoding: at Qwen2.5-VL-7B's 57 KB
of keys and values per token, a 1,100-token video prompt copied to 12 rows is 0.75 GB, and every decode step
reads every copy. Here each prompt's keys and values stay once, and each row caches only its own completion.
A row's new token scores its prompt's keys (one matmul per prompt, with all of that prompt's rows as queries)
and its own keys, takes one softmax over both, and sums the two weighted values: attention over the row's
[prompt | completion] keys, to rounding.

It reaches the model the way shared-prefix scoring does (`videor1.rl.prefix_attention`): the sampler passes
each row's whole [N, 1, 1, Lp + t] boolean mask, longer than the t keys the cache hands the attention (the
row's own), a shape no mask a model builds has; a function registered under `sdpa` recognises it while the
sampler has made its cache current (`decoding_from`), reads the prompt's keys from the cache's layer (its
`prompt_keys` and `prompt_values`, kept by `videor1.models.sampler`), and hands every other call to the function
it wraps unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache


class RowMap:
    """Which prompt each decoded row continues (prompt-major, a prompt's rows consecutive), as grid slots."""

    def __init__(self, owners: torch.Tensor, num_prompts: int):
        self.num_prompts = num_prompts
        self._set(owners)

    def _set(self, owners: torch.Tensor) -> None:
        self.owners = owners  # [N]
        counts = torch.bincount(owners, minlength=self.num_prompts)  # [U]
        self.width = max(int(counts.max()), 1)  # C: slots per prompt
        first = torch.cumsum(counts, 0) - counts  # [U] each prompt's first row
        slot = torch.arange(owners.numel(), device=owners.device) - first[owners]
        self.grid = owners * self.width + slot  # [N] row n's place in the [U * C] grid
        # every prompt has C rows: the grid is the rows themselves, no scatter or gather needed
        self.full = owners.numel() == self.num_prompts * self.width

    def select(self, keep: torch.Tensor) -> None:
        """Keep rows `keep` (in order), as the cache's `batch_select_indices` does."""
        self._set(self.owners[keep])


_CURRENT: ContextVar[tuple[DynamicCache, RowMap] | None] = ContextVar("videor1_shared_prompt", default=None)


@contextmanager
def decoding_from(cache: DynamicCache, rows: RowMap) -> Iterator[None]:
    """Within: attention calls with a row mask longer than their keys read the prompts from `cache`."""
    token = _CURRENT.set((cache, rows))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _to_grid(rows: RowMap, states: torch.Tensor) -> torch.Tensor:
    """[N, ...] per row -> [U, C, ...] per prompt slot (zeros in empty slots)."""
    if rows.full:
        return states.view(rows.num_prompts, rows.width, *states.shape[1:])
    grid = states.new_zeros((rows.num_prompts * rows.width, *states.shape[1:]))
    grid[rows.grid] = states
    return grid.view(rows.num_prompts, rows.width, *states.shape[1:])


def _from_grid(rows: RowMap, grid: torch.Tensor) -> torch.Tensor:
    """[U, C, ...] per prompt slot -> [N, ...] per row."""
    flat = grid.flatten(0, 1)
    return flat if rows.full else flat[rows.grid]


def shared_prompt_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, prompt_keys: torch.Tensor,
    prompt_values: torch.Tensor, mask: torch.Tensor, rows: RowMap, *, scaling: float | None = None,
) -> torch.Tensor:
    """Attention output [N, 1, H, D] of one new token per row over its prompt's keys and its own.

    query [N, H, 1, D]; keys/values [N, KV, t, D] the rows' own; prompt_keys/values [U, KV, Lp, D];
    mask [N, 1, 1, Lp + t] boolean, True where a row may attend.
    """
    rows_n, heads, _, dim = query.shape
    num_prompts, kv_heads, prompt_len, _ = prompt_keys.shape
    rep, width = heads // kv_heads, rows.width
    scale = dim ** -0.5 if scaling is None else scaling
    # scores in float32 whatever the model's dtype, as SDPA's kernels keep them; the weights meet the values
    # in the values' dtype, as theirs do
    q = query.view(rows_n, kv_heads, rep, dim).float() * scale  # grouped-query heads: head h reads kv head h // rep

    # the prompt's part: all C slots of a prompt query its keys in one matmul, [U, KV, C*rep, Lp]
    q_grid = _to_grid(rows, q).transpose(1, 2).reshape(num_prompts, kv_heads, width * rep, dim)
    prompt_scores = torch.matmul(q_grid, prompt_keys.float().transpose(-1, -2))
    prompt_scores = _from_grid(rows, prompt_scores.view(num_prompts, kv_heads, width, rep, prompt_len).transpose(1, 2))
    own_scores = torch.matmul(q, keys.float().transpose(-1, -2))  # [N, KV, rep, t]
    scores = torch.cat([prompt_scores, own_scores], -1).masked_fill(~mask.view(rows_n, 1, 1, -1), float("-inf"))
    weights = scores.softmax(-1).to(values.dtype)  # [N, KV, rep, Lp + t]

    own = torch.matmul(weights[..., prompt_len:], values)  # [N, KV, rep, D]
    w_grid = _to_grid(rows, weights[..., :prompt_len]).transpose(1, 2).reshape(
        num_prompts, kv_heads, width * rep, prompt_len)
    from_prompt = torch.matmul(w_grid, prompt_values)  # [U, KV, C*rep, D]
    from_prompt = _from_grid(rows, from_prompt.view(num_prompts, kv_heads, width, rep, -1).transpose(1, 2))
    return (from_prompt + own).reshape(rows_n, 1, heads, -1).to(query.dtype)


def _is_row_mask(mask: Any, key: torch.Tensor) -> bool:
    return isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.ndim == 4 \
        and mask.shape[-1] > key.shape[-2]


def _dispatching(original: Any) -> Any:
    """`original` (an attention function) extended with decoding from shared prompts."""

    def attention(
        module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        current = _CURRENT.get()
        if current is not None and _is_row_mask(attention_mask, key):
            cache, rows = current
            layer = cache.layers[module.layer_idx]
            out = shared_prompt_attention(query, key, value, layer.prompt_keys, layer.prompt_values, attention_mask,
                                          rows, scaling=kwargs.get("scaling"))
            return out, None
        return original(module, query, key, value, attention_mask, **kwargs)

    attention.__dict__.update(getattr(original, "__dict__", {}))  # the markers of what it wraps (prefix_attention's)
    attention.shares_prompt = True  # type: ignore[attr-defined]
    return attention


_original = AttentionInterface._global_mapping.get("sdpa")
if _original is not None and not getattr(_original, "shares_prompt", False):
    AttentionInterface.register("sdpa", _dispatching(_original))
