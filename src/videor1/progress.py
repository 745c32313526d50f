"""Progress of long loops: a rich bar on a terminal, plain lines anywhere else (nohup, a scheduler, CI).

A bar redraws itself in place, so a log file or a pipe gets nothing until it ends: there, a plain line is written
for the first update, every ~5% of the work or every `interval` seconds (whichever comes first) and the last.
The same lines can also go to a sink (a run's train.log) whatever stderr is. Nothing here knows about trainers:
callers pass the numbers to show and where the lines go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Clock = Callable[[], float]
Sink = Callable[[str], None]
# (step, the values to show: a number shown as the bar's label or {name: number}, seconds of the step)
StepCallback = Callable[[int, "float | Mapping[str, float | None]", float], None]

LINES_PER_RUN = 20  # ~one line per 5% of the work, plus the first, the last and those the time rule adds
INTERVAL_S = 30.0  # the longest a log stays silent while updates keep coming


def hms(seconds: float) -> str:
    """Seconds as H:MM:SS, the way rich prints elapsed time."""
    if not math.isfinite(seconds):
        return "-:--:--"
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def number(value: float | None) -> str:
    """A metric in 3 significant digits ("-" for nothing measured)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def speed(seconds_per_unit: float, unit: str) -> str:
    """"0.09 s/step", or "250 items/s" where s/unit would round to zero."""
    if seconds_per_unit <= 0 or not math.isfinite(seconds_per_unit):
        return f"- s/{unit}"
    if seconds_per_unit < 0.01:
        return f"{1 / seconds_per_unit:.0f} {unit}s/s"
    return f"{seconds_per_unit:.1f} s/{unit}" if seconds_per_unit >= 10 else f"{seconds_per_unit:.2f} s/{unit}"


def is_interactive(console: Console) -> bool:
    """Whether the console redraws a bar in place (a terminal) rather than appending to a file or pipe."""
    return console.is_interactive


class PlainLines:
    """When to write a plain progress line, and its timing part: rate, elapsed, ETA."""

    def __init__(
        self, total: int, start: int = 0, *, lines: int = LINES_PER_RUN, interval: float = INTERVAL_S,
        clock: Clock = time.monotonic,
    ):
        self.total, self.start, self.lines, self.interval, self.clock = total, start, lines, interval, clock
        self.began = clock()
        self.last_done, self.last_time = start, self.began
        self.first: tuple[int, float] | None = None  # (done, time) of the first line
        self.written = 0

    @property
    def every(self) -> int:
        """A line every this many units of work (what is left of it when resumed)."""
        return max(1, (self.total - self.start) // self.lines)

    def due(self, done: int) -> bool:
        """Whether `done` deserves a line: the first update, the last, every `every` units or `interval` seconds."""
        if self.written and done == self.last_done:
            return False  # a repeated update would print the same line twice
        return (
            not self.written or 0 < self.total <= done or done - self.last_done >= self.every
            or self.clock() - self.last_time >= self.interval
        )

    def timing(self, done: int, unit: str) -> str:
        """"0.09 s/step · elapsed 0:00:11 · ETA 0:00:57" for a line written now; marks the line as written."""
        now = self.clock()
        recent = _rate(done - self.last_done, now - self.last_time)
        if recent is None:
            recent = _rate(done - self.start, now - self.began)
        # the ETA leaves out the first update (model compiling, caches filling) and, being a mean over the
        # rest, shrugs off one slow step that the recent rate shows
        steady = _rate(done - self.first[0], now - self.first[1]) if self.first else None
        parts = [speed(recent, unit)] if recent is not None else []
        parts.append(f"elapsed {hms(now - self.began)}")
        per_unit = steady if steady is not None else recent
        if done < self.total and per_unit is not None:
            parts.append(f"ETA {hms(per_unit * (self.total - done))}")
        self.last_done, self.last_time, self.written = done, now, self.written + 1
        self.first = self.first or (done, now)
        return " · ".join(parts)

    def head(self, done: int) -> str:
        """"120/750 (16%)"."""
        if self.total <= 0:
            return f"{done}"
        return f"{done}/{self.total} ({100 * done // self.total}%)"


def _rate(units: int, seconds: float) -> float | None:
    """Seconds per unit; None without units done."""
    return seconds / units if units > 0 else None


def time_columns() -> tuple:
    """Labelled clocks for a bar: "elapsed 0:01:39 · left 0:00:12"."""
    return (
        TextColumn("elapsed", style="progress.elapsed"), TimeElapsedColumn(),
        TextColumn("· left", style="progress.remaining"), TimeRemainingColumn(),
    )


def count_columns() -> tuple:
    """The columns of a done/total bar: description, bar, N/M, elapsed, time left."""
    return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *time_columns())


def _writer(console: Console, log: Sink | None) -> Sink:
    """Write a plain line to the console (never wrapped or styled, so a log reads as printed) and to `log`."""

    def write(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
        if log is not None:
            log(line)

    return write


@contextmanager
def count_progress(
    description: str, console: Console | None = None, *, terminal: bool | None = None, log: Sink | None = None,
    interval: float = INTERVAL_S, clock: Clock = time.monotonic,
) -> Iterator[Callable[[int, int], None]]:
    """Progress of done/total work; the callback takes (done, total). A bar on a terminal, else plain lines.

    `terminal` overrides the console's own answer; `log` also gets every plain line.
    """
    console = console or Console(stderr=True)
    if terminal if terminal is not None else is_interactive(console):
        with Progress(*count_columns(), console=console) as progress:
            task = progress.add_task(description, total=None)
            lines = PlainLines(0, clock=clock, interval=interval)

            def update_bar(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)
                lines.total = total
                if log is not None and lines.due(done):
                    log(f"{description}: {lines.head(done)} · {lines.timing(done, 'item')}")

            yield update_bar
        return
    write = _writer(console, log)
    lines = PlainLines(0, clock=clock, interval=interval)

    def update(done: int, total: int) -> None:
        lines.total = total
        if lines.due(done):
            write(f"{description}: {lines.head(done)} · {lines.timing(done, 'item')}")

    yield update


@contextmanager
def step_progress(
    total: int, start: int = 0, *, enabled: bool = True, label: str = "reward", log: Sink | None = None,
    console: Console | None = None, terminal: bool | None = None, interval: float = INTERVAL_S,
    clock: Clock = time.monotonic,
) -> Iterator[StepCallback]:
    """Progress over training steps; the callback takes (step, values, seconds of the step).

    `values` is a number shown as `label`, or {name: number} for a few key metrics. A bar on a terminal, else
    a plain line ("step 120/750 (16%) · reward 1.52 · 0.09 s/step · elapsed 0:00:11 · ETA 0:00:57") for the
    first step, every ~5% of the steps or `interval` seconds, and the last; `log` gets those lines either way.
    """
    if not enabled:
        yield lambda step, values, seconds: None
        return
    console = console or Console(stderr=True)
    lines = PlainLines(total, start, clock=clock, interval=interval)

    def shown(values: float | Mapping[str, float | None]) -> str:
        named = values if isinstance(values, Mapping) else {label: values}
        return " · ".join(f"{name} {number(value)}" for name, value in named.items())

    def line(step: int, text: str) -> str:
        return " · ".join(filter(None, (f"step {lines.head(step)}", text, lines.timing(step, "step"))))

    if not (terminal if terminal is not None else is_interactive(console)):
        write = _writer(console, log)

        def update(step: int, values: float | Mapping[str, float | None], seconds: float) -> None:
            if lines.due(step):
                write(line(step, shown(values)))

        yield update
        return
    columns = (
        TextColumn("[bold]step"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[values]}", markup=False), *time_columns(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=total, completed=start, values="")

        def update_bar(step: int, values: float | Mapping[str, float | None], seconds: float) -> None:
            text = shown(values)
            progress.update(task, completed=step, values=f"{text} · {speed(seconds, 'step')} ·")
            if log is not None and lines.due(step):
                log(line(step, text))

        yield update_bar
