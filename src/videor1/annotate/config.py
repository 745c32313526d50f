"""Typed settings of `videor1 annotate`; the defaults live here and the command line overrides them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from videor1.config import MediaConfig, StrictModel, inference_media


class AnnotateConfig(StrictModel):
    """Write <think> rationales for a Video-R1 dataset with a teacher model and keep those that pass the rules."""

    data: str = Field(..., description="input rows (JSON, JSONL, parquet or a datasets folder)")
    media_root: str = Field(..., description="folder the rows' paths are relative to")
    out: str = Field(..., description="consolidated Video-R1-COT file (.json list or .jsonl)")
    teacher: str | None = Field(None, description="local teacher checkpoint (folder or hub id)")
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    teacher_name: str | None = Field(None, description="model name sent to the endpoint")
    api_key: str | None = Field(None, description="bearer key for the endpoint")
    samples_per_question: int = Field(1, ge=1, description="teacher outputs per question; the best passing is kept")
    temperature: float = Field(1.0, ge=0, description="teacher sampling temperature (0 = greedy)")
    top_p: float = Field(0.95, gt=0, le=1, description="teacher nucleus sampling")
    max_new_tokens: int = Field(1024, ge=1, description="longest teacher output in tokens")
    threshold: float = Field(0.6, description="keep outputs whose accuracy reward is at least this")
    min_think: int = Field(1, ge=1, description="fewest characters/tokens of <think> text")
    max_think: int | None = Field(None, ge=1, description="most characters/tokens of <think> text (none: no bound)")
    length_unit: Literal["chars", "tokens"] = Field("chars", description="unit of min_think / max_think")
    tokenizer: str | None = Field(None, description="tokenizer for length_unit=tokens (default: the local teacher)")
    system_prompt: str | None = Field(None, description="system message for the teacher (none: the model's default)")
    concurrency: int = Field(8, ge=1, description="questions in flight at once with --endpoint")
    request_timeout_s: float = Field(600.0, gt=0, description="seconds before one endpoint request counts as failed")
    max_reply_bytes: int = Field(16 * 2**20, ge=1, description="largest endpoint reply read, in bytes (more: it fails)")
    max_retries: int = Field(2, ge=0, description="retries of a transient endpoint error within a run")
    retry_backoff_s: float = Field(1.0, ge=0, description="first wait before a retry; doubles each time")
    media_as: Literal["data-url", "file-url"] = Field(
        "data-url", description="send media inline (any server) or as file:// URLs (a server on this machine)"
    )
    batch_size: int = Field(8, ge=1, description="questions per generate call with a local teacher")
    dtype: str = Field("auto", description="local teacher dtype: auto, float32, bfloat16 or float16")
    device: str = Field("auto", description="local teacher device: auto (the accelerator if any), cpu, cuda, ...")
    torch_threads: int | None = Field(None, ge=1, description="local teacher CPU threads (none: torch's default)")
    max_questions: int | None = Field(None, ge=1, description="annotate at most this many pending questions")
    media: MediaConfig = Field(default_factory=inference_media, description="frames and pixel budgets (local teacher)")

    @model_validator(mode="after")
    def _one_teacher(self) -> AnnotateConfig:
        if (self.teacher is None) == (self.endpoint is None):
            raise ValueError("give exactly one of --teacher PATH or --endpoint URL")
        if self.endpoint is not None and not self.teacher_name:
            raise ValueError("--endpoint needs --teacher-name (the model name the server expects)")
        if self.max_think is not None and self.max_think < self.min_think:
            raise ValueError(f"max_think ({self.max_think}) is below min_think ({self.min_think})")
        if not self.out.endswith((".json", ".jsonl")):
            raise ValueError(f"out must end with .json or .jsonl, got {self.out!r}")
        return self

    def public_dump(self) -> dict:
        """The settings with the API key masked, for the run's files."""
        data = self.model_dump(mode="json")
        if data["api_key"] is not None:
            data["api_key"] = "***"
        return data
