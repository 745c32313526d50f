"""Typed configuration shared by every stage. Defaults live here and nowhere else.

Frame and pixel budgets are per stage (training and evaluation use different ones in the paper), so
each stage's config holds its own `MediaConfig` instead of reading module constants.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from videor1.data.media import FrameSampling, PixelBudget

M = TypeVar("M", bound=BaseModel)

# The paper's pixel unit: one merged 2x2 group of 14-px patches (Qwen2/2.5-VL).
PIXEL_UNIT = 28 * 28


class StrictModel(BaseModel):
    """A config section: unknown keys and wrong types fail at load time with the key's name."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MediaConfig(StrictModel):
    """How images and videos are decoded and resized for one stage (training defaults of the paper)."""

    fps: float = Field(2.0, gt=0, description="video frames sampled per second")
    min_frames: int = Field(4, ge=2, description="fewest frames sampled from a video")
    max_frames: int = Field(16, ge=2, description="most frames sampled from a video")
    nframes: int | None = Field(None, ge=2, description="explicit frame count; overrides fps")
    video_min_pixels: int = Field(4 * PIXEL_UNIT, gt=0, description="per-frame pixel floor")
    video_max_pixels: int = Field(128 * PIXEL_UNIT, gt=0, description="per-frame pixel budget")
    image_min_pixels: int = Field(4 * PIXEL_UNIT, gt=0, description="image pixel floor")
    image_max_pixels: int = Field(256 * PIXEL_UNIT, gt=0, description="image pixel budget")

    @model_validator(mode="after")
    def _ordered(self) -> MediaConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames ({self.min_frames}) exceeds max_frames ({self.max_frames})")
        if self.video_min_pixels > self.video_max_pixels:
            raise ValueError("video_min_pixels exceeds video_max_pixels")
        if self.image_min_pixels > self.image_max_pixels:
            raise ValueError("image_min_pixels exceeds image_max_pixels")
        return self

    def sampling(self) -> FrameSampling:
        """Frame sampling for videos."""
        return FrameSampling(
            fps=self.fps, min_frames=self.min_frames, max_frames=self.max_frames, nframes=self.nframes
        )

    def video_budget(self, factor: int) -> PixelBudget:
        """Per-frame pixel budget; factor = patch size x merge size of the model's processor."""
        return PixelBudget(min_pixels=self.video_min_pixels, max_pixels=self.video_max_pixels, factor=factor)

    def image_budget(self, factor: int) -> PixelBudget:
        """Image pixel budget; factor = patch size x merge size of the model's processor."""
        return PixelBudget(min_pixels=self.image_min_pixels, max_pixels=self.image_max_pixels, factor=factor)


class ConfigError(ValueError):
    """A config file or override that does not fit the typed config; names the key."""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Merge dotted `key.sub=value` overrides into a nested dict; values are parsed as YAML scalars/lists."""
    merged = copy.deepcopy(data)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r} is not key=value")
        node = merged
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return merged


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(root)"
        lines.append(f"{key}: {error['msg']}")
    return "; ".join(lines)


def load_config(cls: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Load a YAML file into a typed config, apply dotted overrides; errors name the offending key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path or 'config'}: {_format_errors(exc)}") from exc


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (every default spelled out) for the run directory."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
