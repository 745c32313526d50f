"""Shuffling by temporal patch from the ordered prompts' pixels and vision features, against the processor and
the vision tower run on the permuted frames, on every family; and the trainer doing without both."""

import pytest
import torch

from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.data.synthetic import generate
from videor1.models.generation import SamplingParams
from videor1.models.inputs import (
    SampleMedia,
    load_sample_media,
    permute_video,
    processor_inputs,
    prompt_text,
    shuffle_permutation,
    temporal_patch_size,
    vision_factor,
)
from videor1.models.load import load_model_and_processor
from videor1.models.patch_shuffle import patch_order, shuffled_features, shuffled_inputs
from videor1.models.sampler import concat_inputs, concat_vision, sample_completions
from videor1.models.tiny import FAMILIES, build_tiny
from videor1.rl.logprobs import encode_vision

MEDIA = MediaConfig(video_min_pixels=32 * 32, video_max_pixels=64 * 64, image_min_pixels=32 * 32,
                    image_max_pixels=64 * 64, min_frames=8, max_frames=8)


def test_patch_order_reads_whole_patches_and_refuses_split_ones():
    assert patch_order([4, 5, 0, 1, 2, 3], 2) == [2, 0, 1]
    assert patch_order([0, 1, 2, 3], 2) == [0, 1]
    assert patch_order([2, 0, 1], 1) == [2, 0, 1]
    with pytest.raises(ValueError, match="splits temporal patches"):
        patch_order([1, 0, 2, 3], 2)
    with pytest.raises(ValueError, match="splits temporal patches"):
        patch_order([0, 2, 1, 3], 2)
    with pytest.raises(ValueError, match="do not split"):
        patch_order([0, 1, 2], 2)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Two video questions and an image question."""
    root = tmp_path_factory.mktemp("synth")
    loaded = load_dataset(generate(root, n=24, n_test=4, seed=5).train_json, root)
    videos = [s for s in loaded.samples if s.data_type == "video"][:2]
    image = next(s for s in loaded.samples if s.data_type == "image")
    return [videos[0], image, videos[1]]


@pytest.fixture(scope="module", params=FAMILIES)
def case(request, tmp_path_factory, samples):
    """A family's tiny model and processor, a mixed batch's processor outputs and random patch permutations."""
    path = build_tiny(tmp_path_factory.mktemp(request.param), family=request.param)
    model, processor = load_model_and_processor(path, dtype="float32")
    media = [load_sample_media(s, MEDIA, vision_factor(processor)) for s in samples]
    texts = [prompt_text(processor, s) for s in samples]
    # a long system prompt for the image question: the batch pads the video rows more than they need alone
    texts[1] = prompt_text(processor, samples[1], system_prompt="Look closely and reason step by step. " * 8)
    generator = torch.Generator().manual_seed(7)
    permutations = [shuffle_permutation(len(media[i].video.frame_indices), mode="patch",
                                        temporal_patch=temporal_patch_size(processor), generator=generator)
                    for i in (0, 2)]
    return {
        "model": model, "processor": processor, "texts": texts, "media": media, "permutations": permutations,
        "inputs": processor_inputs(processor, texts, media),
        "orders": [patch_order(p, temporal_patch_size(processor)) for p in permutations],
        # what the trainer did before: the processor run again on the permuted frames
        "reference": processor_inputs(
            processor, [texts[0], texts[2]],
            [SampleMedia(video=permute_video(media[i].video, p)) for i, p in zip((0, 2), permutations, strict=True)],
        ),
    }


def test_shuffled_inputs_are_the_processors_on_the_permuted_frames(case):
    inputs, reference = case["inputs"], case["reference"]
    assert all(int(t) >= 2 for t in inputs["video_grid_thw"][:, 0])  # at least two patches to shuffle
    assert inputs["input_ids"].shape[1] > reference["input_ids"].shape[1]  # the image prompt pads the batch
    got = shuffled_inputs(inputs, [0, 2], case["orders"])
    expected = {k: v for k, v in reference.items() if v is not None}
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert not torch.equal(got["pixel_values_videos"], inputs["pixel_values_videos"])


def test_shuffled_features_are_the_towers_on_the_permuted_frames(case):
    model = case["model"]
    with torch.no_grad():
        ordered = encode_vision(model, dict(case["inputs"]))
        reference = encode_vision(model, dict(case["reference"]))["video"]
    got = shuffled_features(ordered, case["orders"])["video"]
    assert len(got.pooler_output) == 2
    for a, b in zip(got.pooler_output, reference.pooler_output, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(got.pooler_output[0], ordered["video"].pooler_output[0])
    if getattr(reference, "deepstack_features", None) is not None:  # Qwen3-VL: deepstack layers move too
        for layer_a, layer_b in zip(got.deepstack_features, reference.deepstack_features, strict=True):
            for a, b in zip(layer_a, layer_b, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_sampler_prefilled_from_features_samples_what_it_samples_from_pixels(case):
    model, tokenizer = case["model"], case["processor"].tokenizer
    inputs = case["inputs"]
    shuffled = shuffled_inputs(inputs, [0, 2], case["orders"])
    merged = concat_inputs([dict(inputs), shuffled], tokenizer.pad_token_id)
    with torch.no_grad():
        ordered_vision = encode_vision(model, dict(inputs))
    vision = concat_vision([ordered_vision, shuffled_features(ordered_vision, case["orders"])])
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.9)
    copies = [3, 3, 3, 2, 2]

    def sample(**kwargs):
        return sample_completions(model, tokenizer, merged, params, copies,
                                  generator=torch.Generator().manual_seed(3), **kwargs)

    from_pixels, from_features = sample(), sample(vision=vision)
    assert torch.equal(from_pixels.ids, from_features.ids)
    torch.testing.assert_close(from_pixels.logprobs, from_features.logprobs, rtol=1e-5, atol=1e-5)
