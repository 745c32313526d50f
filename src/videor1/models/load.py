"""Load any Qwen-VL family model and its processor, from a local folder or a hub id, with the Auto classes.

The same code path serves `Qwen/Qwen2.5-VL-7B-Instruct` and a tiny folder written by `videor1 models tiny`:
no forked transformers, no per-family branches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(Exception):
    """A checkpoint that exists but cannot be read: a truncated or corrupt weights file."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map a config string (float32, bfloat16, float16, auto) to a torch dtype ("auto" passes through)."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_model_source(name_or_path: str | Path) -> None:
    """FileNotFoundError for a local-looking path that does not exist (hub ids like `Qwen/Qwen2.5-VL-7B` pass).

    transformers reads a missing folder as a hub id and answers "Repo id must be in the form …", which names
    the wrong problem.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"model {text!r} is a file; give the checkpoint folder")
        return
    # a hub id is `name` or `namespace/name`; anything else can only be a local path
    looks_local = text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1
    if looks_local:
        raise FileNotFoundError(f"model {text!r}: no such folder (and not a hub id like Qwen/Qwen2.5-VL-7B-Instruct)")


def load_processor(name_or_path: str | Path, **kwargs: Any) -> Any:
    """The model's processor (tokenizer, image and video processors, chat template)."""
    from transformers import AutoProcessor

    check_model_source(name_or_path)
    return AutoProcessor.from_pretrained(str(name_or_path), **kwargs)


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Any:
    """An image-text-to-text model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, ...) in eval mode on `device`.

    Qwen-VL models number their M-RoPE positions with the rule they were released with, whatever the installed
    transformers computes (`videor1.models.mrope`).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForImageTextToText

    from videor1.models.mrope import use_released_positions

    check_model_source(name_or_path)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype), **kwargs)
    except SafetensorError as exc:
        raise corrupt_weights_error(name_or_path, exc) from exc
    if device is not None:
        model = model.to(device)
    use_released_positions(model)
    return model.eval()


def corrupt_weights_error(name_or_path: str | Path, exc: Exception) -> CheckpointError:
    """The CheckpointError naming the bad `.safetensors` file of a local checkpoint (else the checkpoint).

    safetensors' own message ("Error while deserializing header: header too large") names no file, and a
    sharded checkpoint has several: each one's header is read again (cheap, no tensor data) to find it.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(str(name_or_path)).expanduser()
    for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as file_exc:
            return CheckpointError(f"{file}: truncated or corrupt safetensors file ({file_exc})")
    return CheckpointError(f"model {str(name_or_path)!r}: truncated or corrupt safetensors file ({exc})")


def load_model_and_processor(name_or_path: str | Path, **kwargs: Any) -> tuple[Any, Any]:
    """Both at once; keyword arguments go to `load_model`."""
    return load_model(name_or_path, **kwargs), load_processor(name_or_path)


def set_torch_threads(threads: int | None) -> None:
    """Apply a `torch_threads` / `--torch-threads` setting; None leaves torch's own choice."""
    if threads is not None:
        torch.set_num_threads(threads)


def unwrap_peft(model: Any) -> Any:
    """The transformers model inside a peft wrapper, or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def set_checkpointing(model: Any, enabled: bool) -> None:
    """Turn activation (gradient) checkpointing on or off under its transformers 5 name or the older one."""
    if enabled:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()


def disable_dropout(model: Any) -> int:
    """Set every dropout of a model to 0 (nn.Dropout, LoRA's included, and attention dropout); returns how many.

    RL needs it (as verl and OpenRLHF do it): with dropout on, the old and the updated log-probs of one batch
    come from different random sub-networks, so the first importance ratio is not 1 and the clip bites on noise.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0:
            module.p = 0.0
            changed += 1
        # transformers' attention modules pass `attention_dropout` to the attention kernel while training
        if isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout != 0:
            module.attention_dropout = 0.0
            changed += 1
    return changed


def vision_tower(model: Any) -> Any:
    """The vision encoder (with its merger) of a Qwen-VL model, through any peft wrapper."""
    return unwrap_peft(model).model.visual


def prepare_for_training(
    model: Any,
    *,
    freeze_vision: bool,
    gradient_checkpointing: bool,
    lora_r: int | None = None,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_targets: list[str] | None = None,
) -> Any:
    """Freeze the vision tower, add LoRA adapters to the language model only, enable gradient checkpointing."""
    if freeze_vision:
        vision_tower(model).requires_grad_(False)
    if gradient_checkpointing:
        # non-reentrant checkpointing works with frozen inputs (a frozen vision tower) and with LoRA
        set_checkpointing(model, True)
        model.config.use_cache = False
    if lora_r is not None:
        from peft import LoraConfig, get_peft_model

        names = "|".join(lora_targets or [])
        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            # the vision blocks reuse names like gate_proj/up_proj: restrict adapters to the language model
            target_modules=rf".*language_model.*\.({names})$",
        )
        model = get_peft_model(model, config)
        if gradient_checkpointing:
            model.enable_input_require_grads()
    return model
