"""The `videor1` command line: one sub-command per pipeline stage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from videor1.cli_errors import FriendlyGroup
from videor1.cli_options import TorchThreads, media_options, stage_media
from videor1.config import MediaConfig
from videor1.eval.commands import register as register_eval
from videor1.export import register as register_export
from videor1.serve.commands import register as register_serve

if TYPE_CHECKING:  # the data layer pulls in torch; commands import what they need when they run
    from videor1.data.dataset import LoadedDataset

app = typer.Typer(
    help="videor1: teach multimodal LLMs to reason over video (Video-R1, T-GRPO).", no_args_is_help=True,
    cls=FriendlyGroup,
)
data_app = typer.Typer(help="Validate, inspect and synthesize Video-R1-format datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Build tiny offline models for tests and demos.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="show the Python traceback of an input error")] = False,
) -> None:
    """videor1: teach multimodal LLMs to reason over video (Video-R1, T-GRPO)."""


def _progress(description: str):
    """A done/total progress bar on stderr."""
    from videor1.progress import count_progress

    return count_progress(description, err_console)


def _counts_table(title: str, counts: Counter[str]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split(" by ")[-1])
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    total = sum(counts.values()) or 1
    for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(key, str(count), f"{100 * count / total:.1f}%")
    return table


def _print_distribution(dataset: LoadedDataset) -> None:
    console.print(
        f"{dataset.source}: {dataset.num_rows} rows, {len(dataset.samples)} valid, {dataset.bad_rows} with problems"
    )
    for key in ("data_type", "problem_type", "data_source"):
        console.print(_counts_table(f"valid rows by {key}", dataset.counts(key)))
    cross = Table(title="data_type x problem_type", title_justify="left")
    cross.add_column("problem_type")
    data_types = sorted(dataset.counts("data_type"))
    for data_type in data_types:
        cross.add_column(data_type, justify="right")
    pairs = Counter((s.problem_type, s.data_type) for s in dataset.samples)
    for problem_type in sorted({p for p, _ in pairs}):
        cross.add_row(problem_type, *(str(pairs[(problem_type, d)]) for d in data_types))
    console.print(cross)


@data_app.command("validate")
@media_options(MediaConfig)
def data_validate(
    file: Annotated[Path, typer.Argument(help="JSON, JSONL, parquet or a datasets folder")],
    media_root: Annotated[Path, typer.Option(help="folder the rows' paths are relative to")],
    check_media: Annotated[
        bool, typer.Option("--check-media", help="decode every image and video (with the training media settings)")
    ] = False,
    require_process: Annotated[bool, typer.Option(help="rows must carry a <think> rationale (SFT data)")] = False,
    benchmark: Annotated[
        bool, typer.Option("--benchmark", help="validate as an evaluation file (options may be a bare letter)")
    ] = False,
    *,
    media: dict,
) -> None:
    """Check every row (and with --check-media every file); exit 1 when anything is bad."""
    from videor1.data.dataset import DatasetError
    from videor1.data.validate import validate

    media_config = MediaConfig.model_validate(stage_media(MediaConfig(), media))  # bad values: FriendlyGroup's line
    rules = {"require_process": require_process, "benchmark": benchmark}
    try:
        if check_media:
            with _progress("decoding media") as progress:
                report = validate(file, media_root, check=True, media=media_config, progress=progress, **rules)
        else:
            report = validate(file, media_root, **rules)
    except DatasetError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _print_distribution(report.dataset)
    for problem in report.dataset.problems:
        console.print(str(problem), markup=False, highlight=False)
    for problem in report.media_problems:
        console.print(str(problem), markup=False, highlight=False)
    summary = f"{report.dataset.bad_rows} bad rows"
    if check_media:
        summary += f", {len(report.media_problems)} bad media files of {report.media_checked} checked"
    console.print(("[green]OK[/green]: " if report.ok else "[red]FAILED[/red]: ") + summary)
    raise typer.Exit(0 if report.ok else 1)


@data_app.command("stats")
def data_stats(file: Annotated[Path, typer.Argument(help="JSON, JSONL, parquet or a datasets folder")]) -> None:
    """Print the distribution of a dataset by data_type, problem_type and data_source."""
    from videor1.data.dataset import DatasetError, load_dataset

    try:
        dataset = load_dataset(file, file.parent if file.is_file() else file)
    except DatasetError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    _print_distribution(dataset)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="output folder")],
    n: Annotated[int, typer.Option(help="training rows")] = 200,
    n_test: Annotated[int | None, typer.Option(help="test rows (default n/4)")] = None,
    seed: Annotated[int, typer.Option(help="random seed; the same seed writes the same data")] = 0,
    size: Annotated[int, typer.Option(help="frame and image side in pixels")] = 112,
    rationale: Annotated[
        str, typer.Option(help="process text: detailed (positions, times) or brief (one short sentence)")
    ] = "detailed",
) -> None:
    """Write a synthetic Video-R1-format dataset with real mp4 videos and PNG images."""
    from videor1.data.synthetic import RATIONALES, generate

    if rationale not in RATIONALES:
        err_console.print(f"[red]error:[/red] unknown rationale {rationale!r}; expected one of {', '.join(RATIONALES)}")
        raise typer.Exit(2)
    with _progress("synthesizing") as progress:
        summary = generate(out, n=n, n_test=n_test, seed=seed, size=size, rationale=rationale, progress=progress)
    console.print(f"wrote {summary.train_json} and {summary.test_json}")


@data_app.command("fetch")
def data_fetch(
    names: Annotated[list[str] | None, typer.Argument(help="registry names; --list shows them")] = None,
    to: Annotated[Path | None, typer.Option("--to", help="folder; each name lands in TO/NAME")] = None,
    subset: Annotated[
        list[str] | None, typer.Option("--subset", help="only this named part of each name (repeatable)")
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="also files matching this pattern (repeatable); alone: only these files"),
    ] = None,
    revision: Annotated[str | None, typer.Option(help="branch, tag or commit instead of the registry's")] = None,
    repo: Annotated[str | None, typer.Option(help="hub repo id instead of the registry's (a mirror)")] = None,
    token: Annotated[str | None, typer.Option(help="hub token; default: HF_TOKEN or the saved login")] = None,
    workers: Annotated[int, typer.Option(min=1, help="files downloaded at once")] = 8,
    list_sources: Annotated[bool, typer.Option("--list", help="print the registry and exit")] = False,
) -> None:
    """Download datasets from the Hugging Face hub into TO/NAME; a rerun resumes, offline it only verifies."""
    from videor1.data.fetch import FetchError, FetchInputError, fetch, select
    from videor1.data.sources import SOURCES

    def bad_input(message: str) -> typer.Exit:
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        return typer.Exit(2)

    if list_sources:
        table = Table(title="videor1 data fetch NAME --to DIR", title_justify="left")
        for column in ("name", "hub repo", "revision", "size", "gated", "subsets"):
            table.add_column(column, no_wrap=column in ("name", "hub repo", "revision"))
        for source in SOURCES.values():
            revision_shown = source.revision[:7] if len(source.revision) == 40 else source.revision
            table.add_row(
                source.name, source.repo_id, revision_shown, source.size, "yes" if source.gated else "no",
                ", ".join(source.subsets),
            )
        console.print(table)
        return
    if not names:
        raise bad_input(f"name a dataset to fetch: {', '.join(SOURCES)} (--list describes them)")
    if to is None:
        raise bad_input("--to DIR is required: each name is fetched into DIR/NAME")
    if len(names) > 1 and (revision or repo):
        raise bad_input("--revision and --repo apply to one name; fetch the others in their own command")
    try:
        for name in names:  # every name and subset is checked before anything is downloaded
            select(name, subset, include)
    except FetchInputError as exc:
        raise bad_input(str(exc)) from exc
    failed = 0
    for name in names:
        try:
            result = fetch(
                name, to, subset=subset, allow_patterns=include, revision=revision, repo_id=repo, token=token,
                workers=workers, console=err_console,
            )
        except FetchInputError as exc:
            raise bad_input(str(exc)) from exc
        except FetchError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            failed += 1
            continue
        console.print(
            f"{result.name}: {len(result.files)} files of {result.repo_id}@{result.commit[:7]} in "
            f"{result.local_dir} ({result.downloaded} downloaded now); manifest {result.manifest}",
            markup=False, highlight=False,
        )
    if failed:
        raise typer.Exit(1)


@data_app.command("prepare")
@media_options(MediaConfig)
def data_prepare(
    folder: Annotated[Path, typer.Argument(help="the folder `data fetch` wrote (or one set folder in it)")],
    only: Annotated[list[str] | None, typer.Option("--only", help="prepare only this set (repeatable)")] = None,
    max_unpacked_bytes: Annotated[
        int, typer.Option(min=1, help="most bytes one archive may unpack (2**40: 1 TiB)")
    ] = 1 << 40,
    max_members: Annotated[int, typer.Option(min=1, help="most members one archive may hold")] = 2_000_000,
    max_ratio: Annotated[
        float, typer.Option(min=0, help="most a member may be compressed, unpacked:packed (0: no limit)")
    ] = 100.0,
    check_media: Annotated[
        bool, typer.Option("--check-media/--no-check-media", help="decode every media file (else only look for it)")
    ] = True,
    *,
    media: dict,
) -> None:
    """Unpack fetched releases safely, convert the benchmarks to evaluation files, validate everything."""
    from videor1.data.archives import ArchiveError, Limits
    from videor1.data.prepare import PrepareError, prepare

    limits = Limits(max_unpacked_bytes=max_unpacked_bytes, max_members=max_members, max_ratio=max_ratio)
    media_config = MediaConfig.model_validate(stage_media(MediaConfig(), media))  # bad values: FriendlyGroup's line
    try:
        summary = prepare(
            folder, only=only, limits=limits, check_media=check_media, media=media_config, progress=_progress,
            say=lambda line: err_console.print(line, markup=False, highlight=False),
        )
    except (PrepareError, ArchiveError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)  # paths may hold [..]
        raise typer.Exit(2) from exc
    for entry in summary.sets:
        media = f"media {entry.media_found} found, {entry.media_missing} missing"
        if check_media:
            media += f", {entry.media_bad} bad of {entry.media_checked} decoded"
        console.print(
            f"{entry.name}: {entry.rows} rows, {entry.valid_rows} valid, {entry.bad_rows} bad, "
            f"{entry.issues} conversion issues; {media}", markup=False, highlight=False,
        )
        by = "category" if entry.kind == "benchmark" else "data_source"
        console.print(_counts_table(f"{entry.name} rows by {by}", Counter(entry.by_category)))
        if entry.video_r1:
            v = entry.video_r1
            console.print(
                f"{entry.name} vs Video-R1's eval file: {v['paired']} paired, {v['only_ours']} only here, "
                f"{v['only_video_r1']} only there, differences {v['differences']}", markup=False, highlight=False,
            )
        for line in entry.problems:
            console.print(line, markup=False, highlight=False)
        if entry.problem_count > len(entry.problems):
            console.print(
                f"... {entry.problem_count} problems in all: {entry.folder}/prepare_problems.txt",
                markup=False, highlight=False,
            )
    verdict = "[green]OK[/green]" if summary.ok else "[red]FAILED[/red]"
    console.print(f"{verdict}: wrote {escape(str(folder / 'prepare.json'))}", highlight=False)
    raise typer.Exit(0 if summary.ok else 1)


@models_app.command("tiny")
def models_tiny(
    out: Annotated[Path, typer.Argument(help="output folder")],
    family: Annotated[str, typer.Option(help="qwen2_vl, qwen2_5_vl or qwen3_vl")] = "qwen2_5_vl",
    corpus: Annotated[Path | None, typer.Option(help="a dataset file whose texts train the tokenizer")] = None,
    seed: Annotated[int, typer.Option(help="initialisation seed")] = 0,
) -> None:
    """Build a tiny random-initialised model with a locally trained tokenizer and save it."""
    from videor1.models.tiny import FAMILIES, build_tiny, dataset_corpus

    if family not in FAMILIES:
        err_console.print(f"[red]error:[/red] unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
        raise typer.Exit(2)
    texts = dataset_corpus(corpus) if corpus is not None else []
    path = build_tiny(out, family=family, corpus=texts, seed=seed)  # type: ignore[arg-type]
    console.print(f"wrote a tiny {family} model to {path}")


def _run_recipe(kind: str, config: Path, overrides: list[str] | None, resume: bool, overwrite: bool) -> None:
    """Load a typed config with overrides and run the train or sft recipe; input errors end as one line (exit 2),
    a run stopped on its data or by a diverged loss as one line (exit 1)."""
    import os
    import sys

    from videor1.config import ConfigError, SFTConfig, TrainConfig, load_config
    from videor1.data.failures import TooManyFailures

    # like `python -m`: reward functions given as `module:function` may live in the working directory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        cfg = load_config(TrainConfig if kind == "train" else SFTConfig, config, overrides or [])
    except ConfigError as exc:
        err_console.print(f"[red]config error:[/red] {escape(str(exc))}")  # values may hold [..]: not markup
        raise typer.Exit(2) from exc
    if kind == "train":
        from videor1.rl.trainer import GRPOTrainer as Recipe
    else:
        from videor1.sft.trainer import SFTTrainer as Recipe
    from videor1.distributed import abandon, shutdown
    from videor1.recipe import TrainingDiverged

    try:
        trainer = Recipe(cfg, resume=resume, overwrite=overwrite)  # type: ignore[arg-type]
        final = trainer.train()
    except (TooManyFailures, TrainingDiverged) as exc:  # the run stopped on its data or its loss: exit 1, named
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)  # paths may hold [..]
        abandon()
        raise typer.Exit(1) from exc
    except BaseException:
        abandon()
        raise
    accelerator = trainer.accelerator
    del trainer  # its DDP-wrapped model holds the process group, which shutdown must be able to destroy
    shutdown(accelerator)
    console.print(f"done: {final}")


ConfigArg = Annotated[Path, typer.Argument(help="YAML config, e.g. configs/tgrpo_tiny.yaml or configs/sft_tiny.yaml")]
OverridesArg = Annotated[list[str] | None, typer.Argument(help="dotted key=value overrides")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="continue from the latest checkpoint in output_dir")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="start again in an output_dir that holds another run: its checkpoints and logs are deleted"
)]


@app.command("train")
def train(
    config: ConfigArg, overrides: OverridesArg = None, resume: ResumeOpt = False, overwrite: OverwriteOpt = False
) -> None:
    """Run GRPO or T-GRPO (algorithm.temporal) on a Video-R1-format dataset."""
    _run_recipe("train", config, overrides, resume, overwrite)


@app.command("sft")
def sft(
    config: ConfigArg, overrides: OverridesArg = None, resume: ResumeOpt = False, overwrite: OverwriteOpt = False
) -> None:
    """Supervised fine-tuning on CoT data (process + solution) with assistant-only loss."""
    _run_recipe("sft", config, overrides, resume, overwrite)


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="output folder for data, model, runs and results")] = Path("runs/demo"),
    seed: Annotated[int, typer.Option(help="one seed for data, model and training")] = 0,
    torch_threads: TorchThreads = None,
) -> None:
    """The whole pipeline offline on the CPU: data, tiny model, eval, SFT, T-GRPO vs GRPO, eval, plots."""
    from videor1.demo import run_demo
    from videor1.models.load import set_torch_threads

    set_torch_threads(torch_threads)  # the whole demo runs in this process

    run_demo(out, seed=seed, say=lambda line: console.print(line, markup=False, highlight=False))


study_app = typer.Typer(help="Controlled studies on tiny models, reproducible by one command.",
                        no_args_is_help=True)
app.add_typer(study_app, name="study")


@study_app.command("temporal")
def study_temporal(
    out: Annotated[Path, typer.Option(help="output folder for data, model, runs and results")] = Path("runs/study"),
    seed: Annotated[int, typer.Option(help="seed of the data, the model and the SFT cold start")] = 0,
    seeds: Annotated[str, typer.Option(help="RL seeds, comma-separated")] = "0,1,2",
    methods: Annotated[str, typer.Option(help="comma-separated: GRPO, T-GRPO, T-GRPO joint, T-GRPO ema_std")] = (
        "GRPO,T-GRPO,T-GRPO joint,T-GRPO ema_std"),
    rl_steps: Annotated[int, typer.Option(help="RL steps of every run")] = 150,
    sft_steps: Annotated[int, typer.Option(help="SFT cold-start steps")] = 600,
    n_test: Annotated[int, typer.Option(help="questions per held-out split")] = 200,
    shortcut_fraction: Annotated[float, typer.Option(help="share of training questions one frame answers")] = 0.8,
    cue: Annotated[str, typer.Option(help="the static cue of those questions: position or colour")] = "position",
    sft_shortcut_fraction: Annotated[
        float, typer.Option(help="share of the SFT questions one frame answers (the rest order-only)")
    ] = 1.0,
    rl_lr: Annotated[float, typer.Option(help="RL learning rate (cosine schedule)")] = 1e-4,
    torch_threads: TorchThreads = None,
) -> None:
    """GRPO, T-GRPO and its formulations from one SFT model, several seeds, on a task with a static shortcut."""
    from dataclasses import replace

    from videor1.data.synthetic.study import CUES
    from videor1.models.load import set_torch_threads
    from videor1.study import StudySettings, run_temporal_study

    if cue not in CUES:
        err_console.print(f"[red]error:[/red] --cue must be one of {', '.join(CUES)}, got {cue!r}")
        raise typer.Exit(2)
    set_torch_threads(torch_threads)
    settings = StudySettings(
        n_test=n_test, shortcut_fraction=shortcut_fraction, cue=cue, sft_shortcut_fraction=sft_shortcut_fraction,
        seeds=[int(part) for part in seeds.split(",") if part.strip()],
        methods=[part.strip() for part in methods.split(",") if part.strip()],
    )
    settings.training = replace(settings.training, rl_steps=rl_steps, sft_steps=sft_steps, rl_lr=rl_lr)
    run_temporal_study(out, seed=seed, settings=settings,
                       say=lambda line: console.print(line, markup=False, highlight=False))


@app.command("plot")
def plot(run_dir: Annotated[Path, typer.Argument(help="a videor1 run directory (holds metrics.jsonl)")]) -> None:
    """Draw a run's training curves (accuracy reward, temporal-reward rate, length, KL) as PNG."""
    from videor1.plot import plot_run

    try:
        paths = plot_run(run_dir)
    except FileNotFoundError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for path in paths:
        console.print(str(path))


register_eval(app)
register_export(app)
register_serve(app)

if __name__ == "__main__":
    app()
