"""Decoding from one cached copy of each prompt: the attention against attention over each row's whole keys
written out, and the sampler's tokens against the copied cache's, on every family."""

import pytest
import torch

import videor1.models.sampler as sampler_module
import videor1.models.shared_prompt as shared_module
from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.models.generation import SamplingParams
from videor1.models.inputs import load_sample_media, processor_inputs, prompt_text, vision_factor
from videor1.models.load import load_model_and_processor
from videor1.models.sampler import sample_completions
from videor1.models.shared_prompt import RowMap, shared_prompt_attention
from videor1.models.tiny import FAMILIES


def test_row_map_places_each_row_in_its_prompts_slots():
    rows = RowMap(torch.tensor([0, 0, 0, 1, 2, 2]), 3)
    assert rows.width == 3 and rows.grid.tolist() == [0, 1, 2, 3, 6, 7] and not rows.full
    rows.select(torch.tensor([0, 2, 3, 5]))  # rows 1 and 4 finished and left the batch
    assert rows.owners.tolist() == [0, 0, 1, 2] and rows.width == 2 and rows.grid.tolist() == [0, 1, 2, 4]
    assert RowMap(torch.tensor([0, 0, 1, 1]), 2).full


def written_out(query, keys, values, prompt_keys, prompt_values, mask, owners, scale):
    """Attention of each row over [its prompt's keys | its own], one row and one head at a time."""
    rows, heads, _, dim = query.shape
    rep = heads // keys.shape[1]
    out = torch.zeros(rows, 1, heads, dim, dtype=torch.float64)
    for n in range(rows):
        for h in range(heads):
            k = torch.cat([prompt_keys[owners[n], h // rep], keys[n, h // rep]]).double()  # [Lp + t, D]
            v = torch.cat([prompt_values[owners[n], h // rep], values[n, h // rep]]).double()
            scores = (k @ query[n, h, 0].double()) * scale
            scores[~mask[n, 0, 0]] = float("-inf")
            out[n, 0, h] = scores.softmax(0) @ v
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("owners", [[0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 2, 2]], ids=["unequal", "equal"])
def test_attention_is_attention_over_each_rows_whole_keys(owners, dtype):
    generator = torch.Generator().manual_seed(0)
    prompts, kv_heads, heads, prompt_len, own, dim = 3, 2, 4, 7, 3, 8
    # bfloat16: the output rounded once (2^-8 relative), the scores kept in float32 as SDPA keeps them
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(dtype)

    prompt_keys, prompt_values = randn(prompts, kv_heads, prompt_len, dim), randn(prompts, kv_heads, prompt_len, dim)
    rows = len(owners)
    query, keys, values = randn(rows, heads, 1, dim), randn(rows, kv_heads, own, dim), randn(rows, kv_heads, own, dim)
    padding = torch.tensor([0, 2, 4])  # left padding of each prompt
    mask = torch.ones(rows, 1, 1, prompt_len + own, dtype=torch.bool)
    for n, p in enumerate(owners):
        mask[n, 0, 0, : padding[p]] = False
    row_map = RowMap(torch.tensor(owners), prompts)
    got = shared_prompt_attention(query, keys, values, prompt_keys, prompt_values, mask, row_map, scaling=0.3)
    expected = written_out(query, keys, values, prompt_keys, prompt_values, mask, owners, 0.3)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, **tolerance)

    keep = torch.tensor([0, 2, 3, 5])  # rows that go on after two finished
    row_map.select(keep)
    got = shared_prompt_attention(query[keep], keys[keep], values[keep], prompt_keys, prompt_values, mask[keep],
                                  row_map, scaling=0.3)
    expected = written_out(query[keep], keys[keep], values[keep], prompt_keys, prompt_values, mask[keep],
                           [owners[i] for i in keep], 0.3)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, **tolerance)


@pytest.fixture(scope="module")
def prompts(synth_root):
    """Two video questions and an image question (unequal lengths: left padding)."""
    samples = load_dataset(synth_root / "train.json", synth_root).samples
    videos = [s for s in samples if s.data_type == "video"][:2]
    return [videos[0], next(s for s in samples if s.data_type == "image"), videos[1]]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_sampler_draws_the_same_tokens_from_shared_and_copied_prompts(family, tiny_models, prompts,
                                                                          monkeypatch):
    model, processor = load_model_and_processor(tiny_models(family), dtype="float32")
    media_config = MediaConfig(video_min_pixels=3136, video_max_pixels=3136, image_min_pixels=3136,
                               image_max_pixels=3136, max_frames=4)
    media = [load_sample_media(s, media_config, vision_factor(processor)) for s in prompts]
    inputs = processor_inputs(processor, [prompt_text(processor, s) for s in prompts], media)
    assert not inputs["attention_mask"].all()  # some prompt is left-padded
    # a third of the vocabulary ends a row: rows finish at different steps and leave the batch as they do
    vocabulary = len(processor.tokenizer)
    monkeypatch.setattr(sampler_module, "eos_token_ids", lambda m, t: list(range(vocabulary // 3, vocabulary * 2 // 3)))
    calls = []
    attention = shared_module.shared_prompt_attention
    monkeypatch.setattr(shared_module, "shared_prompt_attention",
                        lambda *a, **k: calls.append(a[0].shape[0]) or attention(*a, **k))
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9)

    def sample(share: bool):
        return sample_completions(model, processor.tokenizer, inputs, params, [4, 3, 2],
                                  generator=torch.Generator().manual_seed(1), share_prompts=share)

    copied = sample(False)
    assert not calls  # the copied path never reaches the shared attention
    shared = sample(True)
    assert calls and min(calls) < max(calls)  # decoded from the shared prompts, and rows left the batch
    assert torch.equal(shared.ids, copied.ids) and torch.equal(shared.mask, copied.mask)
    torch.testing.assert_close(shared.logprobs, copied.logprobs, rtol=1e-5, atol=1e-5)


def test_both_dispatches_stay_registered_under_sdpa():
    """The sampler's and the scorer's dispatch wrap each other; each finds its own marker on the outer one."""
    from transformers import AttentionInterface

    import videor1.rl.prefix_attention  # noqa: F401 (registers the scorer's dispatch)

    sdpa = AttentionInterface._global_mapping["sdpa"]
    assert sdpa.shares_prompt and sdpa.shares_prefix
