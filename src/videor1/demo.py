"""The offline demo: the whole Video-R1 pipeline on one CPU, and proof that the model learns.

synthesize data -> build a tiny Qwen2.5-VL -> evaluate -> SFT cold start -> evaluate -> T-GRPO -> evaluate,
and plain GRPO from the same SFT checkpoint for comparison. Everything lands in the output dir: the data,
the model, every run (config, metrics, checkpoints, plots), each evaluation's answers and a results table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from videor1.config import MediaConfig, SFTConfig, TrainConfig, load_config
from videor1.data.dataset import load_dataset
from videor1.data.schema import Sample
from videor1.eval.generate import Answer, answer_samples

# The stages' shared media settings: 4 frames of 56x56 (docs/design.md §9), images at the same size.
DEMO_MEDIA = [
    "media.fps=2.0", "media.min_frames=4", "media.max_frames=4", "media.video_min_pixels=3136",
    "media.video_max_pixels=3136", "media.image_min_pixels=3136", "media.image_max_pixels=3136",
]


# Tasks a 0.6M-parameter model learns on a CPU in minutes: multiple choice on videos (every one needs the
# frame order) and counting on images. Measured out: OCR and free-form answers (text generation it cannot
# learn in this budget), shape_position (regression: SFT never leaves its prior, and under RL its always
# non-zero reward spread took over the normalised advantages and pulled counting down) and
# colour_at_position (still at chance after 900 SFT steps: its letters depend on which colours are shown).
# All of them are covered by the tests instead.
DEMO_TASKS = ("motion_direction", "size_change", "appearance_order", "count_shapes")


@dataclass
class DemoSettings:
    """Sizes of the demo; the defaults fit in 10 minutes on a 2-core CPU."""

    n_train: int = 600  # SFT split: questions with CoT rationales (the COT-165k role)
    n_rl: int = 1600  # RL split: other questions, answers only (the 260k role); RL never revisits SFT's questions
    n_test: int = 500  # held-out; ~4 s to evaluate, and a 500-question split resolves ~4 points between models
    tasks: list[str] | None = field(default_factory=lambda: list(DEMO_TASKS))
    # one letter per class and short observation-first rationales: what a 2-layer model can pick up in
    # minutes (measured: with shuffled letters and coordinate-heavy rationales it stays at the prior)
    shuffle_options: bool = False
    rationale: str = "brief"
    sft_steps: int = 750
    sft_batch_size: int = 8
    sft_lr: float = 3e-4  # 1e-3 stalls at the class prior on this model; 3e-4 breaks through in ~400 steps
    rl_steps: int = 200
    rl_prompts: int = 8
    rl_generations: int = 8
    # cosine from 1e-4 with KL 0.3 (measured from one SFT model on an earlier five-task mix: at KL 0.04 a
    # constant 1e-4 collapsed partly learned answers onto one option, 5e-5 left greedy accuracy where SFT had
    # it, 2e-4 and up broke it)
    rl_lr: float = 1e-4
    rl_kl: float = 0.3
    # at 1.0 the cold-started model wrote a malformed answer in 18% of its samples (56% after 300 SFT steps),
    # so RL spent its steps re-learning the format; at 0.7, 98-99% were well formed
    rl_temperature: float = 0.7
    max_new_tokens: int = 48
    eval_batch_size: int = 32
    extra_sft: list[str] = field(default_factory=list)
    extra_rl: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=lambda: list(DEMO_MEDIA))
    """The media settings of every stage (training and evaluation)."""


@dataclass
class StageResult:
    """One evaluated model: where it is and its held-out answers."""

    name: str
    model: str
    answers: list[Answer]
    seconds: float


def _common(out: Path, model: str, seed: int, split: str, s: DemoSettings) -> list[str]:
    data = out / "data"
    return [
        f"seed={seed}", f"model.name_or_path={model}", "model.dtype=float32", "model.freeze_vision=false",
        f"data.train_file={data / split}", f"data.media_root={data}", "tensorboard=true", *s.media,
    ]


def split_train(train_json: Path, n_sft: int) -> tuple[Path, Path]:
    """sft.json (the first n_sft questions, with rationales) and rl.json (the rest, answers only), beside train_json."""
    rows = json.loads(train_json.read_text(encoding="utf-8"))
    sft, rl = train_json.with_name("sft.json"), train_json.with_name("rl.json")
    sft.write_text(json.dumps(rows[:n_sft], indent=1) + "\n", encoding="utf-8")
    rl.write_text(json.dumps([{**r, "process": ""} for r in rows[n_sft:]], indent=1) + "\n", encoding="utf-8")
    return sft, rl


def sft_config(out: Path, model: str, seed: int, s: DemoSettings) -> SFTConfig:
    """The cold start: short on purpose, so RL has room to improve (docs/design.md §9)."""
    return load_config(SFTConfig, None, [
        *_common(out, model, seed, "sft.json", s), f"output_dir={out / 'sft'}", f"max_steps={s.sft_steps}",
        f"batch_size={s.sft_batch_size}", f"optim.lr={s.sft_lr}", "optim.weight_decay=0.0", "optim.max_grad_norm=1.0",
        "optim.scheduler=cosine", "optim.warmup_ratio=0.05", f"save_every={s.sft_steps}", "data.num_workers=1",
        *s.extra_sft,
    ])


def rl_config(out: Path, name: str, model: str, seed: int, temporal: bool, s: DemoSettings) -> TrainConfig:
    """T-GRPO (temporal) or GRPO from the SFT checkpoint, identical otherwise."""
    return load_config(TrainConfig, None, [
        *_common(out, model, seed, "rl.json", s), f"output_dir={out / name}", f"max_steps={s.rl_steps}",
        f"prompts_per_device={s.rl_prompts}", f"algorithm.num_generations={s.rl_generations}",
        f"algorithm.temporal={str(temporal).lower()}", "algorithm.length.enabled=false",
        f"generation.max_new_tokens={s.max_new_tokens}", "generation.top_p=1.0",
        f"generation.temperature={s.rl_temperature}", f"algorithm.kl_coef={s.rl_kl}", f"optim.lr={s.rl_lr}",
        "optim.weight_decay=0.0", "optim.max_grad_norm=1.0", "optim.scheduler=cosine", "optim.warmup_ratio=0.05",
        f"save_every={s.rl_steps}", "save_total_limit=1", "log_rollouts=4", *s.extra_rl,
    ])


def evaluate(name: str, model_path: str, samples: list[Sample], s: DemoSettings, out: Path) -> StageResult:
    """Greedy answers of one model on the held-out split, saved as answers-<name>.jsonl."""
    from videor1.models.load import load_model_and_processor

    start = time.perf_counter()
    model, processor = load_model_and_processor(model_path, dtype="float32")
    media = load_config(MediaConfig, None, [o.removeprefix("media.") for o in s.media])
    answers = answer_samples(model, processor, samples, media, batch_size=s.eval_batch_size,
                             max_new_tokens=s.max_new_tokens)
    with (out / f"answers-{name}.jsonl").open("w", encoding="utf-8") as f:
        for a in answers:
            f.write(json.dumps({"problem_id": a.sample.problem_id, "task": a.sample.extra.get("task"),
                                "output": a.output, "accuracy": a.accuracy, "well_formed": a.well_formed,
                                "error": a.error}) + "\n")
    return StageResult(name, model_path, answers, time.perf_counter() - start)


def breakdown(answers: list[Answer]) -> dict[str, tuple[float, int]]:
    """Mean accuracy and count by problem type, image vs video, order-dependent video, format, overall."""
    groups: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        groups.setdefault(key, []).append(value)

    for a in answers:
        if a.sample.extra.get("task"):
            add(f"task: {a.sample.extra['task']}", a.accuracy)
        add(f"type: {a.sample.problem_type}", a.accuracy)
        add(f"media: {a.sample.data_type}", a.accuracy)
        if a.sample.extra.get("order_dependent"):
            add("video, order-dependent", a.accuracy)
        add("all questions", a.accuracy)
        add("format reward", float(a.well_formed))
    return {k: (sum(v) / len(v), len(v)) for k, v in groups.items()}


def chance(samples: list[Sample]) -> dict[str, float]:
    """Expected accuracy of uniform guessing where it is defined: multiple choice, 1 / number of options."""
    groups: dict[str, list[float]] = {}
    for sample in samples:
        if sample.problem_type == "multiple choice":
            task = sample.extra.get("task")
            for key in ("type: multiple choice", *([f"task: {task}"] if task else [])):
                groups.setdefault(key, []).append(1 / len(sample.options))
    return {key: sum(v) / len(v) for key, v in groups.items()}


def rl_summary(run_dir: str | Path, *, window: int = 20) -> dict[str, float | None]:
    """A run's sampled accuracy reward over its first and last `window` steps, and its mean temporal stats."""
    from videor1.plot import read_metrics

    rows = read_metrics(run_dir)

    def mean(key: str, part: list[dict]) -> float | None:
        values = [r[key] for r in part if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "accuracy reward, first steps": mean("reward/accuracy", rows[:window]),
        "accuracy reward, last steps": mean("reward/accuracy", rows[-window:]),
        "temporal-reward rate": mean("temporal/rate", rows), "p (ordered)": mean("temporal/p", rows),
        "p~ (shuffled)": mean("temporal/p_shuffled", rows), "KL": mean("loss/kl", rows),
    }


def rl_table(summaries: dict[str, dict[str, float | None]]) -> str:
    """A Markdown table of the RL runs' training statistics (rows = statistics, columns = runs)."""
    names = list(summaries)
    lines = ["| RL training (sampled) | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for key in next(iter(summaries.values())):
        cells = [f"{v:.3f}" if (v := summaries[n][key]) is not None else "-" for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def results_table(stages: list[StageResult], samples: list[Sample]) -> str:
    """A Markdown table: rows = groups, columns = models (and chance where defined)."""
    tables = [breakdown(stage.answers) for stage in stages]
    guess = chance(samples)
    rows = sorted(tables[0], key=lambda k: (k == "all questions", k == "format reward", not k.startswith("task"), k))
    head = "| held-out | n | chance | " + " | ".join(s.name for s in stages) + " |"
    lines = [head, "|" + "---|" * (3 + len(stages))]
    for key in rows:
        n = tables[0][key][1]
        cells = [f"{t[key][0]:.3f}" for t in tables]
        lines.append(f"| {key} | {n} | {guess[key]:.3f} | " if key in guess else f"| {key} | {n} | | ")
        lines[-1] += " | ".join(cells) + " |"
    return "\n".join(lines)


def run_demo(
    out: str | Path, *, seed: int = 0, settings: DemoSettings | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline into `out`; returns the results (also written to results.json / results.md)."""
    from videor1.data.synthetic import generate
    from videor1.models.tiny import build_tiny, dataset_corpus
    from videor1.plot import plot_run
    from videor1.rl.trainer import GRPOTrainer
    from videor1.sft.trainer import SFTTrainer

    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    say(f"[1/7] synthesizing {s.n_train} SFT + {s.n_rl} RL + {s.n_test} test questions (images and temporal videos)")
    summary = generate(out / "data", n=s.n_train + s.n_rl, n_test=s.n_test, seed=seed, tasks=s.tasks,
                       shuffle_options=s.shuffle_options, rationale=s.rationale)
    split_train(summary.train_json, s.n_train)
    test = load_dataset(summary.test_json, out / "data").samples
    say("[2/7] building a tiny Qwen2.5-VL with a tokenizer trained on the data")
    tiny = str(build_tiny(out / "tiny-model", family="qwen2_5_vl", corpus=dataset_corpus(summary.train_json),
                          seed=seed))
    say("[3/7] evaluating the untrained model")
    stages = [evaluate("untrained", tiny, test, s, out)]
    say(f"[4/7] SFT cold start: {s.sft_steps} steps")
    # the demo rebuilds its data and model every time: a second demo into the same --out replaces its runs
    sft_model = str(SFTTrainer(sft_config(out, tiny, seed, s), overwrite=True).train())
    stages.append(evaluate("SFT", sft_model, test, s, out))
    summaries = {}
    for step, (name, temporal) in enumerate((("T-GRPO", True), ("GRPO", False)), start=5):
        say(f"[{step}/7] {name} from the SFT model: {s.rl_steps} steps")
        run = rl_config(out, name.lower().replace("-", ""), sft_model, seed, temporal, s)
        final = str(GRPOTrainer(run, overwrite=True).train())
        plot_run(run.output_dir)
        summaries[name] = rl_summary(run.output_dir)
        stages.append(evaluate(f"SFT+{name}", final, test, s, out))
    table = results_table(stages, test)
    training = rl_table(summaries)
    minutes = (time.perf_counter() - begin) / 60
    results = {
        "seed": seed, "minutes": minutes, "settings": asdict(s), "table": table, "rl_table": training,
        "stages": {st.name: {"model": st.model, **{k: v[0] for k, v in breakdown(st.answers).items()}}
                   for st in stages},
        "rl": summaries,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (out / "results.md").write_text(table + "\n\n" + training + "\n", encoding="utf-8")
    say(f"[7/7] done in {minutes:.1f} min; held-out accuracy (results.md, plots in {out}/tgrpo/plots):")
    say(table)
    say("")
    say(training)
    return results
