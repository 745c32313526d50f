"""Typed settings of `videor1 serve`; the defaults live here and the command line overrides them."""

from __future__ import annotations

import ipaddress

from pydantic import Field

from videor1.config import MediaConfig, StrictModel, inference_media

MIB = 2**20


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (127.0.0.0/8, ::1 or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeConfig(StrictModel):
    """An OpenAI-compatible server for one model."""

    model: str = Field(..., description="checkpoint folder or hub id")
    served_model_name: str | None = Field(None, description="the model id clients send; default: the folder name")
    host: str = Field("127.0.0.1", description="interface to bind; loopback unless you mean to expose it")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    api_key: str | None = Field(None, description="required as 'Authorization: Bearer KEY' when set")
    insecure_no_auth: bool = Field(False, description="allow a non-loopback --host without an API key")
    allowed_media_dir: str | None = Field(None, description="local media paths are served only from here")
    max_body_bytes: int = Field(64 * MIB, gt=0, description="largest request body; larger ones get 413")
    max_media_per_request: int = Field(8, ge=0, description="images plus videos in one request")
    max_batch_size: int = Field(8, ge=1, description="requests generated together in one batch")
    batch_wait_s: float = Field(0.01, ge=0, description="how long the worker waits for more requests to batch")
    max_queue: int = Field(256, ge=1, description="requests waiting for the model; more get 503")
    decode_workers: int = Field(4, ge=1, description="threads decoding media concurrently")
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

    def auth_problem(self) -> str | None:
        """Why these settings must not start: an unusable API key, or an exposed host without one."""
        if self.api_key is not None and not self.api_key.strip():
            # an empty key would silently turn authentication off
            return "the API key (--api-key or VIDEOR1_API_KEY) is empty; give a real key or leave it unset"
        if self.api_key is not None and self.api_key != self.api_key.strip():
            return "the API key starts or ends with whitespace, which an Authorization header cannot carry"
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
