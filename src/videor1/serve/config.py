"""Typed settings of `videor1 serve`; the defaults live here and the command line overrides them."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field, model_validator

from videor1.config import MediaConfig, StrictModel, inference_media

MIB = 2**20
BODY_BYTES_IN_FLIGHT_PER_MAX_BODY = 2
"""Without --max-body-bytes-in-flight, bodies held at once may total this many times --max-body-bytes."""


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_key_problem(key: str | None) -> str | None:
    """Why an API key cannot work: empty, padded with whitespace, or with characters a header cannot carry."""
    if key is None:
        return None
    if not key.strip():
        # an empty key would silently turn authentication off
        return "the API key (--api-key or VIDEOR1_API_KEY) is empty; give a real key or leave it unset"
    if key != key.strip():
        return "the API key starts or ends with whitespace, which an Authorization header cannot carry"
    if not all(" " <= char <= "~" for char in key):
        # clients send header values as ASCII (or Latin-1): no client could ever send this key
        return ("the API key has characters outside printable ASCII, which clients cannot send in an Authorization "
                "header; use letters, digits and punctuation (e.g. openssl rand -hex 32)")
    return None


class ServeConfig(StrictModel):
    """An OpenAI-compatible server for one model."""

    model: str = Field(..., description="checkpoint folder or hub id")
    served_model_name: str | None = Field(None, description="the model id clients send; default: the folder name")
    host: str = Field("127.0.0.1", description="interface to bind; loopback unless you mean to expose it")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    api_key: str | None = Field(None, description="required as 'Authorization: Bearer KEY' when set")
    insecure_no_auth: bool = Field(False, description="allow a non-loopback --host without an API key")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header names answered besides loopback ones when there is no API "
        "key (a guard against DNS rebinding); '*' answers any",
    )
    allowed_media_dir: str | None = Field(None, description="local media paths are served only from here")
    max_body_bytes: int = Field(64 * MIB, gt=0, description="largest request body; larger ones get 413")
    max_media_per_request: int = Field(8, ge=0, description="images plus videos in one request")
    max_batch_size: int = Field(8, ge=1, description="requests generated together in one batch")
    batch_wait_s: float = Field(0.01, ge=0, description="how long the worker waits for more requests to batch")
    max_queue: int = Field(256, ge=1, description="requests waiting for the model; more get 503")
    decode_workers: int = Field(4, ge=1, description="threads decoding media concurrently")
    max_in_flight: int | None = Field(
        None, ge=1, description="requests being read, decoded, queued or generated at once; more get 503 before "
        "their body is read (none: max_queue + max_batch_size + decode_workers)",
    )
    max_body_bytes_in_flight: int | None = Field(
        None, gt=0, description="request body bytes held at once, all requests together; a request that would "
        f"pass it gets 503 (none: {BODY_BYTES_IN_FLIGHT_PER_MAX_BODY} x max_body_bytes)",
    )
    max_decode_packets: int = Field(
        20000, ge=1, description="compressed packets read to decode one video; more get 413"
    )
    max_decode_seconds: float = Field(30.0, gt=0, description="time spent decoding one video; more gets 413")
    max_connections: int = Field(
        2048, ge=1, description="open connections plus requests in progress; a request on a connection past it "
        "gets uvicorn's plain 503",
    )
    keep_alive_timeout_s: int = Field(5, ge=1, description="an idle kept-alive connection is closed after this")
    header_timeout_s: float = Field(
        10.0, gt=0, description="a connection must send a whole request head within this many seconds of opening "
        "or of its last answer, else it is closed",
    )
    body_timeout_s: float = Field(
        120.0, gt=0, description="a request's body must arrive within this many seconds of its head, else 408 "
        "and the connection is closed",
    )
    default_max_tokens: int = Field(1024, ge=1, description="max_tokens when a request gives none")
    max_tokens_limit: int = Field(8192, ge=1, description="largest max_tokens a request may ask for")
    max_prompt_tokens: int = Field(16384, ge=1, description="longer prompts (text + vision tokens) get 400")
    default_temperature: float = Field(
        1.0, ge=0, description="temperature when a request gives none: OpenAI's default, what chat clients expect "
        "(eval answers near-greedy at 0.01, as the paper evaluates)",
    )
    default_top_p: float = Field(1.0, gt=0, le=1, description="top_p when a request gives none (OpenAI's)")
    dtype: str = Field("auto", description="auto, float32, bfloat16 or float16")
    device: str = Field(
        "auto", description="auto (the accelerator, e.g. cuda, when there is one, else cpu), cpu, cuda, cuda:1, ..."
    )
    attn_implementation: str | None = Field(None, description="e.g. sdpa or flash_attention_2")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (none: torch's default); fewer avoids oversubscribed cores"
    )
    log_dir: str | None = Field(None, description="write serve.yaml (settings) and serve.log here")
    media: MediaConfig = Field(default_factory=inference_media, description="frame sampling and pixel budgets")

    @model_validator(mode="after")
    def _body_fits_in_flight(self) -> ServeConfig:
        if self.max_body_bytes_in_flight is not None and self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError(f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) is below max_body_bytes "
                             f"({self.max_body_bytes}): a body of the allowed size could never be read")
        return self

    def in_flight_limit(self) -> int:
        """Requests in flight at once: max_in_flight, or as many as the decoders, the queue and a batch hold."""
        if self.max_in_flight is not None:
            return self.max_in_flight
        return self.max_queue + self.max_batch_size + self.decode_workers

    def in_flight_bytes_limit(self) -> int:
        """Request body bytes held at once, all requests together."""
        if self.max_body_bytes_in_flight is not None:
            return self.max_body_bytes_in_flight
        return BODY_BYTES_IN_FLIGHT_PER_MAX_BODY * self.max_body_bytes

    def decode_limits(self) -> Any:
        """The decoding budget of one video (a `videor1.data.media.DecodeLimits`); past it, a 413 naming the option."""
        from videor1.data.media import DecodeLimits

        return DecodeLimits(max_packets=self.max_decode_packets, max_seconds=self.max_decode_seconds,
                            packets_setting="--max-decode-packets", seconds_setting="--max-decode-seconds")

    def auth_problem(self) -> str | None:
        """Why these settings must not start: an unusable API key, or an exposed host without one."""
        problem = api_key_problem(self.api_key)
        if problem is not None:
            return problem
        if self.api_key is None and not self.insecure_no_auth and not is_loopback(self.host):
            return (f"--host {self.host} is reachable from other machines: set --api-key (or VIDEOR1_API_KEY), "
                    "or pass --insecure-no-auth to serve without authentication")
        return None

    def public_dump(self) -> dict:
        """The settings with the API key masked, for logs and files."""
        data = self.model_dump(mode="json")
        if data["api_key"] is not None:
            data["api_key"] = "***"
        return data
