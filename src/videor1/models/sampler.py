"""A lean sampler for RL rollouts: each prompt prefilled once, every completion decoded in one loop.

HF `generate` repeats each prompt G times *before* the prefill, so a video prompt's frames go through the
vision tower and the prompt through every layer G times; T-GRPO then calls it a second time for the
shuffled-frame prompts, and every token passes through a list of Python logits processors. Here the U
unique prompts are prefilled once (vision included, or given as features), and all N rows, ordered and
shuffled alike (`concat_inputs`, `split_completions`), are decoded in one loop that samples with a few tensor
ops. On SDPA each prompt's KV cache stays once and every one of its `copies[u]` rows attends to it
(`videor1.models.shared_prompt`); otherwise the cache is copied to the rows. Either way the cache gets room for
the whole rollout up front, since HF's `DynamicLayer` concatenates (copying every cached token, in every layer,
at every step), and rows that have finished leave the batch once they are a quarter of it.

The distribution is HF `generate`'s with our `SamplingParams` (`videor1.models.generation`): vision
placeholders suppressed, logits divided by the temperature, then top-k, then top-p with `TopPLogitsWarper`'s
rule (a token is kept iff the mass of the tokens with greater logits is below top_p; the most likely token
always is), decided and drawn without sorting the vocabulary (`videor1.models.nucleus`), with one uniform per
row first. Greedy decoding (temperature 0) gives `generate`'s tokens. The log-probs returned are those
`CompletionScorer` computes, softmax(logits / temperature) without the suppressed tokens and before
truncation, so the trainer can compare the two.

Positions never come from the model's stateful `rope_deltas`, which hold one value per prefilled prompt and
which the model would spread over the N rows as if every prompt had the same number of copies: the prompts'
M-RoPE positions are computed once by `prompt_positions`, and every completion token sits at
`next_position + t` on all three axes, where the model itself puts it in a full prompt+completion sequence
(and where the scorer scores it).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from videor1.models.generation import (
    Completions,
    SamplingParams,
    completion_mask,
    eos_token_ids,
    generation_mode,
    suppressed_token_ids,
)
from videor1.models.load import unwrap_peft
from videor1.models.nucleus import draw
from videor1.models.positions import prompt_positions
from videor1.models.shared_prompt import RowMap, decoding_from

# Finished rows leave the decode batch once they are a quarter of it: each drop copies the cache, so waiting
# for a share bounds the copies (to a few dozen for any batch), while long tails stop paying for done rows.
_DROP_FRACTION = 4

# Left-padded per prompt token; the value says what padding holds.
_PADDED = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0}
# One row (or one value) per media item; items follow prompt order, so concatenation keeps them aligned.
_MEDIA = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
_PIXELS = ("pixel_values", "pixel_values_videos")


def scale_logits(logits: torch.Tensor, temperature: float, suppressed: torch.Tensor | None) -> torch.Tensor:
    """[N, V] float32 logits / temperature with the suppressed ids at -inf: the scorer's distribution."""
    scaled = logits.float()
    if suppressed is not None and suppressed.numel():
        # out of place: for float32 logits .float() returns the model's own tensor
        scaled = scaled.index_fill(-1, suppressed, float("-inf"))
    return scaled / temperature if temperature != 1.0 else scaled


def _refuse_repetition_penalty(params: SamplingParams) -> None:
    if params.repetition_penalty != 1.0:
        raise ValueError(
            f"the lean sampler has no repetition penalty (got {params.repetition_penalty}); RL rollouts use 1.0"
        )


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    suppressed: list[int] | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of [N, V] logits, and its log-prob under the scorer's (untruncated) distribution."""
    _refuse_repetition_penalty(params)
    if suppressed is not None and not isinstance(suppressed, torch.Tensor):
        suppressed = torch.tensor(suppressed, dtype=torch.long, device=logits.device)
    scaled = scale_logits(logits, 1.0 if params.greedy else params.temperature, suppressed)
    log_total = scaled.logsumexp(-1, keepdim=True)  # [N, 1], the scorer's normaliser
    if params.greedy:
        tokens = scaled.argmax(-1)  # [N]
        return tokens, scaled.gather(1, tokens[:, None]).squeeze(1) - log_total.squeeze(1)
    # one uniform per row first, whichever route decides it: the draw depends on the generator alone
    uniform = torch.rand(scaled.shape[0], generator=generator, dtype=torch.float64, device=scaled.device)
    tokens = draw(scaled, log_total, params.top_k, params.top_p, uniform, generator)
    logprobs = scaled.gather(1, tokens[:, None]).squeeze(1) - log_total.squeeze(1)  # [N]
    return tokens, logprobs


class _ReservedLayer(DynamicLayer):
    """A `DynamicLayer` whose states sit in a buffer with room for every token of the rollout.

    `DynamicLayer.update` concatenates, copying the whole cache once per layer per token; here a token is written
    in place and the states are views of the buffer, so a step costs what its attention reads.
    """

    def __init__(self, layer: DynamicLayer, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.device, self.is_initialized = layer.device, True
        self._allocate(*self._first_states(layer))

    def _first_states(self, layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """The states the buffer starts with: the layer's own."""
        return layer.keys, layer.values

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        length = keys.shape[-2]
        self._keys = keys.new_empty((*keys.shape[:2], max(self.capacity, length), keys.shape[-1]))
        self._values = values.new_empty((*values.shape[:2], max(self.capacity, length), values.shape[-1]))
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new states after the cached ones and return all of them (views of the buffer)."""
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if self.keys._base is not self._keys or end > self._keys.shape[-2]:
            # the states were replaced by a method we do not override (reorder_cache...) or outgrew the buffer
            self.capacity = max(self.capacity, end)
            self._allocate(self.keys, self.values)
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the `indices` rows, room included."""
        length = self.keys.shape[-2]
        self._keys, self._values = self._keys[indices], self._values[indices]
        self.keys, self.values = self._keys[:, :, :length], self._values[:, :, :length]


class _SharedPromptLayer(_ReservedLayer):
    """A layer's cache with the prompts' states once [U, KV, Lp, D] (`prompt_keys`, `prompt_values`, read by
    `videor1.models.shared_prompt`'s attention) and each row's own tokens in the reserved buffer."""

    def __init__(self, layer: DynamicLayer, rows: int, capacity: int):
        self.prompt_keys, self.prompt_values, self.rows = layer.keys, layer.values, rows
        super().__init__(layer, capacity)

    def _first_states(self, layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
        """No token of a row's own yet: `rows` empty rows."""
        keys, values = layer.keys, layer.values
        return (keys.new_empty((self.rows, keys.shape[1], 0, keys.shape[3])),
                values.new_empty((self.rows, values.shape[1], 0, values.shape[3])))

    def get_seq_length(self) -> int:
        """Tokens a row has seen: its prompt's (padding included) and its own."""
        return self.prompt_keys.shape[-2] + self.keys.shape[-2]


def _is_plain(cache: Any) -> bool:
    """A plain `DynamicCache` of full-attention layers: the only cache whose layers are replaced here."""
    return type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)


def _reserve_room(cache: Any, capacity: int) -> None:
    """Give a plain `DynamicCache`'s layers room for `capacity` tokens; any other cache is left as it is."""
    if _is_plain(cache):
        cache.layers = [_ReservedLayer(layer, capacity) for layer in cache.layers]


def _share_prompts(cache: DynamicCache, owners: torch.Tensor, capacity: int) -> RowMap:
    """Turn a plain prefill cache of U prompts into one for rows `owners` [N] with room for `capacity` own tokens."""
    num_prompts = cache.layers[0].keys.shape[0]
    cache.layers = [_SharedPromptLayer(layer, owners.numel(), capacity) for layer in cache.layers]
    return RowMap(owners, num_prompts)


def _cache_name(model: Any) -> str:
    """The KV cache's argument and output name: `cache` from transformers 5.24, `past_key_values` before."""
    parameters = inspect.signature(unwrap_peft(model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    inputs: Mapping[str, Any],
    params: SamplingParams,
    copies: list[int],
    *,
    generator: torch.Generator | None = None,
    vision: Mapping[str, Any] | None = None,
    share_prompts: bool = True,
) -> Completions:
    """`copies[u]` completions of each left-padded prompt u, prompt-major, with the scorer's log-probs.

    `generator` (on the model's device) makes the draws reproducible; without it they use torch's global one.
    `vision`: the prompts' media already through the vision tower (`mm_encoder_outputs`, items in prompt
    order), which the prefill then takes instead of the pixels. `share_prompts`: on SDPA, decode every row from
    its prompt's one cached copy (`videor1.models.shared_prompt`); False copies the prompt to each row.
    """
    _refuse_repetition_penalty(params)
    device = _model_device(model)
    prompt = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}
    encoded = {}
    if vision is not None:  # the model refuses pixels beside their features
        prompt = {key: value for key, value in prompt.items() if key not in _PIXELS}
        encoded = {"mm_encoder_outputs": dict(vision)}
    num_prompts, prompt_len = prompt["input_ids"].shape
    if len(copies) != num_prompts or min(copies, default=0) < 0 or sum(copies) == 0:
        raise ValueError(f"copies must give a count >= 0 for each of the {num_prompts} prompts, got {copies}")
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id
    suppressed = torch.tensor(suppressed_token_ids(tokenizer), dtype=torch.long, device=device)
    eos_ids = torch.tensor(eos, device=device)
    index = torch.repeat_interleave(torch.arange(num_prompts, device=device), torch.tensor(copies, device=device))
    rows = index.numel()
    steps = params.max_new_tokens

    with generation_mode(model):
        positions, next_position = prompt_positions(model, prompt)  # [3, U, Lp], [U]
        # explicit positions: the model's rope_deltas (set by whatever ran before) are never read
        out = model(**prompt, **encoded, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache_name = _cache_name(model)
        cache = out[cache_name]
        sdpa = unwrap_peft(model).config.get_text_config()._attn_implementation == "sdpa"
        shared = share_prompts and sdpa and _is_plain(cache)
        if shared:  # each prompt's cache stays once; rows cache their own tokens (prompt u's rows consecutive)
            row_map = _share_prompts(cache, index, steps)
        else:  # U prompt caches -> N rows, prompt u's copies consecutive
            cache.batch_select_indices(index)
            _reserve_room(cache, prompt_len + steps)
        logits = out.logits[:, -1][index]  # [N, V]
        del out

        # every decode step's inputs are slices of these: no tensor is built per token but the token itself
        mask = torch.cat([prompt["attention_mask"][index], prompt["attention_mask"].new_ones(rows, steps)], 1)
        if sdpa:
            # as the 4-D [N, 1, 1, keys] mask SDPA takes for one query: transformers uses it as given instead of
            # rebuilding it from the 2-D one at every step (eager and FlashAttention want their own formats)
            mask = mask.bool()[:, None, None, :]
        position = next_position[index].view(1, rows, 1).expand(3, rows, 1)  # [3, N, 1]
        ids = torch.full((rows, steps), pad, dtype=torch.long, device=device)
        logprobs = torch.zeros(rows, steps, device=device)
        live = torch.arange(rows, device=device)  # the rows still in the batch, as indices of the N
        finished = torch.zeros(rows, dtype=torch.bool, device=device)  # [A] live rows past their EOS
        done = 0
        with decoding_from(cache, row_map) if shared else nullcontext():
            for t in range(steps):
                tokens, logp = sample_next(logits, params, suppressed, generator)  # [A]
                # rows past their EOS emit pad, as generate does; their log-probs are 0, as the mask says
                tokens, logp = tokens.masked_fill(finished, pad), logp.masked_fill(finished, 0.0)
                ids[live, t], logprobs[live, t] = tokens, logp
                finished |= torch.isin(tokens, eos_ids)
                done = t + 1
                stopped = int(finished.sum())  # a host sync, as is top-p's choice between candidates and a full sort
                if done == steps or stopped == live.numel():
                    break
                if stopped * _DROP_FRACTION >= live.numel():
                    keep = (~finished).nonzero().squeeze(1)
                    cache.batch_select_indices(keep)
                    if shared:
                        row_map.select(keep)
                    live, tokens, finished = live[keep], tokens[keep], finished[keep]
                    mask, position = mask[keep], position[:, keep]
                out = model(
                    input_ids=tokens[:, None],
                    attention_mask=mask[..., : prompt_len + t + 1],
                    position_ids=position + t,
                    **{cache_name: cache},
                    use_cache=True,
                    logits_to_keep=1,
                )
                cache, logits = out[cache_name], out.logits[:, -1]
                del out
    del cache

    ids = ids[:, :done]  # pad after each row's EOS already: rows emit pad once finished
    keep = completion_mask(ids, eos)  # [N, T]
    return Completions(
        ids=ids,
        mask=keep,
        texts=tokenizer.batch_decode(ids, skip_special_tokens=True),
        prompt_mismatches=0,  # the prompts are never re-emitted, so they cannot differ
        logprobs=logprobs[:, :done].masked_fill(keep == 0, 0.0),
    )


def split_completions(completions: Completions, sizes: list[int]) -> list[Completions]:
    """Consecutive chunks of `sizes` rows, each cut to its longest completion (as if sampled alone)."""
    if sum(sizes) != completions.ids.shape[0]:
        raise ValueError(f"sizes {sizes} do not add up to {completions.ids.shape[0]} rows")
    parts = []
    start = 0
    for size in sizes:
        rows = slice(start, start + size)
        # a chunk whose rows all stopped early would otherwise carry the other chunk's pad columns
        width = int(completions.mask[rows].sum(1).max()) if size else 0
        logprobs = completions.logprobs
        parts.append(replace(
            completions,
            ids=completions.ids[rows, :width],
            mask=completions.mask[rows, :width],
            texts=completions.texts[rows],
            prompt_mismatches=0,
            logprobs=None if logprobs is None else logprobs[rows, :width],
        ))
        start += size
    return parts


def _left_pad(tensor: torch.Tensor, length: int, value: int) -> torch.Tensor:
    return F.pad(tensor, (length - tensor.shape[1], 0), value=value)


def concat_inputs(parts: list[Mapping[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Processor outputs of several left-padded batches as one: prompts re-padded, media items concatenated."""
    keys = {key for part in parts for key, value in part.items() if value is not None}
    unknown = keys - set(_PADDED) - set(_MEDIA)
    if unknown:
        raise ValueError(f"cannot concatenate processor outputs with {', '.join(sorted(unknown))}")
    length = max(part["input_ids"].shape[1] for part in parts)
    merged: dict[str, torch.Tensor] = {}
    for key, value in _PADDED.items():
        if key in keys:
            fill = pad_token_id if value is None else value
            merged[key] = torch.cat([_left_pad(part[key], length, fill) for part in parts], 0)
    for key in _MEDIA:
        present = [part[key] for part in parts if part.get(key) is not None]
        if present:
            merged[key] = torch.cat(present, 0)
    return merged


def concat_vision(parts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Vision-tower outputs of several batches as one, items in the order `concat_inputs` puts the media in."""
    merged = {}
    for kind in ("image", "video"):
        present = [part[kind] for part in parts if part.get(kind) is not None]
        if not present:
            continue
        fields: dict[str, Any] = {"pooler_output": tuple(item for out in present for item in out.pooler_output)}
        if getattr(present[0], "deepstack_features", None) is not None:
            layers = zip(*(out.deepstack_features for out in present), strict=True)
            fields["deepstack_features"] = [tuple(item for layer in per_part for item in layer) for per_part in layers]
        merged[kind] = type(present[0])(**fields)
    return merged
