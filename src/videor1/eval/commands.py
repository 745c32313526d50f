"""The `videor1 eval` command group (run, `score`, `table`) and `videor1 infer`; `register` adds them to the app.

Only flags the user gives reach the config: every default lives on `EvalConfig` (its decoding and vllm sections)
or `MediaConfig`, and each option's help is its field's description with that default, as `serve`'s are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from videor1.cli_options import TorchThreads, config_option, described, media_options, or_default, stage_media
from videor1.config import inference_media
from videor1.config_errors import validation_message
from videor1.eval.config import BenchmarkRun, DecodingConfig, Engine, EvalConfig, EvalVLLMOptions
from videor1.progress import PlainLines, count_columns, is_interactive

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

_VLLM = "vLLM engine (--engine vllm)"
_eval_opt = config_option(EvalConfig)
_decoding_opt = config_option(DecodingConfig)
_vllm_opt = config_option(EvalVLLMOptions)

# the run options `eval` and `eval run` share
Overwrite = Annotated[bool, typer.Option("--overwrite", help="discard these benchmarks' predictions")]
RetryFailed = Annotated[bool, typer.Option("--retry-failed", help="generate failed samples again")]
Strict = Annotated[bool, typer.Option("--strict", help="stop on any invalid row instead of recording it as failed")]
EnforceEager = Annotated[
    bool, typer.Option("--enforce-eager", help=described(EvalVLLMOptions, "enforce_eager"), rich_help_panel=_VLLM)
]

eval_app = typer.Typer(
    help="Evaluate a model on video benchmarks (VSI-Bench, VideoMMMU, MMVU, MVBench, TempCompass, VideoMME).",
    invoke_without_command=True,
)


def register(app: typer.Typer) -> None:
    """Add the `eval` group and the `infer` command to the main app."""
    app.add_typer(eval_app, name="eval")
    app.command("infer")(infer)


def _per_bench(name: str, how: str) -> Any:
    """The option of a `BenchmarkRun` field, which --bench it belongs to told by `how`."""
    return typer.Option(help=f"{BenchmarkRun.model_fields[name].description}; {how}")


def _split(values: list[Any] | None) -> list[str]:
    """Repeated options and comma lists, flattened: ["a,b", "c"] -> ["a", "b", "c"]."""
    return [part.strip() for value in values or [] for part in str(value).split(",") if part.strip()]


def _per_benchmark(option: str, values: list[str], benches: list[str]) -> list[str | None]:
    """One value per benchmark: one value per bench in order, one value for all, or NAME=VALUE pairs."""
    if not values:
        return [None] * len(benches)
    if all("=" in v for v in values):
        from videor1.eval.benchmarks import get_benchmark

        named = {get_benchmark(k).key: v for k, v in (item.split("=", 1) for item in values)}
        return [named.get(get_benchmark(b).key) for b in benches]
    if len(values) == 1:
        return values * len(benches)
    if len(values) != len(benches):
        raise ValueError(f"give one {option} for all benchmarks or one per --bench ({len(benches)})")
    return values


def _vllm_options(enforce_eager: bool, gpu_memory_utilization: float | None,
                  max_model_len: int | None) -> dict[str, Any] | None:
    """EvalVLLMOptions fields from the flags given; None when none was."""
    given = {"enforce_eager": enforce_eager or None, "gpu_memory_utilization": gpu_memory_utilization,
             "max_model_len": max_model_len}
    return {k: v for k, v in given.items() if v is not None} or None


def _decoding(**given: Any) -> dict[str, Any]:
    """DecodingConfig fields from the flags given."""
    return {k: v for k, v in given.items() if v is not None}


@contextmanager
def _bench_progress() -> Iterator[Any]:
    """A rich bar per benchmark with done/total, elapsed time and ETA, or plain lines off a terminal."""
    if not is_interactive(err_console):
        lines: dict[str, PlainLines] = {}

        def line(bench: str, done: int, total: int) -> None:
            # a resumed benchmark starts where it stopped: rate and ETA cover what this run generates
            tracker = lines.setdefault(bench, PlainLines(total, start=done))
            tracker.total = total
            if tracker.due(done):
                err_console.print(f"{bench}: {tracker.head(done)} · {tracker.timing(done, 'sample')}",
                                  markup=False, highlight=False, soft_wrap=True)

        yield line
        return
    with Progress(*count_columns(), console=err_console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def update(bench: str, done: int, total: int) -> None:
            if bench not in tasks:
                # ETA counts only what this run generates, not what a resumed run skipped
                tasks[bench] = progress.add_task(bench, total=total, completed=done)
            progress.update(tasks[bench], completed=done, total=total)

        yield update


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(code)


def _benchmark_names() -> list[str]:
    from videor1.eval.benchmarks import BENCHMARKS

    return sorted(BENCHMARKS)


@eval_app.callback()
@media_options(inference_media)
def evaluate(
    ctx: typer.Context,
    model: Annotated[str | None, _eval_opt("model")] = None,
    bench: Annotated[list[str] | None, _per_bench("name", "repeat or comma-separate")] = None,
    data: Annotated[list[str] | None, _per_bench("data", "one per --bench")] = None,
    media_root: Annotated[list[str] | None, _per_bench("media_root", "one for all, or one per --bench")] = None,
    category_field: Annotated[list[str] | None, _per_bench("category_field", "FIELD, or BENCH=FIELD")] = None,
    batch_size: Annotated[int | None, _eval_opt("batch_size")] = None,
    temperature: Annotated[float | None, _decoding_opt("temperature")] = None,
    top_p: Annotated[float | None, _decoding_opt("top_p")] = None,
    top_k: Annotated[int | None, _decoding_opt("top_k")] = None,
    repetition_penalty: Annotated[float | None, _decoding_opt("repetition_penalty")] = None,
    max_new_tokens: Annotated[int | None, _decoding_opt("max_new_tokens")] = None,
    seed: Annotated[int | None, _decoding_opt("seed")] = None,
    dtype: Annotated[str | None, _eval_opt("dtype")] = None,
    device: Annotated[str | None, _eval_opt("device")] = None,
    attn_implementation: Annotated[str | None, _eval_opt("attn_implementation")] = None,
    system_prompt: Annotated[str | None, _eval_opt("system_prompt")] = None,
    engine: Annotated[str | None, _eval_opt("engine")] = None,
    enforce_eager: EnforceEager = False,
    gpu_memory_utilization: Annotated[float | None, _vllm_opt("gpu_memory_utilization", _VLLM)] = None,
    max_model_len: Annotated[int | None, _vllm_opt("max_model_len", _VLLM)] = None,
    label: Annotated[str | None, _eval_opt("label")] = None,
    limit: Annotated[int | None, _eval_opt("limit")] = None,
    out: Annotated[str | None, _eval_opt("out")] = None,
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    strict: Strict = False,
    torch_threads: TorchThreads = None,
    *,
    media: dict,
) -> None:
    """Evaluate a model: --model PATH --bench NAME --data FILE --media-root DIR [--bench … --data …]."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None and not bench:
        console.print(ctx.get_help())
        raise _fail("give --model and --bench (with --data and --media-root), or a subcommand: run, score, table")
    if model is None:
        raise _fail("--model is required: the model folder or hub id to evaluate")
    if not bench:
        raise _fail("--bench is required: a benchmark name (" + ", ".join(_benchmark_names()) + ")")
    names, files = _split(bench), _split(data)
    if len(files) != len(names):
        raise _fail(f"give one --data per --bench: {len(names)} benchmarks, {len(files)} files")
    try:
        roots = _per_benchmark("--media-root", _split(media_root), names)
        fields = _per_benchmark("--category-field", _split(category_field), names)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    if any(root is None for root in roots):
        raise _fail("give --media-root (one for all benchmarks, or one per --bench)")
    settings = {
        "model": model, "label": label, "dtype": dtype, "device": device, "attn_implementation": attn_implementation,
        "engine": engine, "vllm": _vllm_options(enforce_eager, gpu_memory_utilization, max_model_len),
        "batch_size": batch_size, "system_prompt": system_prompt, "limit": limit, "out": out,
        "media": stage_media(inference_media(), media),
        "decoding": _decoding(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                              repetition_penalty=repetition_penalty, max_new_tokens=max_new_tokens),
        "benchmarks": [{"name": n, "data": d, "media_root": r, "category_field": f}
                       for n, d, r, f in zip(names, files, roots, fields, strict=True)],
    }
    try:
        cfg = EvalConfig.model_validate({k: v for k, v in settings.items() if v is not None})
    except ValidationError as exc:
        raise _fail(validation_message(exc)) from exc
    _run(cfg, overwrite=overwrite, retry_failed=retry_failed, strict=strict, torch_threads=torch_threads)


def _run(cfg: Any, *, overwrite: bool, retry_failed: bool, strict: bool, torch_threads: int | None) -> None:
    """Evaluate, with a bar per benchmark; print the table and where results.json went."""
    from videor1.data.dataset import DatasetError
    from videor1.eval.report import combined_markdown
    from videor1.eval.runner import EvalError, run_eval
    from videor1.models.load import set_torch_threads

    set_torch_threads(torch_threads)
    try:
        with _bench_progress() as progress:
            results = run_eval(cfg, overwrite=overwrite, retry_failed=retry_failed, strict=strict, progress=progress)
    except (EvalError, DatasetError) as exc:
        raise _fail(str(exc)) from exc
    console.print(combined_markdown(results), markup=False, highlight=False)
    console.print(f"wrote {Path(cfg.out) / 'results.json'}", markup=False, highlight=False)


@eval_app.command("run")
def run_config(
    config: Annotated[Path, typer.Argument(help="an eval YAML config (model, benchmarks, media, decoding, ...)")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="dotted key=value overrides, e.g. decoding.temperature=0 limit=50")
    ] = None,
    overwrite: Overwrite = False,
    retry_failed: RetryFailed = False,
    strict: Strict = False,
    torch_threads: TorchThreads = None,
) -> None:
    """Evaluate from a YAML config with key=value overrides, as `videor1 train` takes its config."""
    from videor1.config import load_config

    cfg = load_config(EvalConfig, config, overrides or [])  # a bad key or value: one line, exit 2
    _run(cfg, overwrite=overwrite, retry_failed=retry_failed, strict=strict, torch_threads=torch_threads)


@eval_app.command("score")
def score(
    outputs: Annotated[
        Path, typer.Argument(help="predictions.jsonl of an earlier run, or a Video-R1 eval_bench.py output")
    ],
    bench: Annotated[str, typer.Option(help="benchmark the outputs belong to")],
    category_field: Annotated[str | None, typer.Option(help="category column of Video-R1 rows")] = None,
    label: Annotated[str | None, typer.Option(help="row name in `eval table` (default: the --out folder)")] = None,
    out: Annotated[Path | None, typer.Option(help="write results under OUT/<bench>/ and OUT/results.json")] = None,
) -> None:
    """Rescore outputs without a model; prints the benchmark's results.json to stdout, the tables to stderr.

    A Video-R1 output (`{"results": [...], "final_acc": [...]}`, or JSONL of its rows) is also compared
    with the file's own scores: both numbers, and how many rows differ and why.
    """
    from videor1.eval.benchmarks import get_benchmark
    from videor1.eval.report import benchmark_markdown, comparison_markdown
    from videor1.eval.rescore import rescore_file, write_rescored
    from videor1.eval.video_r1_outputs import OutputFileError

    try:
        rescored = rescore_file(outputs, get_benchmark(bench), category_field)
        if out is not None:
            write_rescored(out, outputs, rescored, label=label)
    except (OutputFileError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    summary = rescored.summary
    typer.echo(json.dumps(summary, indent=1))
    err_console.print(benchmark_markdown(summary), markup=False, highlight=False)
    if "original" in summary:
        err_console.print(comparison_markdown(summary["original"]), markup=False, highlight=False)


@eval_app.command("table")
def table(runs: Annotated[list[Path], typer.Argument(help="eval output folders (or their results.json)")]) -> None:
    """Print Table 1 (Markdown) with one row per evaluated run."""
    from videor1.eval.report import table_from_runs

    try:
        typer.echo(table_from_runs(runs), nl=False)
    except (OSError, ValueError, KeyError) as exc:
        raise _fail(str(exc)) from exc


@media_options(inference_media)
def infer(
    question: Annotated[str, typer.Argument(help="the question; lettered option lines (A. …) may follow it")],
    model: Annotated[str, _eval_opt("model")],
    video: Annotated[Path | None, typer.Option(help="a video file")] = None,
    image: Annotated[Path | None, typer.Option(help="an image file")] = None,
    option: Annotated[list[str] | None, typer.Option(help="an answer option; repeat for each")] = None,
    problem_type: Annotated[str, typer.Option("--type", help="answer type without options")] = "free-form",
    temperature: Annotated[float | None, _decoding_opt("temperature")] = None,
    top_p: Annotated[float | None, _decoding_opt("top_p")] = None,
    max_new_tokens: Annotated[int | None, _decoding_opt("max_new_tokens")] = None,
    dtype: Annotated[str | None, _eval_opt("dtype")] = None,
    device: Annotated[str | None, _eval_opt("device")] = None,
    engine: Annotated[str | None, _eval_opt("engine")] = None,
    enforce_eager: EnforceEager = False,
    torch_threads: TorchThreads = None,
    *,
    media: dict,
) -> None:
    """Answer one question about a video or an image; prints the reasoning and the answer."""
    from videor1.config import MediaConfig
    from videor1.eval.infer import InferError, answer_question, build_sample
    from videor1.eval.runner import EvalError, load_generator, vllm_missing

    dtype, engine = or_default(EvalConfig, "dtype", dtype), or_default(EvalConfig, "engine", engine)
    if (video is None) == (image is None):
        raise _fail("give exactly one of --video or --image")
    if engine not in get_args(Engine):
        raise _fail(f"--engine must be hf or vllm, got {engine!r}")
    if engine == "vllm" and (missing := vllm_missing()) is not None:
        raise _fail(missing)
    if engine == "vllm" and device is not None:
        raise _fail("--device applies to the hf engine only; vLLM picks its own (CUDA_VISIBLE_DEVICES)")
    try:
        media_config = MediaConfig.model_validate(stage_media(inference_media(), media))
        decoding = DecodingConfig.model_validate(
            _decoding(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        )
        sample = build_sample(video or image, "video" if video else "image", question, _split_options(option),
                              problem_type)
    except ValidationError as exc:
        raise _fail(validation_message(exc)) from exc
    except InferError as exc:
        raise _fail(str(exc)) from exc
    from videor1.models.load import set_torch_threads

    set_torch_threads(torch_threads)
    try:
        with load_generator(model, engine, dtype=dtype, seed=decoding.seed, device=device,
                            vllm=EvalVLLMOptions(enforce_eager=enforce_eager)) as (loaded, processor):
            result = answer_question(loaded, processor, sample, media_config, **decoding.model_dump(exclude={"seed"}))
    except EvalError as exc:
        raise _fail(str(exc)) from exc
    except InferError as exc:
        raise _fail(str(exc), code=1) from exc
    console.print("[bold]Reasoning:[/bold]")
    console.print(result.reasoning or "(none)", markup=False, highlight=False)
    answer = result.answer if result.answer is not None else "(no answer found)"
    if result.option:
        answer = f"{answer}. {result.option}"
    console.print("[bold]Answer:[/bold] ", end="")
    console.print(answer, markup=False, highlight=False)


def _split_options(options: list[str] | None) -> list[str]:
    """--option values as given (an option may itself contain commas, so no comma splitting here)."""
    return [o.strip() for o in options or [] if o.strip()]
