"""Start `videor1 serve`: load the model, start the worker, run uvicorn; settings and log go to --log-dir.

uvicorn closes an idle kept-alive connection after `timeout_keep_alive` and answers requests past
`limit_concurrency` with a 503, but its h11 protocol has no deadline for a request head: a connection that
sends nothing, or half a header, is held for ever, and enough of them use up the process's file descriptors
(the server then accepts nothing, /health included). `head_deadline_protocol` adds that deadline, and the
soft open-files limit is raised to fit `max_connections`. The body's deadline is the ASGI guard's
(`videor1.serve.app.Guard`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import yaml
from uvicorn.protocols.http.h11_impl import H11Protocol

from videor1.devices import pick_device
from videor1.models.inputs import processor_inputs, vision_factor
from videor1.models.load import load_model, load_processor, set_torch_threads
from videor1.serve.app import ServerState, create_app
from videor1.serve.config import ServeConfig, is_loopback
from videor1.serve.worker import GenerationWorker

logger = logging.getLogger("videor1.serve")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SPARE_FILES = 512
"""File descriptors kept for everything but connections (model files, logs, media temp files, the listener)."""


def head_deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol plus a deadline for each request head, from connecting or from the last answer."""

    class HeadDeadlineProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:  # a request head arrived
                self._disarm()

        def on_response_complete(self) -> None:
            # armed first: uvicorn then reads any pipelined request, whose head disarms it again
            if not self.transport.is_closing():
                self._arm()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timed_out(self) -> None:
            self.head_timer = None
            if not self.transport.is_closing():
                self.transport.close()  # no answer: there is no request to answer yet

    return HeadDeadlineProtocol


def raise_open_files_limit(needed: int) -> None:
    """Raise the soft limit on open files to `needed` where the hard limit allows; warn where it does not."""
    try:
        import resource
    except ImportError:  # Windows has no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # macOS caps the soft limit below an unlimited hard one
        wanted = soft
    if wanted < needed:
        logger.warning("open files are limited to %d (ulimit -n), below the %d that --max-connections needs: past "
                       "about %d connections the server stops accepting until some close", wanted, needed,
                       wanted - SPARE_FILES)


def build_state(cfg: ServeConfig) -> ServerState:
    """Load the model and processor and start the generation worker."""
    set_torch_threads(cfg.torch_threads)
    model = load_model(cfg.model, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation,
                       device=pick_device(cfg.device))
    processor = load_processor(cfg.model)
    # the first call sets the tokenizer's padding; done now, before request threads and the worker share it (a
    # settings change while another thread tokenises raises "Already borrowed" in the Rust tokenizer)
    processor_inputs(processor, ["warm-up"], [])
    worker = GenerationWorker(
        model, processor, max_batch_size=cfg.max_batch_size, batch_wait_s=cfg.batch_wait_s,
        max_queue=cfg.max_queue, max_prompt_tokens=cfg.max_prompt_tokens,
    )
    worker.start()
    name = cfg.served_model_name or Path(cfg.model.rstrip("/")).name
    return ServerState(cfg=cfg, worker=worker, processor=processor, factor=vision_factor(processor), name=name)


def _log_handlers(cfg: ServeConfig) -> list[logging.Handler]:
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if cfg.log_dir is not None:
        log_dir = Path(cfg.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "serve.yaml").write_text(yaml.safe_dump(cfg.public_dump(), sort_keys=False), encoding="utf-8")
        handlers.append(logging.FileHandler(log_dir / "serve.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    return handlers


def serve(cfg: ServeConfig) -> None:
    """Run the server until interrupted; ValueError when the settings would leave it open (see `auth_problem`)."""
    import uvicorn

    problem = cfg.auth_problem()
    if problem is not None:
        raise ValueError(problem)
    handlers = _log_handlers(cfg)
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    logger.info("settings: %s", cfg.public_dump())
    if not is_loopback(cfg.host) and cfg.api_key is None:  # only with --insecure-no-auth
        logger.warning("listening on %s without an API key (--insecure-no-auth): anyone who reaches this address "
                       "can use the model", cfg.host)
    raise_open_files_limit(cfg.max_connections + SPARE_FILES)
    logger.info("limits: %d requests and %d body bytes in flight, %d connections", cfg.in_flight_limit(),
                cfg.in_flight_bytes_limit(), cfg.max_connections)
    state = build_state(cfg)
    config = uvicorn.Config(
        create_app(state), host=cfg.host, port=cfg.port, log_level="info",
        http=head_deadline_protocol(cfg.header_timeout_s), timeout_keep_alive=cfg.keep_alive_timeout_s,
        limit_concurrency=cfg.max_connections,
    )
    server = uvicorn.Server(config)
    # uvicorn configures its loggers in Config(); the file handler is added after so it is kept
    for name in ("uvicorn.error", "uvicorn.access"):
        for handler in handlers[1:]:
            logging.getLogger(name).addHandler(handler)
    logger.info("serving %s as %r on http://%s:%d/v1", cfg.model, state.name, cfg.host, cfg.port)
    server.run()
