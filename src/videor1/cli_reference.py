"""README's command reference, generated from the command line itself so the two cannot drift.

    python -m videor1.cli_reference            # print the table
    python -m videor1.cli_reference --write    # replace it in README.md, between the markers

Each command's options come from its --help (click's parameters); what it reads and writes is stated here,
and a test fails when a command has no entry or README's table differs from this one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import typer

from videor1.config import MediaConfig

BEGIN, END = "<!-- commands:begin (python -m videor1.cli_reference --write) -->", "<!-- commands:end -->"
MEDIA_FLAGS = {f"--{name.replace('_', '-')}" for name in MediaConfig.model_fields}

IO: dict[str, tuple[str, str]] = {
    "data validate": ("a dataset file (JSON, JSONL, parquet, datasets folder) and its media root",
                      "problems per row and file on stdout; exit 1 when any"),
    "data stats": ("a dataset file", "counts by data type, problem type and source"),
    "data synth": ("nothing (a seed)", "a synthetic dataset: train.json, test.json, synth.json, media"),
    "data fetch": ("registry names, from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE honoured)",
                   "DIR/NAME: the repo's files as published, fetch.json; exit 1 when a download failed"),
    "data prepare": ("the folder data fetch wrote (or one set folder in it)",
                     "per set eval_<set>.json (benchmarks), prepare_problems.txt, compare_video_r1.json; "
                     "prepare.json; exit 1 on any problem"),
    "models tiny": ("a dataset file (tokenizer corpus), optional", "a tiny random Qwen-VL checkpoint"),
    "sft": ("a YAML config and key=value overrides; CoT data", "output_dir: config.yaml, metrics.jsonl, train.log, "
            "trackers, checkpoint-N/"),
    "train": ("a YAML config and key=value overrides; RL data", "output_dir: config.yaml, metrics.jsonl, "
              "rollouts.jsonl, failures.jsonl, train.log, trackers, checkpoint-N/"),
    "eval": ("a model and benchmark files with their media", "--out: per benchmark predictions.jsonl, "
             "results.json, results.md; results.json of the run"),
    "eval run": ("an eval YAML config (the same settings) and key=value overrides", "the same as eval"),
    "eval score": ("predictions.jsonl or a Video-R1 eval_bench.py output", "the benchmark's results (stdout), "
                   "with --out the same files as eval"),
    "eval table": ("eval output folders", "Table 1 in Markdown (stdout)"),
    "infer": ("a model, a question and a video or image", "the reasoning and the answer (stdout)"),
    "serve": ("a model", "an OpenAI-compatible HTTP API (streaming too) and a page at / to try the model; request "
              "logs under --log-dir"),
    "annotate": ("a dataset and a teacher (local model or endpoint)", "--out: the kept rows with their <think>; "
                 "beside it OUT.kept/rejected/failed.jsonl (resumable), OUT.annotate.yaml and .log"),
    "demo": ("nothing", "--out: data, tiny model, SFT / T-GRPO / GRPO runs, plots, results.md"),
    "study temporal": ("nothing", "--out: study data, tiny model, SFT, method x seed RL runs, results.md, study.png"),
    "plot": ("a run folder (metrics.jsonl)", "plots/*.png in the run folder"),
    "export": ("a checkpoint with a LoRA adapter (or an adapter folder)", "a plain merged checkpoint"),
}


def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every runnable command under `group`, by its full name ("eval score"); a group with a callback counts."""
    found = []
    for name in sorted(group.commands):
        command = group.commands[name]
        full = f"{prefix}{name}"
        if hasattr(command, "commands"):  # typer's groups need not be this click's Group class
            if option_names(command):  # a group that runs itself (`eval --model …`), not just a folder
                found.append((full, command))
            found.extend(commands(command, f"{full} "))
        else:
            found.append((full, command))
    return found


def option_names(command: click.Command) -> list[str]:
    """The command's options by their first (long) name, help excluded, in declaration order."""
    return [p.opts[0] for p in command.params if p.param_type_name == "option" and p.opts[0] != "--help"]


def arguments(command: click.Command) -> list[str]:
    """The command's positional arguments, upper-cased as --help shows them."""
    return [p.name.upper() for p in command.params if p.param_type_name == "argument"]


def _options_cell(command: click.Command) -> str:
    names = option_names(command)
    plain = [f"`{n}`" for n in names if n not in MEDIA_FLAGS]
    if MEDIA_FLAGS <= set(names):
        plain.append("media options")
    return ", ".join(plain) or "—"


def markdown(app: typer.Typer) -> str:
    """The command reference table (Markdown) of the whole app."""
    root = typer.main.get_command(app)
    rows = ["| command | reads | writes | arguments and options |", "|---|---|---|---|"]
    for name, command in commands(root):  # type: ignore[arg-type]
        reads, writes = IO[name]
        usage = " ".join([f"`videor1 {name}`", *arguments(command)])
        rows.append(f"| {usage} | {reads} | {writes} | {_options_cell(command)} |")
    media = ", ".join(f"`{flag}`" for flag in sorted(MEDIA_FLAGS))
    rows += ["", f"Media options, the same names and help in every command that decodes media: {media}. Their "
             "defaults are the paper's inference budgets (16 frames of at most 256·28·28 pixels) in eval, infer, "
             "serve and annotate, and the training budgets (128·28·28) in data validate and data prepare, which "
             "check that the media decodes; each command's --help shows its own."]
    return "\n".join(rows)


def replace_block(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return f"{text[:start]}\n{block}\n{text[end:]}"


def main(argv: list[str] | None = None) -> Any:
    """Print the table, or with --write put it into README.md."""
    from videor1.cli import app

    block = markdown(app)
    args = sys.argv[1:] if argv is None else argv
    if "--write" in args:
        readme = Path(__file__).resolve().parents[2] / "README.md"
        readme.write_text(replace_block(readme.read_text(encoding="utf-8"), block), encoding="utf-8")
    else:
        print(block)


if __name__ == "__main__":
    main()
