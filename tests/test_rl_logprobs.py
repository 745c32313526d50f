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
from videor1.rl.logprobs import CompletionScorer, truncated_logprobs

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
        logp = CompletionScorer(model)(dict(inputs), ids, mask, owners).logp
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
        logp, vision, _ = CompletionScorer(model)(dict(inputs), completions.ids, completions.mask, owners)
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


def test_truncated_logprobs_hand_computed():
    # probabilities [0.5, 0.3, 0.15, 0.05]; top_p 0.7 keeps a token while the mass ranked above it is < 0.7:
    # 0.5 (above: 0), 0.3 (above: 0.5); not 0.15 (above: 0.8). Renormalised over 0.8: 0.625 and 0.375
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().view(1, 1, 4).expand(1, 4, 4)  # [N=1, T=4, V=4]
    ids = torch.tensor([[0, 1, 2, 3]])
    got = truncated_logprobs(logits, ids, top_k=None, top_p=0.7)
    expected = torch.tensor([[0.625, 0.375, 0.0, 0.0]]).log()
    torch.testing.assert_close(got, expected)
    # top_k 1 keeps the most likely token only, whatever top_p; chunks of one row give the same numbers
    got = truncated_logprobs(logits, ids, top_k=1, top_p=1.0, rows_per_chunk=1)
    torch.testing.assert_close(got, torch.tensor([[0.0, -float("inf"), -float("inf"), -float("inf")]]))


def test_sampled_logprobs_equal_the_truncated_distribution_generate_sampled(setup):
    """top_p 0.9 at temperature 0.8: the scorer's `sampled_logp` are transformers' warped scores, renormalised."""
    model, processor, inputs = setup
    eos = eos_token_ids(model, processor.tokenizer)
    torch.manual_seed(0)
    out = model.generate(
        **inputs, do_sample=True, temperature=0.8, top_k=0, top_p=0.9, max_new_tokens=10, num_return_sequences=G,
        eos_token_id=eos, pad_token_id=processor.tokenizer.pad_token_id, output_scores=True,
        return_dict_in_generate=True,
    )
    ids = out.sequences[:, inputs["input_ids"].shape[1]:]  # [N, T]
    mask = completion_mask(ids, eos)
    warped = torch.stack([step.log_softmax(-1).gather(1, ids[:, t, None]).squeeze(1)
                          for t, step in enumerate(out.scores)], 1)  # [N, T] under TopPLogitsWarper's nucleus
    owners = [i // G for i in range(ids.shape[0])]
    with torch.no_grad():
        scores = CompletionScorer(model)(dict(inputs), ids, mask, owners, temperature=0.8, top_p=0.9)
    assert ((scores.sampled_logp - warped).abs() * mask).max() < 1e-4
    assert torch.equal(scores.sampled_logp[mask == 0], torch.zeros(int((mask == 0).sum())))
    # the full distribution's log-probs are lower by the nucleus's missing mass: what a gap metric must not see
    assert ((warped - scores.logp) * mask).sum() / mask.sum() > 1e-3
