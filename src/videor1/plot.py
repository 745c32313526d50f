"""Training curves as PNG, like the paper's figure: accuracy reward, temporal-reward rate, length, KL.

Each figure names its run, labels its y axis with the unit, counts steps in whole numbers, smooths only as
much as the run's length allows, and says so on its face when most groups gave no learning signal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Curve:
    """One metric to plot: its metrics.jsonl key, the figure's title, the y axis label (with the unit)."""

    key: str
    title: str
    ylabel: str


CURVES: tuple[Curve, ...] = (
    Curve("reward/accuracy", "accuracy reward", "reward (mean per completion, 0-1)"),
    Curve("temporal/rate", "temporal-reward rate", "share of video questions granted"),
    Curve("rollout/length", "completion length", "tokens (mean per completion)"),
    Curve("loss/kl", "KL to the reference", "KL (nats/token)"),
    Curve("reward/total", "total reward", "reward (mean per completion)"),
    Curve("loss/sft", "SFT loss", "cross-entropy (nats/token)"),
    Curve("perf/step_seconds", "time per step", "seconds per step"),
)
NO_SIGNAL = ("groups/all_correct", "groups/all_wrong")
NO_SIGNAL_SHARE = 0.5  # above this mean share of one-outcome groups, most of the run taught little


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The run's metrics.jsonl as a list of dicts."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a videor1 run directory?)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def fitting_window(requested: int, steps: int) -> int:
    """The smoothing window a run of `steps` points can carry: at most a tenth of it (1 means no smoothing)."""
    return max(1, min(requested, steps // 10))


def run_name(run_dir: str | Path) -> str:
    """The name a reader knows the run by: its directory's name."""
    path = Path(run_dir)
    return path.resolve().name or str(path)


def no_signal_note(rows: list[dict]) -> str | None:
    """A warning when groups whose completions were all right or all wrong (no advantage) average over half."""
    shares = [
        sum(row[key] for key in NO_SIGNAL) for row in rows if all(row.get(key) is not None for key in NO_SIGNAL)
    ]
    if not shares:
        return None
    mean = sum(shares) / len(shares)
    if mean <= NO_SIGNAL_SHARE:
        return None
    return f"most groups had no reward spread ({mean:.0%} all-correct or all-wrong): little learning signal"


def curve_figure(
    rows: list[dict], curve: Curve, *, name: str = "", window: int = 10, note: str | None = None,
) -> Figure | None:
    """The figure of one curve (None when the run never measured it)."""
    # a bare Figure with its own Agg canvas: no pyplot state to leak or close, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    points = [(row["step"], row[curve.key]) for row in rows if row.get(curve.key) is not None]
    if not points:
        return None
    steps, values = zip(*points, strict=True)
    window = fitting_window(window, len(points))
    fig = Figure(figsize=(5.5, 3.6 if note else 3.3), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if window > 1:
        ax.plot(steps, values, color="0.75", linewidth=1, label="per step")
        ax.plot(steps, smooth(list(values), window), color="C0", linewidth=2, label=f"mean of last {window} steps")
        ax.legend(fontsize=7)
    else:
        ax.plot(steps, values, color="C0", linewidth=1.5, marker="o" if len(points) <= 20 else None, markersize=3)
    ax.set_title(f"{curve.title} · {name}" if name else curve.title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(curve.ylabel, fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(set(steps)) == 1:  # a one-step run has no range for the locator to split into whole steps
        ax.set_xlim(steps[0] - 1, steps[0] + 1)
    ax.grid(alpha=0.3)
    if note:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=7, color="C3", wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1) if note else None)
    return fig


def run_figures(run_dir: str | Path, *, window: int = 10) -> tuple[list[tuple[Curve, Figure]], str | None]:
    """Every curve's figure for a run, and the no-signal warning (None when the groups had reward spread)."""
    rows = read_metrics(run_dir)
    note = no_signal_note(rows)
    figures = []
    for curve in CURVES:
        fig = curve_figure(rows, curve, name=run_name(run_dir), window=window, note=note)
        if fig is not None:
            figures.append((curve, fig))
    return figures, note


def plot_run(
    run_dir: str | Path, *, window: int = 10, warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw one PNG per available curve into RUN_DIR/plots; returns the files written.

    A warning about groups without reward spread goes to `warn` (default: stderr) as well as onto the figures.
    """
    figures, note = run_figures(run_dir, window=window)
    folder = Path(run_dir) / "plots"
    folder.mkdir(exist_ok=True)
    written = []
    for curve, fig in figures:
        path = folder / (curve.key.replace("/", "_") + ".png")
        fig.savefig(path)
        written.append(path)
    if note:
        (warn or (lambda text: print(f"warning: {run_name(run_dir)}: {text}", file=sys.stderr)))(note)
    return written
