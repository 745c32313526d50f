"""`videor1 annotate`: settings from the command line, teacher set-up, progress bar, log; the loop is runner.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from videor1.annotate.config import AnnotateConfig
from videor1.atomic import atomic_write_text
from videor1.cli_options import build_config, config_option, described, media_options, stage_media
from videor1.config import inference_media
from videor1.progress import PlainLines, is_interactive

if TYPE_CHECKING:  # the runner and teachers import torch and transformers: only when a command runs
    from videor1.annotate.runner import AnnotateSummary
    from videor1.annotate.teacher import Teacher

_FILTER, _HTTP, _LOCAL = "Filtering", "Endpoint teacher", "Local teacher"
err_console = Console(stderr=True, soft_wrap=True)


_opt = config_option(AnnotateConfig)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[AnnotateSummary], None]]:
    if not is_interactive(err_console):  # a log or a pipe: plain lines, as a bar would show nothing until the end
        lines = PlainLines(total)

        def line(summary: AnnotateSummary) -> None:
            done = summary.already_done + summary.attempted
            if lines.due(done):
                err_console.print(
                    f"annotate: {lines.head(done)} · kept {summary.kept} rejected {summary.rejected} failed "
                    f"{summary.failed} · {lines.timing(done, 'question')}", markup=False, highlight=False,
                    soft_wrap=True,
                )

        yield line
        return
    columns = (
        TextColumn("[bold]annotate"), BarColumn(), MofNCompleteColumn(),
        TextColumn("kept {task.fields[kept]}  rejected {task.fields[rejected]}  failed {task.fields[failed]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        task = progress.add_task("annotate", total=total, kept=0, rejected=0, failed=0)

        def update(summary: AnnotateSummary) -> None:
            progress.update(task, completed=summary.already_done + summary.attempted, kept=summary.kept,
                            rejected=summary.rejected, failed=summary.failed)

        yield update


def _file_logger(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("videor1.annotate")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # per-question warnings go to the log file, not through the progress bar
    logger.addHandler(handler)
    return handler


def _length_counter(cfg: AnnotateConfig) -> Callable[[str], int]:
    if cfg.length_unit == "chars":
        return len
    source = cfg.tokenizer or cfg.teacher
    if source is None:
        typer.echo("error: --length-unit tokens with --endpoint needs --tokenizer PATH", err=True)
        raise typer.Exit(2)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_teacher(cfg: AnnotateConfig) -> Teacher:
    """The local or endpoint teacher the settings name."""
    from videor1.models.generation import SamplingParams

    params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
    if cfg.endpoint is not None:
        from videor1.annotate.client import ChatClient
        from videor1.annotate.teacher import HTTPTeacher

        client = ChatClient(
            cfg.endpoint, cfg.teacher_name or "", api_key=cfg.api_key, timeout_s=cfg.request_timeout_s,
            max_retries=cfg.max_retries, backoff_s=cfg.retry_backoff_s, max_reply_bytes=cfg.max_reply_bytes,
        )
        return HTTPTeacher(client, params, samples_per_question=cfg.samples_per_question,
                           concurrency=cfg.concurrency, media_as=cfg.media_as, system_prompt=cfg.system_prompt)
    from videor1.annotate.teacher import LocalTeacher
    from videor1.devices import pick_device
    from videor1.models.load import load_model, load_processor, set_torch_threads

    set_torch_threads(cfg.torch_threads)
    model = load_model(cfg.teacher, dtype=cfg.dtype, device=pick_device(cfg.device))
    return LocalTeacher(model, load_processor(cfg.teacher), cfg.media, params,
                        samples_per_question=cfg.samples_per_question, batch_size=cfg.batch_size,
                        system_prompt=cfg.system_prompt)


def run(cfg: AnnotateConfig) -> AnnotateSummary:
    """Load the data, write settings and log next to --out, annotate, report; exits 2 on a fatal teacher error."""
    from videor1.annotate.client import FatalError
    from videor1.annotate.filter import FilterRules
    from videor1.annotate.runner import annotate
    from videor1.annotate.store import AnnotationStore
    from videor1.data.dataset import DatasetError, load_dataset

    store = AnnotationStore(cfg.out)
    store.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(store.config_path, yaml.safe_dump(cfg.public_dump(), sort_keys=False))
    handler = _file_logger(store.log_path)
    logger = logging.getLogger("videor1.annotate")
    try:
        logger.info("settings: %s", json.dumps(cfg.public_dump()))
        try:
            dataset = load_dataset(cfg.data, cfg.media_root)
        except DatasetError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        for problem in dataset.problems:
            logger.warning("input %s", problem)
        if dataset.problems:
            err_console.print(f"{dataset.bad_rows} invalid input rows skipped; see {store.log_path}")
        rules = FilterRules(cfg.threshold, cfg.min_think, cfg.max_think)
        length = _length_counter(cfg)
        teacher = build_teacher(cfg)
        with store, _progress(len(dataset.samples)) as progress:
            try:
                summary = annotate(dataset.samples, teacher, store, rules, length=length,
                                   max_questions=cfg.max_questions, on_result=progress)
            except FatalError as exc:
                logger.error("stopped: %s", exc)
                typer.echo(f"error: the teacher refused the run's settings: {exc}", err=True)
                raise typer.Exit(2) from exc
    finally:
        logger.removeHandler(handler)
        handler.close()
    return summary


@media_options(inference_media)
def annotate(
    data: Annotated[Path, typer.Option(help=described(AnnotateConfig, "data"))],
    media_root: Annotated[Path, typer.Option(help=described(AnnotateConfig, "media_root"))],
    out: Annotated[Path, typer.Option(help=described(AnnotateConfig, "out"))],
    teacher: Annotated[str | None, _opt("teacher")] = None,
    endpoint: Annotated[str | None, _opt("endpoint", _HTTP)] = None,
    teacher_name: Annotated[str | None, _opt("teacher_name", _HTTP)] = None,
    api_key: Annotated[str | None, _opt("api_key", _HTTP, envvar="VIDEOR1_TEACHER_API_KEY")] = None,
    samples_per_question: Annotated[int | None, _opt("samples_per_question")] = None,
    temperature: Annotated[float | None, _opt("temperature")] = None,
    top_p: Annotated[float | None, _opt("top_p")] = None,
    max_new_tokens: Annotated[int | None, _opt("max_new_tokens")] = None,
    system_prompt: Annotated[str | None, _opt("system_prompt")] = None,
    max_questions: Annotated[int | None, _opt("max_questions")] = None,
    threshold: Annotated[float | None, _opt("threshold", _FILTER)] = None,
    min_think: Annotated[int | None, _opt("min_think", _FILTER)] = None,
    max_think: Annotated[int | None, _opt("max_think", _FILTER)] = None,
    length_unit: Annotated[str | None, _opt("length_unit", _FILTER)] = None,
    tokenizer: Annotated[str | None, _opt("tokenizer", _FILTER)] = None,
    concurrency: Annotated[int | None, _opt("concurrency", _HTTP)] = None,
    request_timeout_s: Annotated[float | None, _opt("request_timeout_s", _HTTP)] = None,
    max_reply_bytes: Annotated[int | None, _opt("max_reply_bytes", _HTTP)] = None,
    max_retries: Annotated[int | None, _opt("max_retries", _HTTP)] = None,
    retry_backoff_s: Annotated[float | None, _opt("retry_backoff_s", _HTTP)] = None,
    media_as: Annotated[str | None, _opt("media_as", _HTTP)] = None,
    batch_size: Annotated[int | None, _opt("batch_size", _LOCAL)] = None,
    dtype: Annotated[str | None, _opt("dtype", _LOCAL)] = None,
    device: Annotated[str | None, _opt("device", _LOCAL)] = None,
    torch_threads: Annotated[int | None, _opt("torch_threads", _LOCAL)] = None,
    *,
    media: dict,
) -> None:
    """Write <think> rationales with a teacher and keep those the rules accept; resumable; exit 1 if any failed."""
    values = dict(locals())  # every option, by its config field name
    values["media"] = stage_media(inference_media(), media)
    for key in ("data", "media_root", "out"):
        values[key] = str(values[key])
    cfg = build_config(AnnotateConfig, values)
    summary = run(cfg)
    from videor1.annotate.store import AnnotationStore

    store = AnnotationStore(cfg.out)
    typer.echo(
        f"kept {summary.kept}, rejected {summary.rejected}, failed {summary.failed} this run "
        f"({summary.already_done} done before); {summary.written} rows in {cfg.out}; "
        f"rejections in {store.rejected_path}"
    )
    if summary.remaining:
        typer.echo(f"{summary.remaining} questions still pending: run the same command again to continue", err=True)
    if summary.failed:
        raise typer.Exit(1)  # scripts can loop until the transient failures are gone
