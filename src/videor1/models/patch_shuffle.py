"""T-GRPO's shuffle by temporal patch without a second processor call or vision-tower pass.

Qwen-VL's processor cuts a video into temporal patches of `temporal_patch_size` consecutive frames, each a
block of grid_h * grid_w rows of `pixel_values_videos` (blocks in time order), and the vision tower attends
within one temporal patch at a time (its attention is split per patch, its rotary positions run over height
and width only), so the features of a patch are a block of grid_h * grid_w / merge² rows that depend on that
patch's pixels alone. Shuffling whole patches (`algorithm.shuffle_mode: patch`) therefore permutes blocks: of
the processor's pixels (exactly: every frame is rescaled and normalised on its own) and of the tower's
features. The prompt text stays as it was, since `permute_video` keeps timestamps and metadata in place, so
the shuffled prompts' ids are the ordered prompts' ids. Shuffling single frames (`frame`, the original)
changes which frames share a patch: those prompts go through the processor and the tower again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

# one row per prompt token: taken for the shuffled prompts' rows
_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids")
# one row per video item: kept, as the patches' count and timing do not change
_PER_VIDEO = ("video_grid_thw", "second_per_grid_ts")


def patch_order(permutation: list[int], temporal_patch: int) -> list[int]:
    """The order of temporal patches that a frame permutation keeping every patch whole puts them in."""
    if len(permutation) % temporal_patch:
        raise ValueError(f"{len(permutation)} frames do not split into temporal patches of {temporal_patch}")
    order = []
    for start in range(0, len(permutation), temporal_patch):
        first = permutation[start]
        if first % temporal_patch or permutation[start:start + temporal_patch] != list(
            range(first, first + temporal_patch)
        ):
            raise ValueError(f"frame order {permutation} splits temporal patches of {temporal_patch} frames")
        order.append(first // temporal_patch)
    return order


def _blocks(rows: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Rows split into len(order) equal blocks, put in that order."""
    blocks = rows.view(len(order), rows.shape[0] // len(order), *rows.shape[1:])
    return blocks[torch.tensor(order, device=rows.device)].flatten(0, 1)


def _video_items(inputs: Mapping[str, Any], orders: list[list[int]]) -> list[tuple[int, int]]:
    """(first row, rows) of each video item's pixels; ValueError unless each item has one order of its patches."""
    grids = inputs.get("video_grid_thw")
    if grids is None or grids.shape[0] != len(orders):
        count = 0 if grids is None else grids.shape[0]
        raise ValueError(f"{len(orders)} patch orders for {count} videos")
    spans, start = [], 0
    for (t, h, w), order in zip(grids.tolist(), orders, strict=True):
        if sorted(order) != list(range(t)):
            raise ValueError(f"{order} is not an order of the {t} temporal patches of a video")
        spans.append((start, t * h * w))
        start += t * h * w
    return spans


def shuffled_inputs(inputs: Mapping[str, Any], rows: list[int], orders: list[list[int]]) -> dict[str, torch.Tensor]:
    """Processor outputs of prompts `rows` with video k's temporal patches in `orders[k]`, as the processor
    would give them for the permuted frames.

    `rows[k]` is the prompt that holds video item k (each of them holds that video and no image).
    """
    if len(rows) != len(orders):
        raise ValueError(f"{len(rows)} prompts for {len(orders)} patch orders")
    spans = _video_items(inputs, orders)
    index = torch.tensor(rows, dtype=torch.long, device=inputs["input_ids"].device)
    mask = inputs["attention_mask"][index]
    # the processor pads a batch to its own longest prompt: columns that are padding in every row go
    first = int((mask.sum(0) > 0).nonzero()[0]) if mask.any() else 0
    out = {key: inputs[key][index][:, first:] for key in _PER_TOKEN if inputs.get(key) is not None}
    out.update({key: inputs[key] for key in _PER_VIDEO if inputs.get(key) is not None})
    pixels = inputs["pixel_values_videos"]
    out["pixel_values_videos"] = torch.cat(
        [_blocks(pixels[start:start + size], order) for (start, size), order in zip(spans, orders, strict=True)]
    )
    return out


def shuffled_features(outputs: Mapping[str, Any], orders: list[list[int]]) -> dict[str, Any]:
    """The vision tower's video outputs (one item per video) with video k's patch features in `orders[k]`."""
    video = outputs["video"]
    if len(video.pooler_output) != len(orders):
        raise ValueError(f"{len(orders)} patch orders for {len(video.pooler_output)} videos")

    def permuted(items: Any) -> tuple[torch.Tensor, ...]:
        return tuple(_blocks(item, order) for item, order in zip(items, orders, strict=True))

    fields: dict[str, Any] = {"pooler_output": permuted(video.pooler_output)}
    if getattr(video, "deepstack_features", None) is not None:
        fields["deepstack_features"] = [permuted(layer) for layer in video.deepstack_features]
    return {"video": type(video)(**fields)}
