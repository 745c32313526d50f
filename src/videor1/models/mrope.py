"""M-RoPE positions as the Qwen-VL models were released with, installed on each model instance.

The rule the Qwen2-VL and Qwen2.5-VL checkpoints were trained with (Qwen's reference fine-tuning code
`qwen-vl-finetune/qwenvl/data/rope2d.py`, the original transformers 4.x integration, vLLM):
- text tokens take consecutive positions on all three axes;
- a vision item starting at position s gives its token (t, h, w) of the merged grid the positions
  (s + τ(t), s + h, s + w), where τ(t) = t for images, Qwen2-VL videos and Qwen3-VL frames, and
  τ(t) = ⌊t · second_per_grid · tokens_per_second⌋ for Qwen2.5-VL videos, computed in float32 as torch does
  there (second_per_grid = temporal_patch_size / sampled fps, a float32 processor output);
- **the text after a vision item resumes at that item's largest position, over all three axes, plus one.**

transformers 5 (checked on 5.19 and 5.24) resumes at s + max(h, w) instead, ignoring the temporal extent: for a
video whose scaled time outgrows its spatial grid (32 frames of 448×252 at 2 fps: time reaches s + 30, the grid
s + 15), the question and every answer token then sit on positions the video's last frames also hold. That is
not what the released models saw, so videor1 numbers positions itself: `use_released_positions` replaces the
model instance's `get_rope_index`, which transformers' forward and `generate` both call, with
`ReleasedRopeIndex`. Qwen3-VL (timestamps written between frames, each frame its own item with t = 1) follows
the same rule, and transformers agrees with it there; it is installed for all three families so that no
installed transformers version decides the positions. `tests/test_mrope.py` pins the rule on values written
out by hand, and checks what the models' rotary embeddings actually receive in forward and in `generate`.

vLLM's own Qwen2/2.5-VL rule resumes at max + 1 too, but quantises the scaled time in float64 from the
float32 second_per_grid: for fractional seconds per grid (2/1.2 fps, say) it puts some temporal patches one
position lower than torch's float32 (3 · 1.6666666 · 2 = 9.9999998 → 9, where float32 rounds to 10).
`videor1.models.vllm_engine` therefore installs this same function there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from videor1.models.load import unwrap_peft

# model_type -> how its videos are numbered; other families keep their own transformers rule
_TIME_SCALED = ("qwen2_5_vl",)
_FRAME_ITEMS = ("qwen3_vl", "qwen3_vl_moe")
FAMILIES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", *_FRAME_ITEMS)

TEXT, IMAGE, VIDEO = 0, 1, 2  # mm_token_type_ids as the processors write them


@dataclass(frozen=True)
class RopeRule:
    """What differs between the families: the merge size, time scaling of videos, frames as separate items."""

    spatial_merge_size: int
    tokens_per_second: float | None
    """Qwen2.5-VL: temporal positions are ⌊t · second_per_grid · tokens_per_second⌋; None: they are t."""
    frame_items: bool = False
    """Qwen3-VL: every video frame is its own vision item (t = 1), with its timestamp as text before it."""


def rope_rule(config: Any) -> RopeRule | None:
    """The released rule for a Qwen2-VL / Qwen2.5-VL / Qwen3-VL config; None for any other family."""
    model_type = getattr(config, "model_type", "")
    if model_type not in FAMILIES:
        return None
    vision = config.vision_config
    tokens_per_second = float(vision.tokens_per_second) if model_type in _TIME_SCALED else None
    return RopeRule(int(vision.spatial_merge_size), tokens_per_second, frame_items=model_type in _FRAME_ITEMS)


def item_positions(start: int, grid_thw: torch.Tensor, rule: RopeRule, seconds_per_grid: torch.Tensor | None,
                   *, video: bool) -> torch.Tensor:
    """[3, t·h·w] positions of one vision item whose first token sits at `start` (grid before merging)."""
    t, h, w = (int(v) for v in grid_thw)
    h, w = h // rule.spatial_merge_size, w // rule.spatial_merge_size
    steps = torch.arange(t)
    if video and rule.tokens_per_second is not None:
        seconds = seconds_per_grid if seconds_per_grid is not None else torch.tensor(1.0)
        # float32 as in the released code: the scaled time is floored after float32 rounding
        steps = (steps * seconds.float() * rule.tokens_per_second).long()
    grid = torch.stack(torch.meshgrid(steps, torch.arange(h), torch.arange(w), indexing="ij"))  # [3, t, h, w]
    return grid.reshape(3, -1) + start  # [3, t*h*w]


def _runs(types: list[int]) -> list[tuple[int, int]]:
    """(token type, run length) for each maximal run of equal types."""
    runs: list[tuple[int, int]] = []
    for kind in types:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return runs


def row_positions(types: list[int], grids: dict[int, list[torch.Tensor]], seconds: list[torch.Tensor | None],
                  rule: RopeRule) -> torch.Tensor:
    """[3, L] positions of one unpadded row; `grids` and `seconds` are consumed item by item, in order."""
    parts: list[torch.Tensor] = []
    current = 0
    for kind, length in _runs(types):
        if kind == TEXT:
            parts.append(torch.arange(length).expand(3, -1) + current)
            current += length
            continue
        if not grids.get(kind):
            raise ValueError(f"a run of {length} {'image' if kind == IMAGE else 'video'} tokens has no grid left")
        grid = grids[kind].pop(0)
        per_item = seconds.pop(0) if kind == VIDEO and seconds else None
        positions = item_positions(current, grid, rule, per_item, video=kind == VIDEO)
        if positions.shape[1] != length:
            raise ValueError(f"a vision item of grid {tuple(int(v) for v in grid)} has {positions.shape[1]} "
                             f"positions but {length} placeholder tokens")
        parts.append(positions)
        current = int(positions.max()) + 1  # the released rule: resume after the item's largest position
    if not parts:
        return torch.zeros(3, 0, dtype=torch.long)
    return torch.cat(parts, dim=1)


def released_positions(
    token_types: torch.Tensor,
    rule: RopeRule,
    *,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions [3, B, L] (0 on padding) and deltas [B, 1] (largest position + 1 − row length).

    token_types [B, L]: 0 text, 1 image placeholder, 2 video placeholder; grids and seconds per item, in batch
    order. Qwen3-VL's video grids are split into one t = 1 item per frame, as its prompts interleave them.
    """
    videos = list(video_grid_thw) if video_grid_thw is not None else []
    if rule.frame_items:
        videos = [torch.tensor([1, int(g[1]), int(g[2])]) for g in videos for _ in range(int(g[0]))]
    grids = {IMAGE: list(image_grid_thw) if image_grid_thw is not None else [], VIDEO: videos}
    seconds: list[torch.Tensor | None] = list(second_per_grid_ts) if second_per_grid_ts is not None else []
    batch, length = token_types.shape
    positions = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    for b in range(batch):
        keep = attention_mask[b].bool().cpu() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        row = row_positions(token_types[b].cpu()[keep].tolist(), grids, seconds, rule)  # [3, L_b]
        positions[:, b, keep] = row
        deltas[b, 0] = (int(row.max()) + 1 if row.numel() else 0) - row.shape[1]
    return positions.to(token_types.device), deltas.to(token_types.device)


class ReleasedRopeIndex:
    """A drop-in `get_rope_index` for a model instance that numbers positions with the released rule."""

    def __init__(self, rule: RopeRule, image_token_id: int, video_token_id: int):
        self.rule = rule
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id

    def __call__(
        self,
        input_ids: torch.Tensor,
        mm_token_type_ids: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' signature (other keyword arguments, such as pixel values during `generate`, ignored)."""
        types = mm_token_type_ids
        if types is None:
            types = torch.zeros_like(input_ids, dtype=torch.int32)
            types[input_ids == self.image_token_id] = IMAGE
            types[input_ids == self.video_token_id] = VIDEO
        return released_positions(
            types, self.rule, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts, attention_mask=attention_mask,
        )


def use_released_positions(model: Any) -> bool:
    """Install the released M-RoPE rule on a Qwen-VL model instance (idempotent); False for other families.

    Raises when the family is one of ours but the installed transformers no longer numbers positions through
    `get_rope_index`: the rule could not be installed, and the model would silently use another one.
    """
    base = unwrap_peft(model)
    rule = rope_rule(base.config)
    if rule is None:
        return False
    inner = getattr(base, "model", None)
    if inner is None or not callable(getattr(type(inner), "get_rope_index", None)):
        raise RuntimeError(
            f"{type(base).__name__}: this transformers version has no get_rope_index on the inner model, so videor1 "
            "cannot give it the released M-RoPE rule; use the transformers version in constraints.txt"
        )
    if not isinstance(inner.__dict__.get("get_rope_index"), ReleasedRopeIndex):
        inner.get_rope_index = ReleasedRopeIndex(rule, base.config.image_token_id, base.config.video_token_id)
    return True
