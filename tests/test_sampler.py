"""The lean rollout sampler: HF `generate`'s distribution, the scorer's log-probs, each prompt prefilled once.

Decoding is checked against HF on real tiny models of every family (greedy tokens identical, log-probs equal to
`CompletionScorer`'s for unequal copies per prompt, which exercises the expanded cache and positions of every
row, also after finished rows leave the batch; ordered and shuffled prompts merged into one call give what each
gives alone); truncation against HF's own warpers on random logits, and sampling frequencies with seeded
chi-squared tests.
"""

import copy

import pytest
import torch
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from tests.batches import MEDIA, mixed_batch
from videor1.data.dataset import load_dataset
from videor1.models.generation import (
    Completions,
    SamplingParams,
    _generate,
    build_generation_config,
    completion_mask,
    eos_token_ids,
    suppressed_token_ids,
)
from videor1.models.inputs import (
    SampleMedia,
    load_sample_media,
    permute_video,
    processor_inputs,
    prompt_text,
    vision_factor,
)
from videor1.models.nucleus import CANDIDATES, filter_logits
from videor1.models.sampler import (
    _ReservedLayer,
    concat_inputs,
    sample_completions,
    sample_next,
    scale_logits,
    split_completions,
)
from videor1.models.tiny import FAMILIES
from videor1.rl.logprobs import CompletionScorer

TEMPERATURE = 0.7


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tiny_models, synth_root):
    return mixed_batch(tiny_models(request.param), synth_root)


def owners_of(copies):
    return [p for p, n in enumerate(copies) for _ in range(n)]


def hf_kept(logits, suppressed, temperature, top_k, top_p):
    """Tokens HF's processors leave finite: suppression, then the warpers in `generate`'s order."""
    scores = logits.clone()
    scores[:, suppressed] = float("-inf")
    warpers = [TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    for warper in warpers:
        scores = warper(None, scores)
    return scores


def test_greedy_tokens_equal_hf_generate(setup):
    model, processor, inputs = setup
    tokenizer = processor.tokenizer
    params = SamplingParams(max_new_tokens=10, temperature=0)
    eos = eos_token_ids(model, tokenizer)
    config = build_generation_config(params, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                     suppress_tokens=suppressed_token_ids(tokenizer))
    reference = _generate(model, inputs, config).sequences[:, inputs["input_ids"].shape[1]:]  # [3, T]
    reference = reference.masked_fill(completion_mask(reference, eos) == 0, tokenizer.pad_token_id)
    completions = sample_completions(model, tokenizer, inputs, params, [1, 1, 1])
    assert torch.equal(completions.ids, reference)
    assert len(set(reference.flatten().tolist())) > 3  # the tokens depend on the prompt and the step
    assert completions.prompt_mismatches == 0


def test_eager_attention_decodes_with_its_own_mask_format(setup):
    """The 4-D decode mask is SDPA's; an eager model gets the 2-D one and still decodes generate's tokens."""
    model, processor, inputs = setup
    eager = copy.deepcopy(model)
    eager.config.get_text_config()._attn_implementation = "eager"
    params = SamplingParams(max_new_tokens=10, temperature=0)
    eos = eos_token_ids(eager, processor.tokenizer)
    config = build_generation_config(params, eos_token_id=eos, pad_token_id=processor.tokenizer.pad_token_id,
                                     suppress_tokens=suppressed_token_ids(processor.tokenizer))
    reference = _generate(eager, inputs, config).sequences[:, inputs["input_ids"].shape[1]:]
    reference = reference.masked_fill(completion_mask(reference, eos) == 0, processor.tokenizer.pad_token_id)
    assert torch.equal(sample_completions(eager, processor.tokenizer, inputs, params, [1, 1, 1]).ids, reference)


def test_log_probs_equal_the_scorer_for_unequal_copies(setup):
    model, processor, inputs = setup
    suppressed = suppressed_token_ids(processor.tokenizer)
    copies = [3, 2, 3]
    params = SamplingParams(max_new_tokens=10, temperature=TEMPERATURE, top_p=0.9)
    completions = sample_completions(model, processor.tokenizer, inputs, params, copies,
                                     generator=torch.Generator().manual_seed(0))
    assert completions.ids.shape == completions.logprobs.shape == (8, 10)
    with torch.no_grad():
        logp = CompletionScorer(model, suppressed)(dict(inputs), completions.ids, completions.mask,
                                                   owners_of(copies), temperature=TEMPERATURE).logp
    assert ((logp - completions.logprobs).abs() * completions.mask).max() < 1e-4
    assert len({tuple(row) for row in completions.ids.tolist()}) > 3  # the copies of a prompt are sampled apart


def test_eos_stops_rows_which_then_hold_pad_and_vision_tokens_never_appear(setup):
    """Rows stop at different steps, so finished rows also leave the decode batch: their log-probs must hold."""
    model, processor, inputs = setup
    tokenizer = processor.tokenizer
    eos = eos_token_ids(model, tokenizer)
    suppressed = suppressed_token_ids(tokenizer)
    banned = torch.tensor(suppressed)
    boost = {"eos": 0.0}

    def steer(module, args, logits):  # vision placeholders overwhelmingly likely, EOS as likely as asked
        logits[..., banned] += 100.0
        logits[..., eos[0]] += boost["eos"]
        return logits

    copies = [2, 3, 2]
    hook = model.get_output_embeddings().register_forward_hook(steer)
    try:
        params = SamplingParams(max_new_tokens=12, temperature=1.0)
        boost["eos"] = 6.0  # around a third of the mass: rows stop at different steps
        some = sample_completions(model, tokenizer, inputs, params, copies, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():  # the scorer sees the same steered logits
            logp = CompletionScorer(model, suppressed)(dict(inputs), some.ids, some.mask, owners_of(copies)).logp
        boost["eos"] = 100.0  # every row stops on its first token, so the loop stops after one step
        first = sample_completions(model, tokenizer, inputs, params, copies, generator=torch.Generator().manual_seed(1))
    finally:
        hook.remove()
    assert first.ids.shape == (7, 1) and (first.ids == eos[0]).all() and first.mask.all()
    lengths = some.lengths
    assert len(set(lengths.tolist())) > 2 and (lengths < some.ids.shape[1]).sum() > 2
    assert not torch.isin(some.ids, banned).any()
    for row, length in zip(some.ids, lengths.tolist(), strict=True):
        if length < some.ids.shape[1] or row[-1] in eos:
            assert row[length - 1] in eos and not torch.isin(row[: length - 1], torch.tensor(eos)).any()
            assert (row[length:] == tokenizer.pad_token_id).all()
    assert (some.logprobs[some.mask == 0] == 0).all()
    assert ((logp - some.logprobs).abs() * some.mask).max() < 1e-4
    assert some.texts == tokenizer.batch_decode(some.ids, skip_special_tokens=True)


def shuffled_inputs(processor, synth_root):
    """Two video prompts with their frames reversed, like T-GRPO's shuffled group.

    The second is longer than any prompt of the mixed batch, so merging re-pads the ordered prompts as well.
    """
    samples = [s for s in load_dataset(synth_root / "train.json", synth_root).samples if s.is_video][1:3]
    media = []
    for sample in samples:
        video = load_sample_media(sample, MEDIA, vision_factor(processor)).video
        media.append(SampleMedia(video=permute_video(video, list(range(len(video.frame_indices)))[::-1])))
    return processor_inputs(processor, [prompt_text(processor, s) for s in samples], media)


def test_ordered_and_shuffled_prompts_sample_as_one_batch(setup, synth_root):
    model, processor, inputs = setup
    tokenizer = processor.tokenizer
    other = shuffled_inputs(processor, synth_root)
    assert other["input_ids"].shape[1] > inputs["input_ids"].shape[1]
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    merged = concat_inputs([inputs, other], tokenizer.pad_token_id)
    assert merged["input_ids"].shape == (5, max(inputs["input_ids"].shape[1], other["input_ids"].shape[1]))
    together = sample_completions(model, tokenizer, merged, greedy, [2] * 3 + [3] * 2)
    ordered, shuffled = split_completions(together, [6, 6])
    for part, alone in ((ordered, sample_completions(model, tokenizer, inputs, greedy, [2] * 3)),
                        (shuffled, sample_completions(model, tokenizer, other, greedy, [3] * 2))):
        assert torch.equal(part.ids, alone.ids) and torch.equal(part.mask, alone.mask)
        assert part.texts == alone.texts
        assert (part.logprobs - alone.logprobs).abs().max() < 1e-4


def test_split_completions_cuts_each_chunk_to_its_longest_row():
    ids = torch.tensor([[5, 2, 0, 0], [5, 5, 2, 0], [5, 5, 5, 5]])
    mask = completion_mask(ids, [2])
    whole = Completions(ids=ids, mask=mask, texts=["a", "b", "c"], prompt_mismatches=0, logprobs=-mask.float())
    first, second = split_completions(whole, [2, 1])
    assert first.ids.tolist() == [[5, 2, 0], [5, 5, 2]] and first.texts == ["a", "b"]
    assert second.ids.tolist() == [[5, 5, 5, 5]] and second.logprobs.shape == (1, 4)
    with pytest.raises(ValueError, match="add up"):
        split_completions(whole, [2, 2])


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, None, 0.9), (0.7, None, 0.95), (1.3, None, 0.5), (0.7, 20, 1.0), (1.0, 200, 0.9), (0.5, 100, 0.7),
])
def test_truncation_keeps_the_tokens_hf_warpers_keep(temperature, top_k, top_p):
    vocab, suppressed = 1000, [3, 17, 999]
    beyond = within = 0
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        # flat rows (the nucleus spans hundreds of tokens: the full-sort fallback) and peaked ones (the candidates)
        scale = torch.tensor([0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 1.0])[:, None]
        logits = torch.randn(8, vocab, generator=gen) * scale
        logits[7, 500] = 30.0  # one token holds almost all the mass
        expected = torch.isfinite(hf_kept(logits, suppressed, temperature, top_k, top_p))
        ours = filter_logits(scale_logits(logits, temperature, torch.tensor(suppressed)), top_k, top_p)
        assert torch.equal(torch.isfinite(ours), expected), seed
        sizes = expected.sum(1)
        beyond += int((sizes > CANDIDATES).sum())
        within += int((sizes <= CANDIDATES).sum())
        flat = logits[:4] * 0.2  # a batch too flat for any row's candidates: straight to the sort
        ours = filter_logits(scale_logits(flat, temperature, torch.tensor(suppressed)), top_k, top_p)
        assert torch.equal(torch.isfinite(ours), torch.isfinite(hf_kept(flat, suppressed, temperature, top_k, top_p)))
    # without top-k, rows whose nucleus outgrows the candidates take the full sort: both paths ran
    assert within > 0 and (beyond > 0 or top_k is not None or top_p == 1.0)


def test_top_k_keeps_ties_with_the_kth_token_as_hf_does():
    logits = (torch.randn(8, 1000, generator=torch.Generator().manual_seed(0)) * 2).round(decimals=1)  # many ties
    expected = torch.isfinite(hf_kept(logits, [], 1.0, 20, 1.0))
    assert (expected.sum(1) > 20).any()
    assert torch.equal(torch.isfinite(filter_logits(logits, 20, 1.0)), expected)


def test_samples_follow_the_truncated_distribution():
    """Seeded chi-squared test: 20,000 draws over 8 tokens against HF's warpers + softmax."""
    logits = torch.tensor([[3.0, 2.0, 1.6, 1.2, 0.9, 0.4, -0.5, 2.5]])
    suppressed = [7]  # the second most likely token: never drawn, and not part of anyone's mass
    params = SamplingParams(max_new_tokens=1, temperature=0.8, top_k=6, top_p=0.9)
    expected = hf_kept(logits, suppressed, params.temperature, params.top_k, params.top_p).softmax(-1)[0]
    kept = expected > 0
    assert kept.tolist() == [True, True, True, True, False, False, False, False]  # 3 degrees of freedom
    gen = torch.Generator().manual_seed(1234)
    counts = torch.zeros(8)
    for _ in range(10):
        tokens, logprobs = sample_next(logits.expand(2000, -1), params, suppressed, gen)
        counts += torch.bincount(tokens, minlength=8)
        scorer = (logits / params.temperature).index_fill(1, torch.tensor(suppressed), float("-inf"))
        assert torch.allclose(logprobs, scorer.log_softmax(-1)[0, tokens])
    assert counts.sum() == 20_000 and (counts[~kept] == 0).all()
    chi2 = float((((counts - 20_000 * expected) ** 2)[kept] / (20_000 * expected[kept])).sum())
    assert chi2 < 16.27  # chi-squared, 3 degrees of freedom, p = 0.001
    assert abs(chi2_critical(100) - 149.45) < 0.2  # the approximation used below, against the tabled value


def test_untruncated_samples_follow_the_tempered_distribution():
    """Seeded chi-squared test of the no-top-k, no-top-p path (the whole vocabulary in its own order)."""
    logits = torch.tensor([[0.5, 2.0, -1.0, 1.2, 0.0, 3.0, -0.3, 1.0]])
    suppressed = [2]
    params = SamplingParams(max_new_tokens=1, temperature=1.3)
    scorer = (logits / params.temperature).index_fill(1, torch.tensor(suppressed), float("-inf"))
    expected = scorer.softmax(-1)[0]
    gen = torch.Generator().manual_seed(99)
    counts = torch.zeros(8)
    for _ in range(10):
        tokens, logprobs = sample_next(logits.expand(2000, -1), params, suppressed, gen)
        counts += torch.bincount(tokens, minlength=8)
        assert torch.allclose(logprobs, scorer.log_softmax(-1)[0, tokens])
    assert counts[2] == 0  # suppressed
    kept = expected > 0
    chi2 = float((((counts - 20_000 * expected) ** 2)[kept] / (20_000 * expected[kept])).sum())
    assert chi2 < chi2_critical(int(kept.sum()) - 1)


def chi2_critical(df, z=3.0902):
    """Wilson-Hilferty approximation of the chi-squared quantile; z = 3.0902 is the normal's p = 0.001 tail."""
    return df * (1 - 2 / (9 * df) + z * (2 / (9 * df)) ** 0.5) ** 3


def test_rows_decided_by_candidates_and_by_rejection_sample_their_own_distributions():
    """One batch, alternating peaked rows (the top candidates decide) and flat ones (drawn by rejection)."""
    vocab, suppressed = 100, [0]
    flat = torch.linspace(1.0, 0.0, vocab)  # a nucleus of ~90 tokens: beyond the candidates
    peaked = torch.full((vocab,), -5.0)
    peaked[1:6] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    logits = torch.stack([peaked, flat]).repeat(1000, 1)  # [2000, V]
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.9)
    expected = hf_kept(logits[:2], suppressed, 1.0, None, 0.9).softmax(-1)  # [2, V]
    kept = expected > 0
    assert kept[0].sum() < CANDIDATES < kept[1].sum()
    gen = torch.Generator().manual_seed(7)
    counts = torch.zeros(2, vocab)
    for _ in range(10):
        tokens, _ = sample_next(logits, params, suppressed, gen)
        counts += torch.stack([torch.bincount(tokens[kind::2], minlength=vocab) for kind in (0, 1)])
    assert (counts[~kept] == 0).all()
    for row in range(2):
        observed, probs = counts[row][kept[row]], expected[row][kept[row]] * 10_000
        assert float(((observed - probs) ** 2 / probs).sum()) < chi2_critical(int(kept[row].sum()) - 1)


def test_greedy_takes_the_argmax_and_scores_at_temperature_one():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0], [2.0, 0.0, 1.0, 0.5]])
    tokens, logprobs = sample_next(logits, SamplingParams(max_new_tokens=1, temperature=0), [1])
    assert tokens.tolist() == [3, 0]
    reference = logits.index_fill(1, torch.tensor([1]), float("-inf")).log_softmax(-1)
    assert torch.allclose(logprobs, reference.gather(1, tokens[:, None]).squeeze(1))


def test_repetition_penalty_is_refused(setup):
    model, processor, inputs = setup
    params = SamplingParams(max_new_tokens=2, repetition_penalty=1.1)
    with pytest.raises(ValueError, match="repetition penalty"):
        sample_completions(model, processor.tokenizer, inputs, params, [1, 1, 1])
    with pytest.raises(ValueError, match="repetition penalty"):
        sample_next(torch.zeros(1, 4), params)


def test_reserved_cache_layer_holds_what_a_dynamic_layer_holds():
    gen = torch.Generator().manual_seed(0)
    states = [torch.randn(4, 2, n, 8, generator=gen) for n in (5, 1, 1, 1, 1)]
    plain = DynamicLayer()
    plain.update(states[0], states[0] + 1)
    reserved = _ReservedLayer(plain, capacity=8)
    for step, new in enumerate(states[1:]):
        if step == 2:  # drop a row, as the sampler does for finished rows
            for layer in (plain, reserved):
                layer.batch_select_indices(torch.tensor([0, 2, 3]))
            new = new[[0, 2, 3]]
        if step == 3:  # an update past the room: grows like a DynamicLayer
            new = torch.randn(3, 2, 4, 8, generator=gen)
        keys, values = reserved.update(new, new + 1)
        expected_keys, expected_values = plain.update(new, new + 1)
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
        assert reserved.get_seq_length() == plain.get_seq_length()
