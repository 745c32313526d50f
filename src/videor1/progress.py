"""Progress bars for long runs (rich), shown on the main process only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def count_columns() -> tuple:
    """The columns of a done/total bar: description, bar, N/M, elapsed, ETA."""
    return (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


@contextmanager
def count_progress(description: str, console: Console | None = None) -> Iterator[Callable[[int, int], None]]:
    """A done/total bar; the callback takes (done, total)."""
    with Progress(*count_columns(), console=console or Console(stderr=True)) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


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
