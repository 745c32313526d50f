"""Typed configuration of an evaluation run. Defaults live here and nowhere else.

The decoding defaults are the paper's (temperature 0.01, top_p 0.001, 1024 new tokens; Video-R1's
released eval_bench.py used temperature 0.1 — with top_p 0.001 both keep only the top token). Every
sampling knob is passed explicitly to `generate`, so the knobs a checkpoint's generation_config.json may
carry (Qwen chat checkpoints ship a repetition penalty and a top-k) never change the numbers silently.
Frames and pixel budgets are per run: the paper evaluates at 16/32/64 frames sampled at 2 fps, each frame
≤ 256·28·28 pixels.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from videor1.config import MediaConfig, StrictModel, inference_media

Engine = Literal["hf", "vllm"]
"""What generates: transformers' generate (the reference) or vLLM, fed the same prompts and decoded media."""



class DecodingConfig(StrictModel):
    """How answers are sampled (the paper's near-greedy decoding)."""

    temperature: float = Field(
        0.01, ge=0, description="0 = greedy; the default (with top_p's) is the paper's near-greedy evaluation, where "
        "serve samples as OpenAI's API does",
    )
    top_p: float = Field(0.001, gt=0, le=1, description="sample from the fewest tokens whose probabilities reach this")
    top_k: int | None = Field(None, gt=0, description="none = no top-k filter")
    repetition_penalty: float = Field(1.0, gt=0, description="1.0 = none")
    max_new_tokens: int = Field(1024, gt=0, description="longest answer in tokens")
    seed: int = Field(0, description="torch seed set once per run")


class BenchmarkRun(StrictModel):
    """One benchmark file to evaluate."""

    name: str = Field(..., description="vsibench, videommmu, mmvu, mvbench, tempcompass or videomme")
    data: str = Field(..., description="Video-R1-format evaluation file (JSON, JSONL, parquet, datasets folder)")
    media_root: str = Field(..., description="folder the rows' paths are relative to")
    category_field: str | None = Field(None, description="column holding the category; none = the benchmark's own")


class EvalVLLMOptions(StrictModel):
    """The vLLM engine of an evaluation (engine: vllm); nothing else runs beside it, so it takes most of the GPU."""

    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of GPU memory vLLM may take")
    enforce_eager: bool = Field(False, description="no torch.compile / CUDA graphs: fast start, slower decoding")
    max_model_len: int | None = Field(None, gt=0, description="longest prompt + completion; none = the model's")


class EvalConfig(StrictModel):
    """A `videor1 eval` run."""

    model: str = Field(..., description="hub id or local folder")
    label: str | None = Field(None, description="row name in the results table; none = the model folder's name")
    dtype: str = Field("auto", description="auto, float32, bfloat16 or float16")
    device: str | None = Field(
        None, description="cpu, cuda, cuda:1, ...; none or auto = the accelerator if there is one, else cpu"
    )
    attn_implementation: str | None = Field(None, description="e.g. sdpa or flash_attention_2")
    engine: Engine = Field(
        "hf", description="hf generate (the reference) or vLLM (same prompts and media; needs the vllm package)"
    )
    vllm: EvalVLLMOptions = Field(default_factory=EvalVLLMOptions)
    media: MediaConfig = Field(default_factory=inference_media)
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    batch_size: int = Field(8, gt=0, description="samples per generate call")
    system_prompt: str | None = Field(None, description="none = the chat template's default")
    limit: int | None = Field(None, gt=0, description="evaluate at most this many samples per benchmark")
    benchmarks: list[BenchmarkRun] = Field(..., min_length=1)
    out: str = Field("runs/eval", description="output folder")

    @model_validator(mode="after")
    def _distinct(self) -> EvalConfig:
        # imported here: the benchmarks pull in torch, and the command line reads this module for its --help
        from videor1.eval.benchmarks import get_benchmark

        keys = [get_benchmark(b.name).key for b in self.benchmarks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"each benchmark may appear once, got {', '.join(keys)}")
        if self.engine == "vllm":
            # vLLM places the model itself (CUDA_VISIBLE_DEVICES), with its own kernels and no repetition penalty
            hf_only = [name for name in ("device", "attn_implementation") if getattr(self, name) is not None]
            hf_only += ["repetition_penalty"] * (self.decoding.repetition_penalty != 1.0)
            if hf_only:
                raise ValueError(f"{', '.join(hf_only)}: for the hf engine only, not with engine vllm")
        return self

    def row_label(self) -> str:
        """The model's name in the results table."""
        return self.label or self.model.rstrip("/").rsplit("/", 1)[-1]


# Settings that change what a finished prediction would be: resuming under different ones would mix runs.
RESUME_KEYS: tuple[str, ...] = ("model", "engine", "dtype", "media", "decoding", "system_prompt")
