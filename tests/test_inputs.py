"""Round trip on real files: synthetic data -> load -> decode -> processor inputs -> forward of a tiny model.

Runs for all three Qwen-VL families, with images and videos, and checks that temporal positions follow the
sampled fps and that the shuffled variant holds the same frames in another order.
"""

import pytest
import torch

from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.data.synthetic import generate
from videor1.models.inputs import (
    SampleMedia,
    load_sample_media,
    permute_video,
    processor_inputs,
    prompt_text,
    sample_inputs,
    shuffle_permutation,
    temporal_patch_size,
    vision_factor,
)
from videor1.models.load import load_model_and_processor
from videor1.models.tiny import FAMILIES, build_tiny

# small budgets keep a forward pass in milliseconds: 64x64 per frame at most
MEDIA = MediaConfig(video_min_pixels=32 * 32, video_max_pixels=64 * 64, image_min_pixels=32 * 32,
                    image_max_pixels=64 * 64, max_frames=8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate(root, n=24, n_test=4, seed=3)
    loaded = load_dataset(summary.train_json, root)
    assert not loaded.problems
    return loaded


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    path = build_tiny(tmp_path_factory.mktemp(request.param), family=request.param)
    model, processor = load_model_and_processor(path, dtype="float32")
    return request.param, model, processor


def first(dataset, data_type):
    return next(s for s in dataset.samples if s.data_type == data_type)


def rope_positions(model, inputs):
    keys = ("input_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts",
            "attention_mask")
    positions, _ = model.model.get_rope_index(**{k: inputs[k] for k in keys if k in inputs})
    return positions  # [3, B, T]


@pytest.mark.parametrize("data_type", ["image", "video"])
def test_forward_on_real_media(dataset, tiny, data_type):
    family, model, processor = tiny
    sample = first(dataset, data_type)
    media = load_sample_media(sample, MEDIA, vision_factor(processor))
    inputs = sample_inputs(processor, sample, media)
    pad = processor.tokenizer.convert_tokens_to_ids(f"<|{data_type}_pad|>")
    grid = inputs[f"{data_type}_grid_thw"][0]
    assert (inputs["input_ids"] == pad).sum() == grid.prod() // 4  # one token per merged 2x2 patch group
    if data_type == "video":
        assert grid[0] == len(media.video.frame_indices) // 2  # two frames per temporal patch
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_video_temporal_positions_follow_the_sampled_fps(dataset, tiny):
    family, model, processor = tiny
    sample = first(dataset, "video")
    media = load_sample_media(sample, MEDIA, vision_factor(processor))
    inputs = sample_inputs(processor, sample, media)
    video = media.video
    assert video.sample_fps == pytest.approx(len(video.frame_indices) / video.total_frames * video.video_fps)
    is_video = inputs["input_ids"][0] == model.config.video_token_id
    temporal = rope_positions(model, inputs)[0, 0][is_video]
    steps = temporal.unique()
    assert len(steps) == len(video.frame_indices) // 2  # every temporal patch has its own position
    if family == "qwen2_5_vl":
        # second_per_grid_ts = temporal_patch / sampled fps; without it every patch sat at position 0
        assert inputs["second_per_grid_ts"][0].item() == pytest.approx(2 / video.sample_fps)
        spacing = model.config.vision_config.tokens_per_second * 2 / video.sample_fps
        assert torch.diff(steps).float().tolist() == pytest.approx([spacing] * (len(steps) - 1), abs=1)
    if family == "qwen3_vl":
        # Qwen3-VL writes each patch's timestamp into the prompt from the frame indices and source fps
        text = processor.tokenizer.decode(inputs["input_ids"][0])
        first_time = (video.frame_indices[0] + video.frame_indices[1]) / 2 / video.video_fps
        assert f"<{first_time:.1f} seconds>" in text


@pytest.mark.parametrize("mode", ["frame", "patch"])
def test_shuffled_variant_holds_the_same_frames_in_another_order(dataset, tiny, mode):
    family, model, processor = tiny
    sample = first(dataset, "video")
    video = load_sample_media(sample, MEDIA, vision_factor(processor)).video
    generator = torch.Generator().manual_seed(0)
    perm = shuffle_permutation(len(video.frame_indices), mode=mode, temporal_patch=temporal_patch_size(processor),
                               generator=generator)
    assert sorted(perm) != perm and sorted(perm) == list(range(len(perm)))
    if mode == "patch":
        assert all(perm[i + 1] == perm[i] + 1 and perm[i] % 2 == 0 for i in range(0, len(perm), 2))
    shuffled = permute_video(video, perm)
    assert torch.equal(shuffled.frames, video.frames[perm]) and not torch.equal(shuffled.frames, video.frames)
    assert shuffled.frame_indices == video.frame_indices and shuffled.timestamps == video.timestamps
    text = prompt_text(processor, sample)
    ordered = processor_inputs(processor, [text], [SampleMedia(video=video)])
    permuted = processor_inputs(processor, [text], [SampleMedia(video=shuffled)])
    assert torch.equal(ordered["input_ids"], permuted["input_ids"])
    assert torch.equal(ordered["video_grid_thw"], permuted["video_grid_thw"])
    a, b = ordered["pixel_values_videos"], permuted["pixel_values_videos"]
    assert a.shape == b.shape and not torch.equal(a, b)
    if mode == "patch":
        # per-patch shuffling moves whole temporal patches: the same rows, blocks reordered
        t = int(ordered["video_grid_thw"][0, 0])
        blocks_a, blocks_b = a.reshape(t, -1, a.shape[-1]), b.reshape(t, -1, b.shape[-1])
        order = [perm[2 * i] // 2 for i in range(t)]
        assert torch.equal(blocks_b, blocks_a[order])


def test_mixed_image_and_video_batch(dataset, tiny):
    family, model, processor = tiny
    samples = [first(dataset, "video"), first(dataset, "image")]
    media = [load_sample_media(s, MEDIA, vision_factor(processor)) for s in samples]
    inputs = processor_inputs(processor, [prompt_text(processor, s) for s in samples], media)
    assert inputs["input_ids"].shape[0] == 2
    assert inputs["attention_mask"][:, -1].all()  # left padding: both prompts end at the last position
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()
