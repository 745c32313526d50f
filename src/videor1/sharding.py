"""Sharded training with torch's FSDP2 (`fully_shard`): the model's parameters, gradients and optimizer state
split over the processes, the same on gloo (CPU) and NCCL (GPU).

`distributed.sharding: fsdp2` shards each decoder block of the language model as its own unit and the rest
(embeddings, the vision tower, the final norm, the head, and the recipe's wrapper module) as the root unit:
- Every process runs the same forwards and backwards in an update (one per micro-batch and iteration), so the
  all-gathers line up. The vision tower sits in the root unit, gathered once per forward, so a process with
  images and videos (two tower calls) and one with videos only (one call) still agree.
- Rollouts are the exception: processes stop decoding at different steps, sample different numbers of
  dynamic-sampling rounds and score shuffled groups only for their videos. `gathered` holds every unit's full
  weights for the whole rollout phase, so those forwards are local (no collective at all), and releases them
  before the update: one all-gather of the model per step, instead of one per decode step and block.
- accelerate does not wrap a sharded model (it would add DDP on the CPU): the recipe steps the optimizer and
  schedule itself, clips with `clip_grad_norm` (the norm is a DTensor), and checkpoints with torch's
  distributed checkpoint (`save_sharded` / `load_sharded`) besides the full weights `from_pretrained` loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videor1.config import DistributedConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The language model's decoder layers of a Qwen-VL model (through a peft wrapper)."""
    from videor1.models.load import unwrap_peft

    return list(unwrap_peft(model).model.language_model.layers)


def shard(root: nn.Module, model: nn.Module, settings: DistributedConfig, device: torch.device) -> None:
    """fully_shard each decoder block of `model`, then `root` (which contains `model`) over all processes."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    precision = MixedPrecisionPolicy(
        param_dtype=_DTYPES.get(settings.param_dtype or ""), reduce_dtype=_DTYPES.get(settings.reduce_dtype or "")
    )
    options = {
        "mesh": mesh, "reshard_after_forward": settings.reshard_after_forward, "mp_policy": precision,
        "offload_policy": CPUOffloadPolicy() if settings.cpu_offload else OffloadPolicy(),
    }
    # DDP starts every process from rank 0's weights; so does a sharded run (a LoRA adapter's random init differs
    # per process, seeded per rank): each process keeps its slice of rank 0's model
    with torch.no_grad():
        for tensor in [*root.parameters(), *root.buffers()]:
            dist.broadcast(tensor.data, src=0)
    for block in decoder_blocks(model):
        fully_shard(block, **options)
    fully_shard(root, **options)
    # FSDP2 sets up its root lazily, in the root's first forward; rollouts call the model inside `root` directly
    # (the sampler, the vision tower), which FSDP2 refuses before that first forward, so set it up now
    root._get_fsdp_state()._lazy_init()


def fsdp_units(*modules: nn.Module) -> list[Any]:
    """Every FSDP2 unit inside the modules (empty for modules that are not sharded)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for module in modules for m in module.modules() if isinstance(m, FSDPModule)]


def is_sharded(module: nn.Module) -> bool:
    """Whether FSDP2 shards this module."""
    return bool(fsdp_units(module))


@contextmanager
def gathered(*modules: nn.Module, reshard_after_forward: bool = True) -> Iterator[None]:
    """Every unit's full weights held for the block, so its forwards are local: any number, on any process."""
    units = fsdp_units(*modules)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(reshard_after_forward, recurse=False)


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> float:
    """Clip the gradients of (sharded) parameters to a total norm; returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
    full = getattr(norm, "full_tensor", None)  # a DTensor over sharded gradients: the norm of the whole model
    return float(full() if callable(full) else norm)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's full weights on the main process (CPU tensors), {} elsewhere; every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Each process's shards of the model and optimizer state, with torch's distributed checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(path))


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Restore `save_sharded`'s model and optimizer state into the sharded model (any process count)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
