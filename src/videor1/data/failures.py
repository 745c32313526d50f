"""The failure budget of a training run: how many samples may fail to load before the run stops.

Shared by RL's prompt stream and SFT's batches, so both judge the same way: a sample that fails is skipped,
counted and reported (never replaced by another file), and the run stops with `TooManyFailures` once the
failed fraction passes the limit. The fraction is judged only after 1/limit attempts, so one early failure
cannot end a run; the counters are part of every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class TooManyFailures(RuntimeError):
    """More media failed to load than `data.max_failure_fraction` allows."""


@dataclass
class FailureBudget:
    """Attempted and failed sample counts against `data.max_failure_fraction`."""

    limit: float
    attempted: int = 0
    failed: int = 0

    def record(self, attempted: int, failed: int) -> None:
        """Count `attempted` samples of which `failed` failed; raise TooManyFailures past the limit."""
        self.attempted += attempted
        self.failed += failed
        judged = self.attempted >= (math.ceil(1 / self.limit) if self.limit > 0 else 1)
        if judged and self.failed / self.attempted > self.limit:
            raise TooManyFailures(
                f"{self.failed} of {self.attempted} samples failed to load ({self.failed / self.attempted:.1%}), "
                f"above data.max_failure_fraction={self.limit}; see failures.jsonl"
            )

    def state_dict(self) -> dict[str, Any]:
        """Counters, for checkpoints."""
        return {"attempted": self.attempted, "failed": self.failed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue counting from a checkpoint."""
        self.attempted, self.failed = state.get("attempted", 0), state.get("failed", 0)
