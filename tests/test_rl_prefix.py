"""Shared-prefix scoring equals the full-sequence reference: per-token log-probs and every parameter's gradient.

For each family, the mixed batch (video, image, video: left padding, P = 3) with G = 3 completions each, of
unequal lengths (EOS mid-row, pads after it), is scored both ways on copies of one model: plain, with LoRA
adapters, and with gradient checkpointing (whose recomputation runs the attention again during backward).
"""

import copy

import pytest
import torch
from transformers import AttentionInterface, BatchFeature
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tests.batches import mixed_batch
from videor1.models.generation import (
    SamplingParams,
    completion_mask,
    eos_token_ids,
    generate_from_inputs,
    suppressed_token_ids,
)
from videor1.models.load import prepare_for_training
from videor1.models.tiny import FAMILIES
from videor1.rl.logprobs import CompletionScorer, group_size
from videor1.rl.prefix_attention import text_config

G = 3
T = 9


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tiny_models, synth_root):
    model, processor, inputs = mixed_batch(tiny_models(request.param), synth_root)
    eos = eos_token_ids(model, processor.tokenizer)
    generator = torch.Generator().manual_seed(3)
    suppressed = suppressed_token_ids(processor.tokenizer)
    allowed = torch.tensor([t for t in range(model.config.get_text_config().vocab_size)
                            if t not in suppressed and t not in eos])
    ids = allowed[torch.randint(len(allowed), (3 * G, T), generator=generator)]  # [N, T]
    # unequal lengths: EOS at 0, mid-row and never; pads after it, as rollouts hand them over
    for row, at in ((1, 0), (4, 3), (6, 7)):
        ids[row, at] = eos[0]
    mask = completion_mask(ids, eos)
    ids = ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    return model, processor, dict(inputs), ids, mask, suppressed


def _score(model, mode, inputs, ids, mask, suppressed):
    scorer = CompletionScorer(model, suppressed, scoring=mode)
    owners = [p for p in range(3) for _ in range(G)]
    logp = scorer(inputs, ids, mask, owners, temperature=0.8).logp
    # a loss that weighs every token differently, so a wrong position or row shows in the gradients
    weights = torch.linspace(0.5, 1.5, ids.numel()).view_as(logp)
    (logp * mask * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logp.detach(), grads


@pytest.mark.parametrize("variant", ["plain", "lora", "checkpointing", "lora+checkpointing"])
def test_shared_prefix_equals_full_sequence_scoring(setup, variant):
    model, _, inputs, ids, mask, suppressed = setup
    results = {}
    for mode in ("full", "shared_prefix"):
        torch.manual_seed(0)  # LoRA's B matrices start at zero: make them non-zero, the same in both copies
        copy_ = copy.deepcopy(model)
        copy_.train()
        if variant.startswith("lora"):
            copy_ = prepare_for_training(copy_, freeze_vision=True, gradient_checkpointing="checkpointing" in variant,
                                         lora_r=4, lora_dropout=0.0, lora_targets=["q_proj", "v_proj", "down_proj"])
            for name, param in copy_.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(param, std=0.05)
        elif variant == "checkpointing":
            copy_ = prepare_for_training(copy_, freeze_vision=False, gradient_checkpointing=True)
        results[mode] = _score(copy_, mode, inputs, ids, mask, suppressed)
    (full, full_grads), (shared, shared_grads) = results["full"], results["shared_prefix"]
    assert ((full - shared).abs() * mask).max() < 1e-5
    assert torch.isfinite(shared).all()  # tokens after EOS included: a NaN there would poison the masked loss
    assert full_grads.keys() == shared_grads.keys() and full_grads
    if variant.startswith("lora"):
        assert all("lora" in name for name in shared_grads)
    else:  # the vision tower's gradients flow through the shared prompt too (frozen only under LoRA here)
        assert any("visual" in name for name in shared_grads)
    for name, grad in full_grads.items():
        relative = (grad - shared_grads[name]).norm() / grad.norm().clamp_min(1e-12)
        assert relative < 1e-4, name


def test_shared_prefix_needs_prompt_major_equal_groups():
    assert group_size([0, 0, 1, 1], 2) == 2
    with pytest.raises(ValueError, match="prompt-major"):
        group_size([0, 1, 0, 1], 2)
    with pytest.raises(ValueError, match="prompt-major"):
        group_size([0, 0, 0, 1], 2)


def test_registered_attention_leaves_generation_and_full_scoring_alone(setup):
    model, processor, inputs, ids, mask, suppressed = setup
    sdpa = AttentionInterface._global_mapping["sdpa"]
    assert sdpa.shares_prefix  # importing the scorer registered the dispatching function
    params = SamplingParams(max_new_tokens=8, temperature=0)
    owners = [p for p in range(3) for _ in range(G)]
    try:
        AttentionInterface.register("sdpa", sdpa_attention_forward)  # transformers' own, for the reference
        before = generate_from_inputs(model, processor.tokenizer, BatchFeature(inputs), params)
        full_before = CompletionScorer(model, suppressed)(inputs, ids, mask, owners).logp
    finally:
        AttentionInterface.register("sdpa", sdpa)
    assert generate_from_inputs(model, processor.tokenizer, BatchFeature(inputs), params) == before
    full_after = CompletionScorer(model, suppressed)(inputs, ids, mask, owners).logp
    assert torch.equal(full_before, full_after)


def test_shared_prefix_refuses_attention_that_cannot_take_the_layout(setup):
    model = copy.deepcopy(setup[0])
    text_config(model)._attn_implementation = "eager"
    with pytest.raises(ValueError, match="model.attn_implementation=sdpa, or algorithm.scoring=full"):
        CompletionScorer(model, scoring="shared_prefix")
    CompletionScorer(model, scoring="full")  # the reference path runs on anything
