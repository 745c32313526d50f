"""Rollouts and log-probs: what the trainer scores is exactly what was sampled (docs/design.md §8).

For every family, a mixed image+video batch with left padding is generated with HF `generate`; the
trainer's scorer (vision encoded once per prompt, features repeated through `mm_encoder_outputs`) must give
the same per-token log-probs as the logits `generate` sampled from.
"""

import pytest
import torch

from tests.batches import mixed_batch
from videor1.models.generation import (
    SamplingParams,
    completion_mask,
    eos_token_ids,
    generate_completions,
    suppressed_token_ids,
)
from videor1.models.load import vision_tower
from videor1.models.tiny import FAMILIES
from videor1.rl.logprobs import CompletionScorer

G = 3


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tiny_models, synth_root):
    return mixed_batch(tiny_models(request.param), synth_root)


def test_scorer_log_probs_equal_the_sampling_distribution(setup):
    model, processor, inputs = setup
    torch.manual_seed(0)
    out = model.generate(
        **inputs, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=10, num_return_sequences=G,
        eos_token_id=eos_token_ids(model, processor.tokenizer), pad_token_id=processor.tokenizer.pad_token_id,
        output_logits=True, return_dict_in_generate=True,
    )
    ids = out.sequences[:, inputs["input_ids"].shape[1]:]  # [N, T]
    mask = completion_mask(ids, eos_token_ids(model, processor.tokenizer))
    sampled = torch.stack(out.logits, 1).float().log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    owners = [p for p in range(3) for _ in range(G)]
    with torch.no_grad():
        logp, _ = CompletionScorer(model)(dict(inputs), ids, mask, owners)
    assert logp.shape == ids.shape
    assert ((logp - sampled).abs() * mask).max() < 1e-4


def test_vision_encoder_runs_once_per_prompt(setup):
    model, processor, inputs = setup
    calls = []
    hook = vision_tower(model).register_forward_hook(lambda module, args, kwargs_out: calls.append(args))
    try:
        completions = generate_completions(
            model, processor.tokenizer, inputs, SamplingParams(max_new_tokens=4), num_generations=G
        )
        calls.clear()  # generation's prefill is HF's business; scoring is ours
        owners = [p for p in range(3) for _ in range(G)]
        logp, vision = CompletionScorer(model)(dict(inputs), completions.ids, completions.mask, owners)
    finally:
        hook.remove()
    # one call for the image, one for the two videos: 3 media items encoded for 9 scored sequences
    assert len(calls) == 2
    assert len(vision["video"].pooler_output) == 2 and len(vision["image"].pooler_output) == 1
    assert logp.shape[0] == 3 * G and torch.isfinite(logp).all()


def test_completions_stop_at_eos_and_never_sample_vision_tokens(setup):
    model, processor, inputs = setup
    tokenizer = processor.tokenizer
    banned = suppressed_token_ids(tokenizer)
    assert len(banned) == 5
    video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")

    def favour_video_pad(module, args, logits):  # make <|video_pad|> by far the most likely token everywhere
        logits[..., video_pad] += 100.0
        return logits

    hook = model.get_output_embeddings().register_forward_hook(favour_video_pad)
    try:
        torch.manual_seed(0)
        completions = generate_completions(
            model, tokenizer, inputs, SamplingParams(max_new_tokens=6), num_generations=G
        )
    finally:
        hook.remove()
    assert not torch.isin(completions.ids[completions.mask.bool()], torch.tensor(banned)).any()
    assert completions.prompt_mismatches == 0


def test_completion_mask_keeps_tokens_through_the_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])  # EOS id 2
    assert completion_mask(ids, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
