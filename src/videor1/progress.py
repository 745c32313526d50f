"""Progress bars for long runs (rich), shown on the main process only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def step_progress(
    total: int, start: int = 0, *, enabled: bool = True, label: str = "reward"
) -> Iterator[Callable[[int, float, float], None]]:
    """A bar over training steps; the callback takes (step, value shown as `label`, seconds per step)."""
    if not enabled:
        yield lambda step, reward, seconds: None
        return
    columns = (
        TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(), MofNCompleteColumn(),
        TextColumn(label + " {task.fields[value]:.3f}  {task.fields[seconds]:.2f}s/step"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("train", total=total, completed=start, value=float("nan"), seconds=0.0)

        def update(step: int, value: float, seconds: float) -> None:
            progress.update(task, completed=step, value=value, seconds=seconds)

        yield update
