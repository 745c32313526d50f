"""M-RoPE positions of left-padded prompts, computed once, for the paths that lay tokens out themselves.

Shared-prefix scoring packs a prompt and its G completions into one row, and the lean sampler decodes from a
prompt cache expanded to G rows; neither sequence is one the model could number on its own. Both take the
prompt's positions from the model's `get_rope_index`, the released rule installed on the instance
(`videor1.models.mrope`), and number completion tokens as the text that follows: every completion token t
sits at `next_position + t` on all three axes, exactly where the model puts it in a full prompt+completion
sequence.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from videor1.models.load import unwrap_peft
from videor1.models.mrope import use_released_positions

_ROPE_INPUTS = ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")


def mm_token_types(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] token types as the processor writes them: 0 text, 1 image placeholder, 2 video placeholder."""
    config = unwrap_peft(model).config
    types = torch.zeros_like(input_ids, dtype=torch.int32)
    types[input_ids == config.image_token_id] = 1
    types[input_ids == config.video_token_id] = 2
    return types


def prompt_positions(model: Any, prompt: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE positions [3, B, Lp] of left-padded prompts (0 on padding) and each row's next position [B]."""
    use_released_positions(model)
    inner = unwrap_peft(model).model
    token_types = prompt.get("mm_token_type_ids")
    if token_types is None:
        token_types = mm_token_types(model, prompt["input_ids"])
    accepted = inspect.signature(inner.get_rope_index).parameters
    extra = {key: prompt[key] for key in _ROPE_INPUTS if key in accepted and prompt.get(key) is not None}
    positions, _ = inner.get_rope_index(prompt["input_ids"], token_types, **extra)  # [3, B, Lp]
    return positions, positions.amax(dim=(0, 2)) + 1  # [3, B, Lp], [B]


def completion_positions(next_position: torch.Tensor, length: int) -> torch.Tensor:
    """[3, B, length] positions of `length` completion tokens following prompts whose next position is given."""
    steps = torch.arange(length, device=next_position.device)
    return (next_position[:, None] + steps).unsqueeze(0).expand(3, -1, -1)  # [3, B, length]
