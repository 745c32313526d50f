"""The temporal study (`videor1 study temporal`): does a temporal RL signal make a tiny model use frame order?

One SFT checkpoint, then RL from it with GRPO, T-GRPO as published and the formulations of
`videor1.rl.temporal_advantages` (joint normalisation, a running std per task), each over several seeds with
the same steps, prompts and completions; every final model is evaluated greedily on two held-out splits of
`videor1.data.synthetic.study`: the training distribution (where one frame answers most questions) and the
order-only split (where only the order does). The output folder gets the data, the model, every run, each
evaluation's answers, `results.json`, `results.md` (mean ± spread per method) and `study.png`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from videor1.demo import DemoSettings, evaluate, rl_config, sft_config

METHODS: dict[str, list[str]] = {
    "GRPO": ["algorithm.temporal=false"],
    "T-GRPO": [],
    "T-GRPO joint": ["algorithm.temporal_signal=joint"],
    "T-GRPO ema_std": ["algorithm.temporal_signal=ema_std"],
}
"""Each method's settings on top of the shared RL config (T-GRPO with the paper's preset)."""

TEST_SPLITS = {"in-distribution": "test_in_distribution.json", "order-only": "test_order_only.json"}


def study_media(size: int) -> list[str]:
    """Media settings keeping the clips' `size`×`size` frames as they are, 4 frames per video."""
    pixels = size * size
    return ["media.fps=2.0", "media.min_frames=4", "media.max_frames=4", f"media.video_min_pixels={pixels}",
            f"media.video_max_pixels={pixels}", f"media.image_min_pixels={pixels}", f"media.image_max_pixels={pixels}"]


@dataclass
class StudySettings:
    """Sizes of the study; the defaults keep each RL run to a few minutes on a 2-core CPU."""

    n_sft: int = 800
    n_rl: int = 1600
    n_test: int = 200  # per held-out split: resolves about ±7 points (binomial, p = 0.5)
    shortcut_fraction: float = 0.8
    """Share of the RL and in-distribution questions that one frame answers."""
    # SFT on shortcut clips only: the cold start may learn "the square is on the side it moves to", and RL
    # (80% shortcut, 20% order-only) then has to teach the order. With 20% order-only clips in SFT too, the tiny
    # model's rationale already named the direction of 99.5% of order-only clips: nothing left to study
    sft_shortcut_fraction: float = 1.0
    cue: str = "position"
    """The training distribution's static cue: where the motion starts, or the square's colour."""
    size: int = 56
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    training: DemoSettings = field(default_factory=lambda: DemoSettings(
        tasks=None, sft_steps=600, rl_steps=150, rl_prompts=8, rl_generations=8, max_new_tokens=48,
    ))
    """SFT and RL settings shared by every run (the demo's tuned values, shorter)."""


@dataclass
class RunResult:
    """One RL run: its method and seed, its held-out accuracies and its training statistics."""

    method: str
    seed: int
    run_dir: str
    accuracy: dict[str, float]
    training: dict[str, float | None]


def training_stats(rows: Sequence[dict[str, Any]], *, window: int = 20) -> dict[str, float | None]:
    """Mean temporal and reward statistics of a run's metrics rows: over all steps, and over its last `window`."""

    def mean(key: str, part: Sequence[dict[str, Any]]) -> float | None:
        values = [r[key] for r in part if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    last = rows[-window:]
    return {
        "p": mean("temporal/p", rows), "p_shuffled": mean("temporal/p_shuffled", rows),
        "p, last steps": mean("temporal/p", last), "p_shuffled, last steps": mean("temporal/p_shuffled", last),
        "temporal rate": mean("temporal/rate", rows), "accuracy reward, last steps": mean("reward/accuracy", last),
        "|advantage|": mean("advantage/abs_mean", rows), "KL": mean("loss/kl", rows),
        # groups whose answers all agree carry no advantage under group normalisation
        "groups all right": mean("groups/all_correct", rows), "groups all wrong": mean("groups/all_wrong", rows),
    }


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize(runs: Sequence[RunResult], methods: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method, per held-out split: the spread of its seeds' accuracies."""
    return {m: {split: spread([r.accuracy[split] for r in runs if r.method == m]) for split in TEST_SPLITS}
            for m in methods if any(r.method == m for r in runs)}


def results_table(summary: dict[str, dict[str, dict[str, float]]], sft: dict[str, float], seeds: int) -> str:
    """Markdown: rows = methods, columns = held-out splits, cells = mean ± std (min–max) over the seeds."""
    head = "| method | " + " | ".join(f"{split} accuracy" for split in TEST_SPLITS) + " |"
    lines = [head, "|" + "---|" * (1 + len(TEST_SPLITS))]
    lines.append("| SFT (start of every run) | " + " | ".join(f"{sft[s]:.3f}" for s in TEST_SPLITS) + " |")
    for method, splits in summary.items():
        cells = [f"{v['mean']:.3f} ± {v['std']:.3f} ({v['min']:.3f}–{v['max']:.3f})" for v in splits.values()]
        lines.append(f"| {method} ({seeds} seeds) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_table(runs: Sequence[RunResult], methods: Sequence[str]) -> str:
    """Markdown: each method's training statistics, mean over its seeds."""
    keys = list(runs[0].training) if runs else []
    lines = ["| RL training (sampled), mean over seeds | " + " | ".join(methods) + " |",
             "|" + "---|" * (1 + len(methods))]
    for key in keys:
        cells = []
        for method in methods:
            values = [r.training[key] for r in runs if r.method == method and r.training[key] is not None]
            cells.append(f"{statistics.fmean(values):.3f}" if values else "-")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(runs: Sequence[RunResult], sft: dict[str, float], methods: Sequence[str], path: Path) -> Path:
    """Each method's held-out accuracies (one dot per seed, a bar at the mean) beside the SFT start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TEST_SPLITS), figsize=(5 * len(TEST_SPLITS), 4), sharey=True)
    for ax, split in zip(axes, TEST_SPLITS, strict=True):
        for i, method in enumerate(methods):
            values = [r.accuracy[split] for r in runs if r.method == method]
            if values:
                ax.bar(i, statistics.fmean(values), color="#9ecae1")
                ax.scatter([i] * len(values), values, color="#08519c", zorder=3, s=14)
        ax.axhline(sft[split], color="grey", linestyle="--", label="SFT")
        ax.axhline(0.5, color="#d62728", linestyle=":", label="chance")
        ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
        ax.set_title(f"held-out: {split}")
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("greedy accuracy")
    axes[0].legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def split_accuracy(answers: Sequence[Any]) -> float:
    """Mean accuracy of one evaluation's answers."""
    return sum(a.accuracy for a in answers) / len(answers)


def run_temporal_study(out: str | Path, *, seed: int = 0, settings: StudySettings | None = None,
                       say: Callable[[str], None] = print) -> dict[str, Any]:
    """Data, tiny model, one SFT, then every method × seed RL run, each evaluated on both held-out splits."""
    from videor1.data.dataset import load_dataset
    from videor1.data.synthetic.study import generate_temporal_study
    from videor1.models.tiny import build_tiny, dataset_corpus
    from videor1.plot import read_metrics
    from videor1.rl.trainer import GRPOTrainer
    from videor1.sft.trainer import SFTTrainer

    s = settings or StudySettings()
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown study methods {unknown}; expected some of {list(METHODS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    total = 2 + len(s.methods) * len(s.seeds)
    say(f"[1/{total}] data: {s.n_sft} SFT, {s.n_rl} RL, 2 x {s.n_test} held-out questions "
        f"({s.cue} cue, shortcut fraction {s.shortcut_fraction}); a tiny Qwen2.5-VL")
    data = generate_temporal_study(out / "data", n_sft=s.n_sft, n_rl=s.n_rl, n_test=s.n_test, seed=seed,
                                   shortcut_fraction=s.shortcut_fraction, size=s.size,
                                   sft_shortcut_fraction=s.sft_shortcut_fraction, fixed_letters=True, cue=s.cue)
    tests = {split: load_dataset(out / "data" / name, out / "data").samples for split, name in TEST_SPLITS.items()}
    tiny = str(build_tiny(out / "tiny-model", family="qwen2_5_vl", corpus=dataset_corpus(data.sft_json),
                          seed=seed))
    t = replace(s.training, media=study_media(s.size))
    say(f"[2/{total}] SFT cold start: {t.sft_steps} steps")
    sft_model = str(SFTTrainer(sft_config(out, tiny, seed, t), overwrite=True).train())
    sft = {split: split_accuracy(evaluate(f"SFT-{split}", sft_model, samples, t, out).answers)
           for split, samples in tests.items()}
    say("SFT: " + ", ".join(f"{split} {value:.3f}" for split, value in sft.items()))
    runs: list[RunResult] = []
    for method in s.methods:
        for run_seed in s.seeds:
            name = f"{method.lower().replace(' ', '-')}-seed{run_seed}"
            say(f"[{len(runs) + 3}/{total}] {method}, seed {run_seed}: {t.rl_steps} steps")
            method_settings = replace(t, extra_rl=[*t.extra_rl, *METHODS[method]])
            run = rl_config(out, name, sft_model, run_seed, "algorithm.temporal=false" not in METHODS[method],
                            method_settings)
            final = str(GRPOTrainer(run, overwrite=True).train())
            accuracy = {split: split_accuracy(evaluate(f"{name}-{split}", final, samples, t, out).answers)
                        for split, samples in tests.items()}
            stats = training_stats(read_metrics(run.output_dir))
            runs.append(RunResult(method, run_seed, run.output_dir, accuracy, stats))
            say("  " + ", ".join(f"{split} {value:.3f}" for split, value in accuracy.items()))
    summary = summarize(runs, s.methods)
    table, training = results_table(summary, sft, len(s.seeds)), training_table(runs, s.methods)
    plot = plot_study(runs, sft, s.methods, out / "study.png")
    minutes = (time.perf_counter() - begin) / 60
    results = {
        "seed": seed, "minutes": minutes, "settings": asdict(s), "sft": sft, "summary": summary,
        "runs": [asdict(r) for r in runs], "table": table, "training_table": training, "plot": str(plot),
        "data": json.loads(data.study_json.read_text(encoding="utf-8")),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "results.md").write_text(table + "\n\n" + training + "\n", encoding="utf-8")
    say(f"done in {minutes:.1f} min; held-out greedy accuracy (results.md, {plot}):")
    say(table)
    say("")
    say(training)
    return results
