"""From a sample and its decoded media to the tensors a Qwen-VL model takes.

One decode serves every use: the ordered prompt, the shuffled prompt of T-GRPO and evaluation all start
from the same `DecodedVideo`. Frames reach the processor already sampled and resized, with their
`VideoMetadata` (source fps, frame indices), so that temporal positions follow the *sampled* fps: Qwen2.5-VL
derives `second_per_grid_ts` from it and Qwen3-VL writes per-patch timestamps from it. The original
Video-R1 dropped both, which put every temporal patch of a 2-fps video at the same position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from PIL import Image
from transformers.video_utils import VideoMetadata

from videor1.config import SHUFFLE_MODES, MediaConfig
from videor1.data.frames import load_clip
from videor1.data.media import DecodedVideo, load_image
from videor1.data.prompts import chat_messages
from videor1.data.schema import Sample

ShuffleMode = Literal["frame", "patch"]


@dataclass
class SampleMedia:
    """The decoded media of one sample: an image or a video."""

    image: Image.Image | None = None
    video: DecodedVideo | None = None


def vision_factor(processor: Any) -> int:
    """Pixel multiple of the processor's grid: patch size x merge size (28 for Qwen2/2.5-VL, 32 for Qwen3-VL)."""
    image_processor = processor.image_processor
    return int(image_processor.patch_size * image_processor.merge_size)


def temporal_patch_size(processor: Any) -> int:
    """How many consecutive frames the vision encoder merges into one temporal patch."""
    return int(processor.video_processor.temporal_patch_size)


def load_sample_media(sample: Sample, media: MediaConfig, factor: int) -> SampleMedia:
    """Decode a sample's image or video (a file or a folder of frames) under the stage's budgets.

    Raises MediaError on any failure.
    """
    if sample.is_video:
        frame_fps = sample.frame_fps or media.frame_fps
        return SampleMedia(
            video=load_clip(sample.media_path, media.sampling(), media.video_budget(factor), frame_fps=frame_fps)
        )
    return SampleMedia(image=load_image(sample.media_path, media.image_budget(factor)))


def prompt_text(processor: Any, sample: Sample, *, system_prompt: str | None = None) -> str:
    """The chat-formatted prompt for a sample, ending with the assistant turn's header."""
    messages = chat_messages(
        sample.problem, sample.problem_type, sample.options, sample.data_type, system_prompt=system_prompt
    )
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def video_metadata(video: DecodedVideo) -> VideoMetadata:
    """The processor's view of a decoded video: source fps and the indices of the sampled frames."""
    height, width = video.frames.shape[-2:]
    return VideoMetadata(
        # sampled_fps = len(frames_indices) / total_num_frames * fps, the qwen-vl-utils definition
        total_num_frames=round(len(video.frame_indices) * video.video_fps / video.sample_fps),
        fps=video.video_fps,
        frames_indices=list(video.frame_indices),
        duration=video.duration,
        width=int(width),
        height=int(height),
    )


def processor_inputs(
    processor: Any, texts: list[str], media: list[SampleMedia], *, padding_side: str = "left"
) -> Any:
    """Batch texts with their media through the processor: frames as decoded, metadata passed, no resampling."""
    images = [m.image for m in media if m.image is not None]
    videos = [m.video for m in media if m.video is not None]
    # Media is already resized to the processor grid under the stage's budget; resizing again would apply
    # the processor's own (different) budget, and sampling again would drop frames we chose.
    kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True, "do_resize": False}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs.update(
            videos=[v.frames for v in videos],
            video_metadata=[video_metadata(v) for v in videos],
            do_sample_frames=False,
        )
        if hasattr(processor.video_processor, "cap_pixels_per_frame"):
            # frames are already within our per-frame budget; this only opts in to the qwen-vl-utils rule
            # (and silences transformers' warning about its default changing)
            kwargs["cap_pixels_per_frame"] = True
    processor.tokenizer.padding_side = padding_side
    return processor(**kwargs)


def sample_inputs(processor: Any, sample: Sample, media: SampleMedia, *, system_prompt: str | None = None) -> Any:
    """Processor inputs for one sample (a batch of one)."""
    return processor_inputs(processor, [prompt_text(processor, sample, system_prompt=system_prompt)], [media])


def shuffle_permutation(
    num_frames: int, *, mode: ShuffleMode, temporal_patch: int, generator: torch.Generator
) -> list[int]:
    """A random frame order that differs from the identity: per frame, or per temporal patch (pairs kept)."""
    if mode not in SHUFFLE_MODES:
        raise ValueError(f"unknown shuffle mode {mode!r}; expected {' or '.join(SHUFFLE_MODES)}")
    unit = 1 if mode == "frame" else temporal_patch
    if num_frames % unit:
        raise ValueError(f"{num_frames} frames do not split into temporal patches of {unit}")
    groups = num_frames // unit
    if groups < 2:
        raise ValueError(f"cannot shuffle {num_frames} frames by {mode}: only one unit to order")
    while True:
        order = torch.randperm(groups, generator=generator).tolist()
        if order != sorted(order):
            break
    return [g * unit + i for g in order for i in range(unit)]


def permute_video(video: DecodedVideo, permutation: list[int]) -> DecodedVideo:
    """The same decoded frames in another order; timestamps and metadata stay where they were."""
    if sorted(permutation) != list(range(len(video.frame_indices))):
        raise ValueError(f"not a permutation of {len(video.frame_indices)} frames: {permutation}")
    return replace(video, frames=video.frames[permutation])
