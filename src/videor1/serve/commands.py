"""`videor1 serve` and `videor1 annotate`, added to the main typer app by `register(app)`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from videor1.cli_options import build_config, config_option, described, media_options, stage_media
from videor1.config import inference_media
from videor1.serve.config import ServeConfig

_LIMITS = "Limits and batching"
_CONNECTIONS = "Connections and timeouts"
_KEY_ENV = "VIDEOR1_API_KEY"


_opt = config_option(ServeConfig)


@media_options(inference_media)
def serve(
    model: Annotated[str, typer.Option(help=described(ServeConfig, "model"))],
    host: Annotated[str | None, _opt("host")] = None,
    port: Annotated[int | None, _opt("port")] = None,
    api_key: Annotated[str | None, _opt("api_key", envvar=_KEY_ENV)] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help=described(ServeConfig, "insecure_no_auth"))
    ] = False,
    allowed_host: Annotated[
        list[str] | None, typer.Option("--allowed-host", help=described(ServeConfig, "allowed_hosts"))
    ] = None,
    allowed_media_dir: Annotated[Path | None, _opt("allowed_media_dir")] = None,
    served_model_name: Annotated[str | None, _opt("served_model_name")] = None,
    max_body_bytes: Annotated[int | None, _opt("max_body_bytes", _LIMITS)] = None,
    max_media_per_request: Annotated[int | None, _opt("max_media_per_request", _LIMITS)] = None,
    max_batch_size: Annotated[int | None, _opt("max_batch_size", _LIMITS)] = None,
    batch_wait_s: Annotated[float | None, _opt("batch_wait_s", _LIMITS)] = None,
    max_queue: Annotated[int | None, _opt("max_queue", _LIMITS)] = None,
    decode_workers: Annotated[int | None, _opt("decode_workers", _LIMITS)] = None,
    max_in_flight: Annotated[int | None, _opt("max_in_flight", _LIMITS)] = None,
    max_body_bytes_in_flight: Annotated[int | None, _opt("max_body_bytes_in_flight", _LIMITS)] = None,
    max_decode_packets: Annotated[int | None, _opt("max_decode_packets", _LIMITS)] = None,
    max_decode_seconds: Annotated[float | None, _opt("max_decode_seconds", _LIMITS)] = None,
    max_connections: Annotated[int | None, _opt("max_connections", _CONNECTIONS)] = None,
    keep_alive_timeout_s: Annotated[int | None, _opt("keep_alive_timeout_s", _CONNECTIONS)] = None,
    header_timeout_s: Annotated[float | None, _opt("header_timeout_s", _CONNECTIONS)] = None,
    body_timeout_s: Annotated[float | None, _opt("body_timeout_s", _CONNECTIONS)] = None,
    default_max_tokens: Annotated[int | None, _opt("default_max_tokens", _LIMITS)] = None,
    max_tokens_limit: Annotated[int | None, _opt("max_tokens_limit", _LIMITS)] = None,
    max_prompt_tokens: Annotated[int | None, _opt("max_prompt_tokens", _LIMITS)] = None,
    default_temperature: Annotated[float | None, _opt("default_temperature")] = None,
    default_top_p: Annotated[float | None, _opt("default_top_p")] = None,
    dtype: Annotated[str | None, _opt("dtype")] = None,
    device: Annotated[str | None, _opt("device")] = None,
    attn_implementation: Annotated[str | None, _opt("attn_implementation")] = None,
    torch_threads: Annotated[int | None, _opt("torch_threads")] = None,
    log_dir: Annotated[Path | None, _opt("log_dir")] = None,
    *,
    media: dict,
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions with image_url and video_url parts)."""
    values = dict(locals())
    values["media"] = stage_media(inference_media(), media)
    values["allowed_hosts"] = values.pop("allowed_host") or None  # one --allowed-host per name
    for key in ("allowed_media_dir", "log_dir"):
        values[key] = str(values[key]) if values[key] is not None else None
    if api_key is None and _KEY_ENV in os.environ:
        values["api_key"] = os.environ[_KEY_ENV]  # click reads a set but empty variable as unset: refuse it below
    cfg = build_config(ServeConfig, values)
    problem = cfg.auth_problem()
    if problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    if cfg.allowed_media_dir is not None and not Path(cfg.allowed_media_dir).is_dir():
        typer.echo(f"error: --allowed-media-dir {cfg.allowed_media_dir} is not a folder", err=True)
        raise typer.Exit(2)
    from videor1.serve.server import serve as run_server

    run_server(cfg)


def register(app: typer.Typer) -> None:
    """Add the `serve` and `annotate` commands to the main app."""
    from videor1.annotate.commands import annotate

    app.command("serve")(serve)
    app.command("annotate")(annotate)
