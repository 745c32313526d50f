"""How an RL step's cost grows with frames per video, completion length and G, on the 32M-parameter model.

    python benchmarks/scaling.py --out docs/scaling          # the table and plot in docs/performance.md (~25 min)
    python benchmarks/scaling.py --points base --out /tmp/s   # one point, both scoring paths

One T-GRPO step's compute for one video prompt, as the trainer does it: the rollout (the lean sampler decodes
G ordered and G/2 shuffled-frame completions of T tokens in one loop), the frozen vision tower's features,
the reference pass (no-grad log-probs of the G ordered completions) and the policy update (log-probs with
gradients, then backward). What it leaves out: media decoding (the frames are made up: only their count and
size matter), rewards and AdamW. `full` scores each completion with its own copy of the prompt (the old path),
`shared` scores the prompt once per group (`algorithm.scoring=shared_prefix`, the default). Sampling is the
paper's: temperature 1.0, top_p 0.95, and every completion is exactly T tokens (the random model would end
about half of them early: its end-of-sequence token is taken away).

The points vary one factor at a time around frames 16, T = 256, G = 8 (frames at 308x308: 121 merged tokens
per 2 frames, so 4 / 16 / 64 frames give 242 / 968 / 3,872 visual tokens). Each (point, path) runs in a fresh
process after a warm-up step with T = 2 and reports the seconds of each phase, completion tokens per second of
step, and its peak memory over the resident model and inputs (`ru_maxrss`). Writes scaling.json, scaling.md and
scaling.png to --out, and each case's result to --out/cases/ as it finishes (a rerun skips those). A case
that fails or is killed for memory is reported as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from common import SPEC_32M, made_up_video, peak_bytes, rss_bytes, work_folder  # benchmarks/common.py

SIDE = 308
BASE = {"frames": 16, "tokens": 256, "generations": 8}
SWEEPS = {"frames": (4, 16, 64), "tokens": (24, 256, 768), "generations": (4, 8, 16)}
PATHS = {"full": "full", "shared": "shared_prefix"}
PHASES = ("rollout", "vision", "reference", "update")


@dataclass(frozen=True)
class Point:
    """One shape of the step."""

    frames: int
    tokens: int
    generations: int

    @property
    def name(self) -> str:
        """frames-tokens-G, e.g. f16-t256-g8."""
        return f"f{self.frames}-t{self.tokens}-g{self.generations}"


def points() -> list[Point]:
    """The base point and each factor swept around it, without repeats, in sweep order."""
    out: list[Point] = []
    for factor, values in SWEEPS.items():
        for value in values:
            point = Point(**{**BASE, factor: value})
            if point not in out:
                out.append(point)
    return out


def prompt_inputs(processor: object, work: Path, frames: int) -> tuple[dict, dict]:
    """One video question with `frames` made-up frames: its inputs, and its shuffled copy's."""
    from videor1.data.dataset import load_dataset
    from videor1.models.inputs import SampleMedia, permute_video, processor_inputs, prompt_text

    sample = next(s for s in load_dataset(work / "synth" / "train.json", work / "synth").samples if s.is_video)
    video = made_up_video(frames, SIDE, sample.media_path, torch.Generator().manual_seed(0))
    order = torch.randperm(frames, generator=torch.Generator().manual_seed(1)).tolist()
    text = [prompt_text(processor, sample)]
    ordered = dict(processor_inputs(processor, text, [SampleMedia(video=video)]))
    shuffled = dict(processor_inputs(processor, text, [SampleMedia(video=permute_video(video, order))]))
    return ordered, shuffled


def worker(point: Point, path: str, model_dir: Path, work: Path) -> dict:
    """One step's phases at `point` under scoring `path`, in this (fresh) process."""
    import videor1.models.sampler as sampler_module
    from videor1.models.generation import SamplingParams, suppressed_token_ids
    from videor1.models.load import load_model_and_processor
    from videor1.models.sampler import concat_inputs, sample_completions, split_completions
    from videor1.rl.logprobs import CompletionScorer, detach_vision, encode_vision

    # every completion exactly T tokens: the random model would end about half of them early, and the table is
    # about T. The end-of-sequence id becomes a vision placeholder, which the sampler never draws.
    sampler_module.eos_token_ids = lambda model, tokenizer: suppressed_token_ids(tokenizer)[:1]
    torch.manual_seed(0)
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    model.train()
    ordered, shuffled = prompt_inputs(processor, work, point.frames)
    both = concat_inputs([ordered, shuffled], processor.tokenizer.pad_token_id)  # the sampler's one batch
    scorer = CompletionScorer(model, suppressed_token_ids(processor.tokenizer), scoring=PATHS[path])
    generator = torch.Generator().manual_seed(0)
    copies = [point.generations, point.generations // 2]
    resident = rss_bytes()

    def step(tokens: int) -> tuple[dict[str, float], int]:
        seconds = {}
        start = time.perf_counter()
        params = SamplingParams(max_new_tokens=tokens, temperature=1.0, top_p=0.95)
        rollout = sample_completions(model, processor.tokenizer, both, params, copies, generator=generator)
        own, _shuffled = split_completions(rollout, copies)
        seconds["rollout"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            vision = detach_vision(encode_vision(model, ordered))
        seconds["vision"] = time.perf_counter() - start
        owners = [0] * point.generations
        start = time.perf_counter()
        with torch.no_grad():
            scorer(ordered, own.ids, own.mask, owners, vision=vision)
        seconds["reference"] = time.perf_counter() - start
        start = time.perf_counter()
        logp = scorer(ordered, own.ids, own.mask, owners, vision=vision).logp
        (logp * own.mask).sum().backward()
        model.zero_grad(set_to_none=True)
        seconds["update"] = time.perf_counter() - start
        return seconds, int(rollout.mask.sum())

    step(2)  # warm-up
    seconds, generated = step(point.tokens)
    total = sum(seconds.values())
    peak = peak_bytes()
    return {**asdict(point), "path": path, "prompt_tokens": int(ordered["attention_mask"].sum()),
            "seconds": seconds, "step": total, "generated": generated, "tokens_per_s": generated / total,
            "extra_bytes": peak - resident}


def table(results: list[dict]) -> str:
    """The markdown table: one row per point, both paths side by side."""
    lines = ["| frames | T | G | prompt tokens | path | step, s | rollout | vision | reference | update | "
             "tokens/s | peak extra, GiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['frames']} | {r['tokens']} | {r['generations']} | | {r['path']} | {r['error']} "
                         "| | | | | | |")
            continue
        s = r["seconds"]
        lines.append(f"| {r['frames']} | {r['tokens']} | {r['generations']} | {r['prompt_tokens']:,} | {r['path']} | "
                     f"{r['step']:.2f} | {s['rollout']:.2f} | {s['vision']:.2f} | {s['reference']:.2f} | "
                     f"{s['update']:.2f} | {r['tokens_per_s']:.0f} | {r['extra_bytes'] / 2**30:.2f} |")
    return "\n".join(lines)


def plot(results: list[dict], out: Path) -> None:
    """Step seconds and peak memory against each factor, one line per scoring path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"frames": "frames per video (308x308)", "tokens": "completion length T (tokens)",
              "generations": "G (completions per prompt)"}
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for column, (factor, values) in enumerate(SWEEPS.items()):
        for path, style in (("full", "o--"), ("shared", "s-")):
            rows = [r for v in values for r in results if r["path"] == path and r[factor] == v
                    and all(r[f] == BASE[f] for f in BASE if f != factor) and "error" not in r]
            xs = [r[factor] for r in rows]
            axes[0, column].plot(xs, [r["step"] for r in rows], style, label=f"{path} scoring")
            axes[1, column].plot(xs, [r["extra_bytes"] / 2**30 for r in rows], style, label=f"{path} scoring")
        for row, ylabel in ((0, "step compute, s"), (1, "peak memory over the model, GiB")):
            ax = axes[row, column]
            ax.set_xscale("log", base=2)
            ax.set_xticks(values, [str(v) for v in values])
            ax.set_xlabel(labels[factor])
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend()
    base = ", ".join(f"{k} {v}" for k, v in BASE.items())
    fig.suptitle(f"One T-GRPO step, one video prompt, 32M-parameter model, fp32, 2 CPU threads (others at {base})")
    fig.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for scaling.json, .md and .png")
    parser.add_argument("--points", default="all", help="'all', 'base', or comma-separated names like f16-t256-g8")
    parser.add_argument("--paths", default="full,shared")
    parser.add_argument("--work", type=Path, default=None, help="folder for the model and data (default: temp)")
    parser.add_argument("--worker", nargs=2, metavar=("POINT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = points()
    if args.points == "base":
        chosen = [Point(**BASE)]
    elif args.points != "all":
        names = args.points.split(",")
        chosen = [p for p in chosen if p.name in names]
    with work_folder(args.work) as work:
        model_dir = work / "model-32m"
        if args.worker:
            point = next(p for p in points() if p.name == args.worker[0])
            print(json.dumps(worker(point, args.worker[1], model_dir, work)))
            return
        if not (model_dir / "config.json").exists():
            from videor1.models.tiny import build_tiny

            build_tiny(model_dir, spec=SPEC_32M, seed=0)
        cases = args.out / "cases"  # one file per finished case: a rerun skips them
        cases.mkdir(parents=True, exist_ok=True)
        todo = [(point, path) for point in chosen for path in args.paths.split(",")]
        # the full path at the largest shapes last: it may not fit in memory, and every other case is kept
        todo.sort(key=lambda case: (case[1] == "full" and case[0].frames == max(SWEEPS["frames"]),))
        results = []
        for index, (point, path) in enumerate(todo, 1):
            saved = cases / f"{point.name}-{path}.json"
            if saved.exists():
                results.append(json.loads(saved.read_text()))
            else:
                command = [sys.executable, __file__, "--worker", point.name, path, "--out", str(args.out),
                           "--work", str(work)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    # killed for memory (-9) or failed: the case is reported as such, the others still run
                    reason = "killed (out of memory)" if done.returncode == -9 else done.stderr.strip()[-300:]
                    result = {**asdict(point), "path": path, "error": reason}
                else:
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                saved.write_text(json.dumps(result))
                results.append(result)
            r = results[-1]
            if "error" in r:
                print(f"[{index}/{len(todo)}] {point.name} {path:6s} {r['error']}", flush=True)
                continue
            print(f"[{index}/{len(todo)}] {point.name} {path:6s} step {r['step']:7.2f} s  "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in r['seconds'].items())})  "
                  f"{r['tokens_per_s']:6.0f} tok/s  peak extra {r['extra_bytes'] / 2**30:.2f} GiB", flush=True)
        order = {(p.name, path): i for i, (p, path) in enumerate((p, path) for p in points() for path in PATHS)}
        results.sort(key=lambda r: order[(Point(r["frames"], r["tokens"], r["generations"]).name, r["path"])])
        meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "side": SIDE, "base": BASE}
        (args.out / "scaling.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        (args.out / "scaling.md").write_text(table(results) + "\n")
        print("\n" + table(results))
        if len({(r["frames"], r["tokens"], r["generations"]) for r in results}) == len(points()):
            plot(results, args.out / "scaling.png")


if __name__ == "__main__":
    main()
