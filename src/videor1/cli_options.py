"""Command-line options built from the typed configs, so every command spells a setting the same way.

Every option defaults to None on the command line, meaning "the config's default", and its help shows that
default; `build_config` drops the Nones and lets the config class fill and validate the rest.

Media options are generated: `media_options(defaults)` adds one `--<field>` per `MediaConfig` field to a
command (same name, same help, in one help panel) and hands the command the ones given as `media`. A command
states its stage's defaults (training's budgets, or inference's); the help shows them.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from videor1.config import MediaConfig
from videor1.config_errors import validation_message

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])
MEDIA_PANEL = "Media (frame sampling and pixel budgets)"
# names earlier versions of eval and infer used; still accepted
MEDIA_ALIASES: dict[str, tuple[str, ...]] = {"max_frames": ("--frames",), "video_max_pixels": ("--max-pixels",)}
TORCH_THREADS_HELP = "CPU threads for torch (default: torch's own choice); 1 is often fastest on a busy machine"


def described(model: type[BaseModel], name: str, default: Any = ...) -> str:
    """A field's description with its default (or the given one), for --help."""
    info = model.model_fields[name]
    if info.is_required():
        return info.description or ""
    if default is ...:
        default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else default
    # parentheses, not brackets: typer renders help as rich markup, where [..] is a tag
    return f"{info.description} (default: {shown})" if info.description else f"(default: {shown})"


def or_default(model: type[BaseModel], name: str, value: Any) -> Any:
    """An option's value, or its config field's default when it was not given, for a command that builds no config."""
    return model.model_fields[name].get_default(call_default_factory=True) if value is None else value


def build_config(model: type[M], values: dict[str, Any]) -> M:
    """The config from the options that were given; exits with code 2 and the key's name when one is wrong."""
    try:
        return model.model_validate({key: value for key, value in values.items() if value is not None})
    except ValidationError as exc:
        typer.echo(f"error: {validation_message(exc)}", err=True)
        raise typer.Exit(2) from exc


def config_option(model: type[BaseModel]) -> Callable[..., Any]:
    """An option factory for one config class: `opt(field, panel, **typer_kwargs)` with the field's help."""

    def opt(name: str, panel: str | None = None, **kwargs: Any) -> Any:
        return typer.Option(help=described(model, name), rich_help_panel=panel, **kwargs)

    return opt


def _optional(annotation: Any) -> Any:
    """`X | None` for a field typed X (fields already optional stay as they are)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation):
        return annotation
    return annotation | None


def media_parameters(defaults: MediaConfig) -> list[inspect.Parameter]:
    """One keyword parameter per MediaConfig field, its help showing `defaults`."""
    parameters = []
    for name, info in MediaConfig.model_fields.items():
        option = typer.Option(
            f"--{name.replace('_', '-')}", *MEDIA_ALIASES.get(name, ()),
            help=described(MediaConfig, name, getattr(defaults, name)), rich_help_panel=MEDIA_PANEL,
        )
        annotation = Annotated[_optional(info.annotation), option]
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return parameters


def media_options(defaults: Callable[[], MediaConfig]) -> Callable[[F], F]:
    """Give a command every media option; it receives those given as `media` (a dict, empty for none)."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != "media"]
        added = media_parameters(defaults())

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {name: kwargs.pop(name, None) for name in MediaConfig.model_fields}
            return command(*args, media={k: v for k, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=kept + added)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in kept + added}
        return wrapper  # type: ignore[return-value]

    return decorate


def stage_media(defaults: MediaConfig, given: dict[str, Any]) -> dict[str, Any]:
    """The stage's media settings with the given options on top; a floor above a budget given lower follows it."""
    media = {**defaults.model_dump(), **given}
    if "min_frames" not in given:
        media["min_frames"] = min(media["min_frames"], media["max_frames"])
    if "video_min_pixels" not in given:
        media["video_min_pixels"] = min(media["video_min_pixels"], media["video_max_pixels"])
    if "image_min_pixels" not in given:
        media["image_min_pixels"] = min(media["image_min_pixels"], media["image_max_pixels"])
    return media


TorchThreads = Annotated[int | None, typer.Option(help=TORCH_THREADS_HELP, min=1)]

