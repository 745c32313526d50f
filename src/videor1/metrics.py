"""Per-step metrics, reduced across processes in one collective call.

Four kinds: `add` (a mean over items, e.g. rewards), `per_process` (a local total averaged over processes,
e.g. seconds spent generating), `total` (summed everywhere, e.g. skipped samples) and `maximum` (the largest
value anywhere, e.g. the log-prob gap between two engines). Every rank adds the
same keys in the same order (a key with nothing to report adds count 0), so the reduction is one tensor;
a mean whose total count is 0 (e.g. temporal/p in a step without video) is None, so every line has every key.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

Kind = Literal["mean", "per_process", "total", "maximum"]


class MetricBag:
    """Accumulates metrics for one step on one process."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, float] = {}
        self._kinds: dict[str, Kind] = {}

    def _accumulate(self, key: str, value: float, count: float, kind: Kind) -> None:
        self._kinds.setdefault(key, kind)
        if kind == "maximum":
            self._sums[key] = max(self._sums.get(key, float("-inf")), float(value))
            self._counts[key] = self._counts.get(key, 0.0) + float(count)
            return
        self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._counts[key] = count if kind != "mean" else self._counts.get(key, 0.0) + float(count)

    def add(self, key: str, value: float, count: float = 1.0) -> None:
        """Add `value`, a sum over `count` items, to `key`'s mean over items."""
        self._accumulate(key, value, count, "mean")

    def mean(self, key: str, values: torch.Tensor) -> None:
        """Add every element of a tensor (possibly empty) to `key`'s mean over items."""
        self.add(key, float(values.float().sum()), values.numel())

    def per_process(self, key: str, value: float) -> None:
        """Add to a per-process total that is averaged over processes (seconds, tokens per process)."""
        self._accumulate(key, value, 1.0, "per_process")

    def total(self, key: str, value: float) -> None:
        """Add to a total summed over processes (counts of skipped samples, mismatches)."""
        self._accumulate(key, value, 1.0, "total")

    def maximum(self, key: str, values: torch.Tensor) -> None:
        """The largest element of a tensor (possibly empty) joins `key`'s maximum over the step."""
        self._accumulate(key, float(values.max()) if values.numel() else float("-inf"), values.numel(), "maximum")

    def maxima(self) -> torch.Tensor:
        """This process's `maximum` values in key order, [1, M] float64 (what `reduce` gathers)."""
        values = [self._sums[k] for k in self._sums if self._kinds[k] == "maximum"]
        return torch.tensor([values], dtype=torch.float64)

    def local(self, key: str) -> float:
        """This process's running sum for a key (0 if never added)."""
        return self._sums.get(key, 0.0)

    def reduce(self, accelerator: Any | None = None) -> dict[str, float | None]:
        """The step's values over all processes."""
        keys = list(self._sums)
        pairs = torch.tensor([[self._sums[k], self._counts[k]] for k in keys], dtype=torch.float64)  # [K, 2]
        is_max = torch.tensor([self._kinds[k] == "maximum" for k in keys], dtype=torch.bool)  # [K]
        if accelerator is not None and accelerator.num_processes > 1:
            _check_same_keys(keys, accelerator)
            pairs = accelerator.reduce(pairs.to(accelerator.device), reduction="sum").cpu()
            if bool(is_max.any()):  # the summed maxima are meaningless: take the largest of any process instead
                every = accelerator.gather(self.maxima()[None].to(accelerator.device)).cpu()  # [W, 1, M]
                pairs[is_max, 0] = every.amax(dim=(0, 1))
        values: dict[str, float | None] = {}
        for key, (total, count) in zip(keys, pairs.tolist(), strict=True):
            if self._kinds[key] == "maximum":
                values[key] = total if count > 0 else None
            elif self._kinds[key] == "total":
                values[key] = total
            else:
                values[key] = total / count if count > 0 else None
        return values


def _check_same_keys(keys: list[str], accelerator: Any) -> None:
    """Raise when processes hold different metric keys: summing their rows would pair unrelated numbers."""
    import zlib

    fingerprint = [len(keys), zlib.crc32("\n".join(keys).encode())]
    every = accelerator.gather(torch.tensor([fingerprint], dtype=torch.float64, device=accelerator.device))  # [W, 2]
    if not bool((every == every[0]).all()):
        raise RuntimeError(f"metric keys differ between processes; process {accelerator.process_index} has {keys}")
