"""A LoRA model's weights as the merged model's, one tensor at a time, without a second copy of the model.

peft's own merge (`merge_adapter`, `merge_and_unload`) writes into the live weights or a deep copy of the whole
model, and needs every weight whole on this process. Checkpoints and vLLM pushes only need the merged weights
streamed out: W + scale · B·A per adapted layer, computed from the stored tensors as each one's turn comes
(`whole` gathers a sharded one), so a sharded LoRA policy merges exactly as an unsharded one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

BASE_LAYER = ".base_layer."


@dataclass(frozen=True)
class Adapted:
    """One adapted linear layer: its active adapter's name and scale."""

    adapter: str
    scale: float


def adapted_layers(base: torch.nn.Module) -> dict[str, Adapted]:
    """{module name in `base`'s state-dict names: its adapter} for each LoRA layer of a peft model's base model."""
    from peft.tuners.lora import LoraLayer

    layers = {}
    for name, module in base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        adapters = list(module.active_adapters)
        if len(adapters) != 1 or module.use_dora.get(adapters[0]) or getattr(module, "fan_in_fan_out", False):
            raise ValueError(f"{name}: only one plain LoRA adapter per layer can be merged here ({adapters})")
        layers[name] = Adapted(adapters[0], float(module.scaling[adapters[0]]))
    return layers


def lora_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """scale · B·A in the adapter's dtype; half-precision factors on the CPU multiply in float32 (peft's
    `get_delta_weight` rule, so a merge here equals peft's bit for bit)."""
    dtype = b.dtype
    if a.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return ((b @ a) * scale).to(dtype)


def merge_delta(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W + delta in the wider of their dtypes, stored in W's (peft's in-place `weight += delta`; peft keeps a bf16
    model's adapters in float32)."""
    return (weight + delta).to(weight.dtype)


def merged_weights(state: Mapping[str, torch.Tensor], layers: Mapping[str, Adapted],
                   whole: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> Iterator[tuple[str, torch.Tensor]]:
    """The merged model's (name, weight) in `state`'s order, under the model's own names (no `base_layer`, no
    adapters): W + scale · B·A for adapted weights, the rest as stored. `whole(t)` is applied to each tensor used,
    in the same order on every call, so it may be a collective (a shard's `full_tensor`)."""
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        prefix, found, leaf = name.partition(BASE_LAYER)
        if not found:
            yield name, whole(tensor)
            continue
        weight = whole(tensor)
        layer = layers.get(prefix)
        if leaf == "weight" and layer is not None:
            a = whole(state[f"{prefix}.lora_A.{layer.adapter}.weight"])
            b = whole(state[f"{prefix}.lora_B.{layer.adapter}.weight"])
            weight = merge_delta(weight, lora_delta(a, b, layer.scale))
        yield f"{prefix}.{leaf}", weight


def adapter_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The adapter's own tensors of a peft base model's state dict (its `lora_` entries)."""
    return {name: tensor for name, tensor in state.items() if ".lora_" in name}
