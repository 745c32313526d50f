"""Command-line options built from the typed configs, so defaults live only on the config classes.

Every option defaults to None on the command line, meaning "the config's default", and its help shows that
default; `build_config` drops the Nones and lets the config class fill and validate the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from videor1.config import MediaConfig

M = TypeVar("M", bound=BaseModel)
MEDIA_PANEL = "Media (frame sampling and pixel budgets)"


def described(model: type[BaseModel], name: str) -> str:
    """A field's description with its default, for --help."""
    info = model.model_fields[name]
    if info.is_required():
        return info.description or ""
    default = info.get_default(call_default_factory=True)
    shown = "none" if default is None else default
    # parentheses, not brackets: typer renders help as rich markup, where [..] is a tag
    return f"{info.description} (default: {shown})" if info.description else f"(default: {shown})"


def build_config(model: type[M], values: dict[str, Any]) -> M:
    """The config from the options that were given; exits with code 2 and the key's name when one is wrong."""
    try:
        return model.model_validate({key: value for key, value in values.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'options'}: {error['msg']}" for error in exc.errors()
        )
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(2) from exc


def _media(name: str, kind: type) -> Any:
    return Annotated[kind | None, typer.Option(help=described(MediaConfig, name), rich_help_panel=MEDIA_PANEL)]


Fps = _media("fps", float)
MinFrames = _media("min_frames", int)
MaxFrames = _media("max_frames", int)
NFrames = _media("nframes", int)
VideoMinPixels = _media("video_min_pixels", int)
VideoMaxPixels = _media("video_max_pixels", int)
ImageMinPixels = _media("image_min_pixels", int)
ImageMaxPixels = _media("image_max_pixels", int)
MaxDecodePixels = _media("max_decode_pixels", int)


MEDIA_OPTIONS = (
    "fps", "min_frames", "max_frames", "nframes", "video_min_pixels", "video_max_pixels", "image_min_pixels",
    "image_max_pixels", "max_decode_pixels",
)
"""The media options above, by their MediaConfig field names (each command spells them in its signature)."""


def config_option(model: type[BaseModel]) -> Callable[..., Any]:
    """An option factory for one config class: `opt(field, panel, **typer_kwargs)` with the field's help."""

    def opt(name: str, panel: str | None = None, **kwargs: Any) -> Any:
        return typer.Option(help=described(model, name), rich_help_panel=panel, **kwargs)

    return opt


def pop_media(values: dict[str, Any]) -> dict[str, Any]:
    """Take the media options out of a command's values; those given, as a MediaConfig dict (empty: defaults)."""
    media = {key: values.pop(key) for key in MEDIA_OPTIONS}
    return {key: value for key, value in media.items() if value is not None}
