"""Where a model runs: the one device choice of `eval`, `infer`, `serve` and `annotate`."""

from __future__ import annotations

import torch


def pick_device(name: str | None) -> torch.device:
    """The named device; None or "auto" (serve's and annotate's default) picks the machine's accelerator, else cpu."""
    if name is not None and name != "auto":
        return torch.device(name)
    # not just CUDA: MPS, XPU and the other backends torch knows count as the accelerator too
    return torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
