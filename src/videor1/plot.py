"""Training curves as PNG, like the paper's figure: accuracy reward, temporal-reward rate, length, KL."""

from __future__ import annotations

import json
from pathlib import Path

CURVES: tuple[tuple[str, str], ...] = (
    ("reward/accuracy", "accuracy reward"),
    ("temporal/rate", "temporal-reward rate"),
    ("rollout/length", "completion length (tokens)"),
    ("loss/kl", "KL to the reference"),
    ("reward/total", "total reward"),
    ("loss/sft", "SFT loss"),
)


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


def plot_run(run_dir: str | Path, *, window: int = 10) -> list[Path]:
    """Draw one PNG per available curve into RUN_DIR/plots; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = read_metrics(run_dir)
    folder = Path(run_dir) / "plots"
    folder.mkdir(exist_ok=True)
    written = []
    for key, title in CURVES:
        points = [(m["step"], m[key]) for m in lines if m.get(key) is not None]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
        ax.plot(steps, values, color="0.75", linewidth=1, label="per step")
        ax.plot(steps, smooth(list(values), window), color="C0", linewidth=2, label=f"mean of {window}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / (key.replace("/", "_") + ".png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
