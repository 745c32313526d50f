"""A deterministic, sharded, resumable stream of decoded samples.

Each epoch is one permutation of the dataset drawn from the run's seed; rank r takes every W-th entry,
so a question's whole group stays on one rank and ranks never share a prompt. A sample whose media fails
to decode is skipped, counted and reported through `on_failure` — never replaced by another file — and
the next sample takes its place. The stream stops the run with `TooManyFailures` once the failed fraction
passes the configured limit (judged only after 1/limit attempts, so one early failure cannot end a run).
The position (epoch, cursor) is part of every checkpoint, so a resumed run sees the same samples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from videor1.data.failures import FailureBudget
from videor1.data.media import MediaError
from videor1.data.schema import Sample
from videor1.models.inputs import SampleMedia


@dataclass
class Loaded:
    """A sample with its decoded media and the seconds spent decoding it."""

    sample: Sample
    media: SampleMedia
    seconds: float


def _timed_load(load: Callable[[Sample], SampleMedia], sample: Sample) -> tuple[SampleMedia | MediaError, float]:
    import time

    start = time.perf_counter()
    try:
        media: SampleMedia | MediaError = load(sample)
    except MediaError as exc:
        media = exc
    return media, time.perf_counter() - start


class PromptStream:
    """Yields batches of decoded samples for one rank; bad media is skipped and counted."""

    def __init__(
        self,
        samples: list[Sample],
        load: Callable[[Sample], SampleMedia],
        *,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        max_failure_fraction: float = 0.05,
        num_workers: int = 0,
        on_failure: Callable[[Sample, MediaError], None] | None = None,
    ):
        if len(samples) < world_size:
            raise ValueError(f"{len(samples)} samples cannot feed {world_size} processes")
        self.samples, self.load = samples, load
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.budget = FailureBudget(max_failure_fraction)
        self.on_failure = on_failure
        self.epoch, self.cursor = 0, 0
        self._order = self._epoch_order(0)
        # Decoding runs ahead in threads (PyAV releases the GIL), a batch beyond the one handed out; the cursor only
        # counts consumed samples, so what was decoded ahead is decoded again after a resume, never skipped.
        self._pool = ThreadPoolExecutor(num_workers) if num_workers > 0 else None
        self._ahead: deque[tuple[Sample, Future]] = deque()
        self._next_epoch, self._next_cursor = 0, 0

    def _epoch_order(self, epoch: int) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(len(self.samples), generator=generator).tolist()
        else:
            order = list(range(len(self.samples)))
        # drop the tail that does not split evenly so every rank sees the same number per epoch
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]

    def _advance(self) -> Sample:
        """The next sample in order after the last one scheduled (consumed or prefetched)."""
        order = self._order if self._next_epoch == self.epoch else self._epoch_order(self._next_epoch)
        if self._next_cursor >= len(order):
            self._next_epoch, self._next_cursor = self._next_epoch + 1, 0
            order = self._epoch_order(self._next_epoch)
        sample = self.samples[order[self._next_cursor]]
        self._next_cursor += 1
        return sample

    def _schedule(self, count: int) -> None:
        while len(self._ahead) < count:
            sample = self._advance()
            future: Future = Future()
            if self._pool is not None:
                future = self._pool.submit(_timed_load, self.load, sample)
            else:
                future.set_result(None)  # loaded lazily in the caller's thread
            self._ahead.append((sample, future))

    def _consume(self) -> tuple[Sample, SampleMedia | MediaError, float]:
        sample, future = self._ahead.popleft()
        result = future.result()
        media, seconds = result if result is not None else _timed_load(self.load, sample)
        self.cursor += 1
        if self.cursor >= len(self._order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)
        return sample, media, seconds

    def next_batch(self, size: int) -> list[Loaded]:
        """`size` samples whose media decoded; failures are reported and replaced by the next samples."""
        batch: list[Loaded] = []
        while len(batch) < size:
            self._schedule(size - len(batch) + (self._pool._max_workers if self._pool else 0))
            sample, media, seconds = self._consume()
            failed = isinstance(media, MediaError)
            if failed and self.on_failure is not None:
                self.on_failure(sample, media)
            elif not failed:
                batch.append(Loaded(sample, media, seconds))
            # judged after every attempt: failures early on count once enough samples have been tried
            self.budget.record(1, int(failed))
        if self._pool is not None:
            # the next batch decodes while the caller computes with this one: media leaves the step's critical path
            self._schedule(size)
        return batch

    @property
    def attempted(self) -> int:
        """Samples tried so far, loaded or not."""
        return self.budget.attempted

    @property
    def failed(self) -> int:
        """Samples that failed to load so far."""
        return self.budget.failed

    def state_dict(self) -> dict[str, Any]:
        """Position and counters, for checkpoints."""
        return {"epoch": self.epoch, "cursor": self.cursor, **self.budget.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; nothing before it is decoded again."""
        self._ahead.clear()
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self.budget.load_state_dict(state)
        self._order = self._epoch_order(self.epoch)
        self._next_epoch, self._next_cursor = self.epoch, self.cursor

    def close(self) -> None:
        """Stop the decoding threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
