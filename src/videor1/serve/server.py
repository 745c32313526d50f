"""Start `videor1 serve`: load the model, start the worker, run uvicorn; settings and log go to --log-dir."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from videor1.devices import pick_device
from videor1.models.inputs import processor_inputs, vision_factor
from videor1.models.load import load_model, load_processor, set_torch_threads
from videor1.serve.app import ServerState, create_app
from videor1.serve.config import ServeConfig, is_loopback
from videor1.serve.worker import GenerationWorker

logger = logging.getLogger("videor1.serve")
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    state = build_state(cfg)
    config = uvicorn.Config(create_app(state), host=cfg.host, port=cfg.port, log_level="info")
    server = uvicorn.Server(config)
    # uvicorn configures its loggers in Config(); the file handler is added after so it is kept
    for name in ("uvicorn.error", "uvicorn.access"):
        for handler in handlers[1:]:
            logging.getLogger(name).addHandler(handler)
    logger.info("serving %s as %r on http://%s:%d/v1", cfg.model, state.name, cfg.host, cfg.port)
    server.run()
