"""Typed configuration shared by every stage. Defaults live here and nowhere else.

Frame and pixel budgets are per stage (training and evaluation use different ones in the paper), so
each stage's config holds its own `MediaConfig` instead of reading module constants.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from videor1.data.media import FrameSampling, PixelBudget

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
