"""M-RoPE positions as the Qwen-VL models were released with, on values written out by hand.

The released rule (Qwen's `qwen-vl-finetune/qwenvl/data/rope2d.py`, transformers 4.x, vLLM): a vision item
starting at s puts its merged patch (t, h, w) at (s + τ(t), s + h, s + w), with τ(t) = ⌊t · seconds_per_grid ·
tokens_per_second⌋ (float32) for Qwen2.5-VL videos and τ(t) = t otherwise, and **the text after it resumes at
the item's largest position + 1**. transformers 5.24 resumes at s + max(h, w) instead.

Two kinds of check: the pure function against expected positions derived by hand in the comments (and against
`reference_positions`, a transcription of Qwen's reference loop written here, not imported); and what the tiny
models' rotary embeddings actually receive in forward and in `generate`, so that a transformers upgrade that
stops calling the installed rule fails here instead of silently moving the project off it.
"""

import copy

import numpy as np
import pytest
import torch

from videor1.models.load import load_model_and_processor, prepare_for_training
from videor1.models.mrope import ReleasedRopeIndex, RopeRule, released_positions, rope_rule, use_released_positions

QWEN25 = RopeRule(spatial_merge_size=2, tokens_per_second=2.0)  # Qwen2.5-VL-7B's vision config
QWEN2 = RopeRule(spatial_merge_size=2, tokens_per_second=None)
QWEN3 = RopeRule(spatial_merge_size=2, tokens_per_second=None, frame_items=True)
PATCH, TEMPORAL_PATCH = 14, 2  # Qwen2/2.5-VL's patch and temporal patch
T, IMG, V = 0, 1, 2  # text, image and video token types


def video_grid(frames: int, height: int, width: int) -> list[int]:
    """The processor's video_grid_thw for frames of height x width (multiples of 28)."""
    return [frames // TEMPORAL_PATCH, height // PATCH, width // PATCH]


def tokens(grid: list[int], merge: int = 2) -> int:
    return grid[0] * grid[1] * grid[2] // merge**2


def positions_of(types, rule, *, images=(), videos=(), seconds=None):
    """The function under test on one unpadded row: [3, L] as lists."""
    out, delta = released_positions(
        torch.tensor([types]), rule,
        image_grid_thw=torch.tensor(images) if images else None,
        video_grid_thw=torch.tensor(videos) if videos else None,
        second_per_grid_ts=torch.tensor(seconds, dtype=torch.float32) if seconds is not None else None,
    )
    assert delta.item() == out[:, 0].max().item() + 1 - len(types)
    return out[:, 0]


# ---- a transcription of the released reference loop (Qwen's rope2d.get_rope_index_25), for whole rows ----
def reference_positions(types, rule, images=(), videos=(), seconds=()):
    """Qwen's loop, over token types instead of ids: text runs count on, an item is placed then max + 1."""
    pos: list[list[int]] = [[], [], []]
    images, videos, seconds = list(images), list(videos), list(seconds)
    i = 0
    while i < len(types):
        st_idx = max(pos[0] + pos[1] + pos[2]) + 1 if pos[0] else 0
        if types[i] == T:
            j = i
            while j < len(types) and types[j] == T:
                j += 1
            for axis in range(3):
                pos[axis] += [st_idx + k for k in range(j - i)]
            i = j
            continue
        t, h, w = (images if types[i] == IMG else videos).pop(0)
        h, w = h // rule.spatial_merge_size, w // rule.spatial_merge_size
        second = seconds.pop(0) if types[i] == V and seconds else 1.0
        for tt in range(t):
            if types[i] == V and rule.tokens_per_second is not None:
                # torch: int64 arange * float32 tensor * python number, all in float32, then .long()
                tau = int(np.float32(np.float32(tt) * np.float32(second)) * np.float32(rule.tokens_per_second))
            else:
                tau = tt
            for hh in range(h):
                for ww in range(w):
                    pos[0].append(st_idx + tau)
                    pos[1].append(st_idx + hh)
                    pos[2].append(st_idx + ww)
        i += t * h * w
    return torch.tensor(pos)


def one_video(before: int, grid: list[int], after: int) -> list[int]:
    return [T] * before + [V] * tokens(grid) + [T] * after


# ---- the headline case of the issue, every number by hand ----------------------------------------------
def test_32_frames_of_448x252_at_2fps_put_the_question_after_the_video():
    # grid (16, 18, 32) -> merged 16 x 9 x 16; 2 fps: seconds per grid = 2 / 2 = 1, τ(t) = t * 1 * 2 = 2t
    grid = video_grid(32, 252, 448)
    assert grid == [16, 18, 32]
    types = one_video(3, grid, 5)
    pos = positions_of(types, QWEN25, videos=[grid], seconds=[1.0])
    video = pos[:, 3:3 + 16 * 9 * 16]
    assert video[0].unique().tolist() == [3 + 2 * t for t in range(16)]  # 3, 5, ..., 33
    assert video[1].unique().tolist() == list(range(3, 12)) and video[2].unique().tolist() == list(range(3, 19))
    assert video.max() == 33
    # released: 33 + 1 = 34 (transformers 5.24 resumes at 3 + max(9, 16) = 19, inside the video's time span)
    assert pos[:, -5:].tolist() == [[34, 35, 36, 37, 38]] * 3


# every (frames, fps, aspect) the issue lists, fractional seconds per grid included; expected τ by hand:
# seconds_per_grid = 2 / fps; τ(t) = ⌊t · seconds_per_grid · 2⌋
ASPECTS = {"square": (224, 224), "4:3": (168, 224), "16:9": (252, 448)}
FPS_TAU = {
    1.0: lambda n: [4 * t for t in range(n)],  # 2 s per grid, 4 positions per patch
    2.0: lambda n: [2 * t for t in range(n)],
    4.0: lambda n: list(range(n)),  # 0.5 s per grid
    # 1.2 fps: 5/3 s per grid, τ = ⌊10t/3⌋ = 0, 3, 6, 10, 13, 16, 20, 23, ... (float32 rounds 3·5/3·2 up to 10,
    # float64 on the float32 5/3 gives 9.9999998 -> 9: vLLM's own rule)
    1.2: lambda n: [10 * t // 3 for t in range(n)],
    3.0: lambda n: [4 * t // 3 for t in range(n)],  # 2/3 s per grid: 0, 1, 2, 4, 5, 6, 8, ...
}


@pytest.mark.parametrize("frames", [4, 16, 64])
@pytest.mark.parametrize("fps", list(FPS_TAU))
@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_video_positions_follow_the_released_rule(frames, fps, aspect):
    height, width = ASPECTS[aspect]
    grid = video_grid(frames, height, width)
    h, w = grid[1] // 2, grid[2] // 2
    start = 4
    types = one_video(start, grid, 6)
    seconds = float(np.float32(2 / fps))
    pos = positions_of(types, QWEN25, videos=[grid], seconds=[seconds])
    tau = FPS_TAU[fps](grid[0])
    video = pos[:, start:start + grid[0] * h * w].reshape(3, grid[0], h, w)
    assert video[0, :, 0, 0].tolist() == [start + x for x in tau]
    assert video[1, 0, :, 0].tolist() == [start + y for y in range(h)]
    assert video[2, 0, 0, :].tolist() == [start + x for x in range(w)]
    resume = start + max(tau[-1], h - 1, w - 1) + 1
    assert pos[:, -6:].tolist() == [list(range(resume, resume + 6))] * 3
    assert torch.equal(pos, reference_positions(types, QWEN25, videos=[grid], seconds=[seconds]))


def test_an_image_resumes_after_its_grid():
    # 4:3 image of 224x168 -> grid (1, 12, 16) -> merged 6 x 8; t = 0; text resumes at 2 + 8 = 10
    grid = [1, 12, 16]
    types = [T, T] + [IMG] * tokens(grid) + [T] * 3
    pos = positions_of(types, QWEN25, images=[grid])
    assert pos[:, :2].tolist() == [[0, 1]] * 3
    image = pos[:, 2:2 + 48]
    assert image[0].unique().tolist() == [2] and image[1].unique().tolist() == list(range(2, 8))
    assert image[2].unique().tolist() == list(range(2, 10))
    assert pos[:, -3:].tolist() == [[10, 11, 12]] * 3


def test_two_videos_and_an_image_then_a_video_chain_their_resumes():
    # video 1: 16 square frames of 56x56 at 2 fps -> grid (8, 4, 4), merged 8 x 2 x 2, τ = 2t up to 14
    # text 2 tokens at 1, 2; video 1 starts at 2, reaches 2 + 14 = 16; text resumes at 17 (3 tokens: 17..19)
    # video 2: 8 frames at 1 fps -> grid (4, 4, 4), τ = 4t up to 12, starts at 20, reaches 32; text resumes 33
    first, second = [8, 4, 4], [4, 4, 4]
    types = [T, T] + [V] * tokens(first) + [T] * 3 + [V] * tokens(second) + [T] * 2
    pos = positions_of(types, QWEN25, videos=[first, second], seconds=[1.0, 2.0])
    after_first = 2 + tokens(first)
    assert pos[:, after_first:after_first + 3].tolist() == [[17, 18, 19]] * 3
    assert pos[0, after_first + 3:after_first + 3 + tokens(second)].unique().tolist() == [20, 24, 28, 32]
    assert pos[:, -2:].tolist() == [[33, 34]] * 3
    assert torch.equal(pos, reference_positions(types, QWEN25, videos=[first, second], seconds=[1.0, 2.0]))
    # an image (grid (1, 4, 6): 2 x 3, at 1..3, resumes at 4), 1 text token, then a 64-frame video at 4 fps
    # starting at 5: τ = t up to 31 -> reaches 36, the question resumes at 37
    image, video = [1, 4, 6], [32, 4, 4]
    types = [T] + [IMG] * tokens(image) + [T] + [V] * tokens(video) + [T] * 2
    pos = positions_of(types, QWEN25, images=[image], videos=[video], seconds=[0.5])
    assert pos[:, 1 + 6].tolist() == [4, 4, 4]
    assert pos[:, -2:].tolist() == [[37, 38]] * 3
    assert torch.equal(pos, reference_positions(types, QWEN25, images=[image], videos=[video], seconds=[0.5]))


def test_qwen2_vl_counts_temporal_patches_without_time():
    # 64 frames of 56x56: grid (32, 4, 4), τ = t up to 31; starting at 1, the video reaches 32, text at 33
    grid = [32, 4, 4]
    types = one_video(1, grid, 2)
    pos = positions_of(types, QWEN2, videos=[grid], seconds=[0.5])  # seconds are ignored by Qwen2-VL
    assert pos[0, 1:1 + tokens(grid)].unique().tolist() == list(range(1, 33))
    assert pos[:, -2:].tolist() == [[33, 34]] * 3


def test_qwen3_vl_numbers_each_frame_as_an_item_after_its_timestamp():
    # Qwen3-VL writes "<0.5 seconds>" + vision_start before each temporal patch and vision_end after it: the
    # grid (2, 4, 6) becomes two items of (1, 4, 6), merged 2 x 3, each at t = 0 and resuming at start + 3
    grid = [2, 4, 6]
    frame = 6
    types = [T] * 2 + [V] * frame + [T] * 4 + [V] * frame + [T] * 2
    pos = positions_of(types, QWEN3, videos=[grid])
    assert pos[:, 2:8].tolist() == [[2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4]]
    assert pos[:, 8:12].tolist() == [[5, 6, 7, 8]] * 3  # 2 + 3 = 5
    assert pos[:, 12:18].tolist() == [[9] * 6, [9, 9, 9, 10, 10, 10], [9, 10, 11, 9, 10, 11]]
    assert pos[:, -2:].tolist() == [[12, 13]] * 3


def test_left_padding_and_rows_without_media():
    grid = [4, 4, 4]  # τ = 2t at 2 fps: 0, 2, 4, 6
    row = one_video(1, grid, 1)
    text_only = [T] * 3
    width = len(row)
    types = torch.tensor([row, [T] * (width - 3) + text_only])
    mask = torch.tensor([[1] * width, [0] * (width - 3) + [1] * 3])
    pos, deltas = released_positions(types, QWEN25, video_grid_thw=torch.tensor([grid]),
                                     second_per_grid_ts=torch.tensor([1.0]), attention_mask=mask)
    assert pos[:, 1, -3:].tolist() == [[0, 1, 2]] * 3 and pos[:, 1, :-3].eq(0).all()
    assert pos[:, 0, -1].tolist() == [8, 8, 8]  # 1 + 6 + 1
    assert deltas.tolist() == [[9 - width], [0]]


def test_a_grid_that_does_not_match_its_placeholders_is_an_error():
    with pytest.raises(ValueError, match="grid"):
        positions_of([T] + [V] * 5 + [T], QWEN25, videos=[[4, 4, 4]], seconds=[1.0])


# ---- what the models compute, through transformers' own forward and generate ----------------------------
def rotary_positions(model, run):
    """Every position_ids tensor the language model's rotary embedding receives while `run()` runs."""
    seen = []
    rotary = model.model.language_model.rotary_emb  # renamed by a future transformers: fails here, loudly

    def hook(module, args, kwargs, output):
        seen.append(kwargs.get("position_ids", args[1] if len(args) > 1 else None))

    handle = rotary.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return seen


def long_video_inputs(processor, family):
    """One prompt with a 16-frame video at 2 fps, whose time (2 x 7 = 14) outgrows its 2 x 2 merged grid."""
    from transformers.video_utils import VideoMetadata

    side = 64 if family == "qwen3_vl" else 56
    frames = torch.randint(0, 255, (16, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    meta = VideoMetadata(total_num_frames=16, fps=2.0, frames_indices=list(range(16)), duration=8.0, width=side,
                         height=side)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "which way"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], videos=[frames], video_metadata=[meta], return_tensors="pt", do_resize=False,
                     do_sample_frames=False)


def expected_prompt_positions(model, inputs, family):
    """Qwen's reference loop over this prompt's token types and grids."""
    config = model.config
    ids = inputs["input_ids"][0].tolist()
    types = [IMG if t == config.image_token_id else V if t == config.video_token_id else T for t in ids]
    rule = rope_rule(config)
    videos = inputs["video_grid_thw"].tolist()
    if family == "qwen3_vl":
        videos = [[1, h, w] for t, h, w in videos for _ in range(t)]
    seconds = inputs["second_per_grid_ts"].tolist() if "second_per_grid_ts" in inputs else []
    return reference_positions(types, rule, videos=videos, seconds=seconds)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_forward_and_generate_number_positions_as_released(tiny_models, family):
    model, processor = load_model_and_processor(tiny_models(family), dtype="float32")
    inputs = long_video_inputs(processor, family)
    expected = expected_prompt_positions(model, inputs, family)  # [3, L]
    length = expected.shape[1]
    if family != "qwen3_vl":  # the case the issue is about: the video's time outgrows its grid
        is_video = inputs["input_ids"][0] == model.config.video_token_id
        after = int(is_video.nonzero().max()) + 1  # vision_end follows the video at its largest position + 1
        assert expected[:, after].tolist() == [int(expected[:, is_video].max()) + 1] * 3

    seen = rotary_positions(model, lambda: model(**inputs))
    assert torch.equal(seen[-1][-3:, 0], expected)

    seen = rotary_positions(model, lambda: model.generate(**inputs, max_new_tokens=3, do_sample=False))
    assert torch.equal(seen[0][-3:, 0], expected)  # the prefill
    next_position = int(expected.max()) + 1
    decoded = [step[-3:, 0, -1].tolist() for step in seen[1:]]
    assert decoded == [[next_position + t] * 3 for t in range(len(decoded))]
    assert inputs["input_ids"].shape[1] == length


def test_the_rule_survives_peft_and_deepcopy(tiny_models):
    model, processor = load_model_and_processor(tiny_models("qwen2_5_vl"), dtype="float32")
    inputs = long_video_inputs(processor, "qwen2_5_vl")
    expected = expected_prompt_positions(model, inputs, "qwen2_5_vl")
    peft_model = prepare_for_training(copy.deepcopy(model), freeze_vision=True, gradient_checkpointing=False,
                                      lora_r=4, lora_targets=["q_proj"])
    reference = copy.deepcopy(peft_model)
    for candidate in (peft_model, reference):
        inner = candidate.get_base_model().model
        assert isinstance(inner.__dict__["get_rope_index"], ReleasedRopeIndex)
        seen = rotary_positions(candidate.get_base_model(), lambda c=candidate: c(**inputs))
        assert torch.equal(seen[-1][-3:, 0], expected)


def test_models_loaded_elsewhere_get_the_rule_and_other_families_are_left_alone(tiny_models):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_models("qwen2_5_vl"))
    assert "get_rope_index" not in model.model.__dict__
    assert use_released_positions(model) and use_released_positions(model)  # idempotent
    assert isinstance(model.model.__dict__["get_rope_index"], ReleasedRopeIndex)

    class Other:
        config = type("Config", (), {"model_type": "llava"})()

    assert use_released_positions(Other()) is False
