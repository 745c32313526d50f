"""Load any Qwen-VL family model and its processor, from a local folder or a hub id, with the Auto classes.

The same code path serves `Qwen/Qwen2.5-VL-7B-Instruct` and a tiny folder written by `videor1 models tiny`:
no forked transformers, no per-family branches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map a config string (float32, bfloat16, float16, auto) to a torch dtype ("auto" passes through)."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_processor(name_or_path: str | Path, **kwargs: Any) -> Any:
    """The model's processor (tokenizer, image and video processors, chat template)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(name_or_path), **kwargs)


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Any:
    """An image-text-to-text model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, ...) in eval mode on `device`."""
    from transformers import AutoModelForImageTextToText

    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype), **kwargs)
    if device is not None:
        model = model.to(device)
    return model.eval()


def load_model_and_processor(name_or_path: str | Path, **kwargs: Any) -> tuple[Any, Any]:
    """Both at once; keyword arguments go to `load_model`."""
    return load_model(name_or_path, **kwargs), load_processor(name_or_path)
