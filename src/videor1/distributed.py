"""End of a multi-process run: every process waits for the others, then the process group is destroyed."""

from __future__ import annotations

from typing import Any


def shutdown(accelerator: Any) -> None:
    """Wait for every process, then destroy the process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        accelerator.wait_for_everyone()
        dist.destroy_process_group()
