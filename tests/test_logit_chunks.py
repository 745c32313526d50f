"""Log-probs from hidden states a chunk of tokens at a time (`videor1.models.head`) equal the whole-vocabulary path.

The reference in each test is written out here as the scorer and SFT computed it before chunking: the [K, V]
logits at once, cast to float32, divided by the temperature, suppressed tokens at -inf, log-softmax. Equal means
log-probs within 1e-5 and every gradient within 1e-4 relative, on every family, plain and with LoRA and
gradient checkpointing; and no tensor of [K, V] is kept for backward.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.batches import mixed_batch
from videor1.models import head as head_module
from videor1.models.generation import completion_mask, eos_token_ids, suppressed_token_ids
from videor1.models.head import token_logprobs, truncated_logprobs
from videor1.models.load import prepare_for_training, unwrap_peft
from videor1.models.tiny import FAMILIES
from videor1.rl.logprobs import CompletionScorer
from videor1.sft.trainer import AssistantLoss

K, H, V = 23, 16, 97
G, T = 3, 9


def _reference(hidden, head, ids, temperature=1.0, suppressed=()):
    """The unchunked path: all logits at once."""
    logits = head(hidden).float() / temperature  # [K, V]
    if suppressed:
        logits[..., list(suppressed)] = float("-inf")
    return logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1), logits


class _Wrapped(nn.Module):
    """A head that is not a plain nn.Linear (as a wrapped one would be): the generic, recomputing path."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(H, V, bias=True)
        self.weight = self.inner.weight

    def forward(self, hidden):
        return self.inner(hidden)


def _pure_case(seed=0, kind="linear"):
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(H, V, bias=False) if kind == "linear" else _Wrapped()
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=generator))
        for name, param in head.named_parameters():
            if "bias" in name:
                param.copy_(torch.randn(V, generator=generator))
    hidden = torch.randn(K, H, generator=generator, requires_grad=True)
    ids = torch.randint(5, V, (K,), generator=generator)  # never a suppressed token (0-4)
    return head, hidden, ids


def _grads(logp, hidden, head):
    weights = torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)  # every token weighted differently
    hidden.grad = None
    head.zero_grad(set_to_none=True)
    (logp * weights).sum().backward()
    return [hidden.grad.clone()] + [p.grad.clone() for p in head.parameters()]


@pytest.mark.parametrize("kind", ["linear", "wrapped"])
@pytest.mark.parametrize("chunk", [1, 5, 23, 64, None])
def test_chunks_equal_the_whole_vocabulary_path(chunk, kind):
    head, hidden, ids = _pure_case(kind=kind)
    want, _ = _reference(hidden, head, ids, temperature=0.7, suppressed=(0, 3))
    want_grads = _grads(want, hidden, head)
    got = token_logprobs(hidden, head, ids, temperature=0.7, suppressed=[0, 3], chunk_tokens=chunk)
    assert got.sampled is None
    assert (got.logp - want).abs().max() < 1e-5
    for g, w in zip(_grads(got.logp, hidden, head), want_grads, strict=True):
        assert (g - w).norm() / w.norm() < 1e-5


@pytest.mark.parametrize("kind", ["linear", "wrapped"])
def test_truncated_log_probs_come_with_the_chunks_and_once(kind, monkeypatch):
    head, hidden, ids = _pure_case(1, kind)
    _, logits = _reference(hidden, head, ids, temperature=0.9)
    ids[::2] = logits.argmax(-1)[::2]  # half the tokens the likeliest, kept by any truncation; the rest random
    want = truncated_logprobs(logits, ids, top_k=7, top_p=0.8)
    truncations = []

    def counted(*args, **kwargs):
        truncations.append(1)
        return truncated_logprobs(*args, **kwargs)

    monkeypatch.setattr(head_module, "truncated_logprobs", counted)
    got = token_logprobs(hidden, head, ids, temperature=0.9, top_k=7, top_p=0.8, chunk_tokens=4)
    assert torch.equal(got.sampled.isinf(), want.isinf()) and got.sampled.isinf().any()
    finite = want.isfinite()
    assert (got.sampled[finite] - want[finite]).abs().max() < 1e-5
    assert not got.sampled.requires_grad
    assert len(truncations) == 6  # ceil(23 / 4) chunks
    got.logp.sum().backward()
    assert len(truncations) == 6  # backward rebuilds the logits, not the truncation


@pytest.mark.parametrize("kind", ["linear", "wrapped"])
def test_no_vocabulary_sized_tensor_is_kept_for_backward(kind):
    head, hidden, ids = _pure_case(2, kind)
    hidden = hidden.detach().repeat(8, 1).requires_grad_()  # K = 184 tokens
    ids = ids.repeat(8)
    biggest = {}
    for chunk in (32, None):
        saved = []

        def pack(tensor, saved=saved):
            saved.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            logp = token_logprobs(hidden, head, ids, temperature=0.7, suppressed=[0], chunk_tokens=chunk).logp
        biggest[chunk] = max(saved)
        logp.sum().backward()  # the chunked graph still backpropagates after the hooks are gone
    assert biggest[None] >= hidden.shape[0] * V  # the whole path keeps [K, V] (several copies)
    # chunked: the hidden states, the head's weight and per-token numbers (all smaller here), never even one
    # chunk's logits
    assert biggest[32] < 32 * V


@pytest.mark.parametrize("kind", ["linear", "wrapped"])
def test_no_tokens_still_reach_the_head_and_bad_chunks(kind):
    head, hidden, ids = _pure_case(kind=kind)
    empty = token_logprobs(hidden[:0], head, ids[:0], top_p=0.5)
    assert empty.logp.shape == (0,) and empty.sampled.shape == (0,)
    # a sharded zero-weight pass (SFT's micro-batch whose samples all failed) needs the head in its backward
    empty.logp.sum().backward()
    assert all(p.grad is not None and not p.grad.any() for p in head.parameters())
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1 or None"):
        token_logprobs(hidden, head, ids, chunk_tokens=0)


# --- on the tiny models: the scorer and SFT's loss ---------------------------------------------------------------


@pytest.fixture(scope="module", params=FAMILIES)
def setup(request, tiny_models, synth_root):
    model, processor, inputs = mixed_batch(tiny_models(request.param), synth_root)
    eos = eos_token_ids(model, processor.tokenizer)
    suppressed = suppressed_token_ids(processor.tokenizer)
    allowed = torch.tensor([t for t in range(model.config.get_text_config().vocab_size)
                            if t not in suppressed and t not in eos])
    ids = allowed[torch.randint(len(allowed), (3 * G, T), generator=torch.Generator().manual_seed(3))]  # [N, T]
    ids[4, 3] = eos[0]  # one row ends early: pads after it
    mask = completion_mask(ids, eos)
    ids = ids.masked_fill(mask == 0, processor.tokenizer.pad_token_id)
    return model, dict(inputs), ids, mask, suppressed


def _copy(model, variant):
    torch.manual_seed(0)
    copy_ = copy.deepcopy(model)
    copy_.train()
    if variant == "lora+checkpointing":
        copy_ = prepare_for_training(copy_, freeze_vision=True, gradient_checkpointing=True, lora_r=4,
                                     lora_dropout=0.0, lora_targets=["q_proj", "v_proj", "down_proj"])
        for name, param in copy_.named_parameters():
            if "lora_B" in name:  # LoRA's B starts at zero: non-zero, the same in every copy
                torch.nn.init.normal_(param, std=0.05)
    return copy_


def _old_full_scoring(model, inputs, ids, mask, suppressed, temperature):
    """The scorer before chunking: the model's own logits for the last T+1 positions, all at once."""
    scorer = CompletionScorer(model, suppressed)  # only for its input building, not its log-probs
    from videor1.rl.logprobs import encode_vision, repeat_vision, sequence_inputs

    owners = [p for p in range(3) for _ in range(G)]
    config = unwrap_peft(model).config
    seq, orders = sequence_inputs(inputs, ids, mask, owners, image_token_id=config.image_token_id,
                                  video_token_id=config.video_token_id)
    vision = repeat_vision(encode_vision(model, inputs), orders)
    out = scorer.model(**seq, mm_encoder_outputs=vision, logits_to_keep=T + 1, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature  # [N, T, V]
    logits[..., suppressed] = float("-inf")
    return logits.log_softmax(-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


def _backward(model, logp, mask):
    weights = torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)
    (logp * mask * weights).sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", ["plain", "lora+checkpointing"])
@pytest.mark.parametrize("mode", ["full", "shared_prefix"])
def test_chunked_scorer_equals_the_whole_vocabulary_scorer(setup, mode, variant):
    model, inputs, ids, mask, suppressed = setup
    reference = _copy(model, variant)
    want = _old_full_scoring(reference, inputs, ids, mask, suppressed, 0.8)
    want_grads = _backward(reference, want, mask)
    chunked = _copy(model, variant)
    owners = [p for p in range(3) for _ in range(G)]
    got = CompletionScorer(chunked, suppressed, scoring=mode, chunk_tokens=4)(inputs, ids, mask, owners,
                                                                              temperature=0.8).logp
    assert ((got - want).abs() * mask).max() < 1e-5
    got_grads = _backward(chunked, got, mask)
    assert got_grads.keys() == want_grads.keys() and want_grads
    if variant != "plain":
        assert all("lora" in name for name in got_grads)
    for name, grad in want_grads.items():
        assert (grad - got_grads[name]).norm() / grad.norm().clamp_min(1e-12) < 1e-4, name


def test_chunked_sft_loss_equals_cross_entropy(setup):
    model, inputs, ids, mask, suppressed = setup
    labels = inputs["input_ids"].clone()
    labels[:, : labels.shape[1] // 2] = -100  # the loss only where a label exists
    results = []
    for chunk in (3, None):
        copy_ = _copy(model, "plain")
        nll, count = AssistantLoss(copy_, chunk)(inputs, labels)
        nll.backward()
        grads = {n: p.grad.clone() for n, p in copy_.named_parameters() if p.grad is not None}
        results.append((nll.detach(), count, grads))
    reference = _copy(model, "plain")
    base = unwrap_peft(reference)
    hidden = base.model(**inputs, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    want = F.cross_entropy(base.lm_head(hidden[:, :-1][keep]).float(), targets[keep], reduction="sum")
    want.backward()
    want_grads = {n: p.grad.clone() for n, p in reference.named_parameters() if p.grad is not None}
    for nll, count, grads in results:
        assert int(count) == int(keep.sum()) and abs(float(nll) - float(want)) <= 1e-5 * abs(float(want))
        for name, grad in want_grads.items():
            assert (grad - grads[name]).norm() / grad.norm().clamp_min(1e-12) < 1e-4, name


def test_a_hooked_head_is_called_as_a_module():
    # a forward hook may change what lm_head returns (steering, a quantisation wrapper): it must be honoured
    head, hidden, ids = _pure_case(3)
    hook = head.register_forward_hook(lambda module, args, out: out + 5.0 * (torch.arange(V) == 7))
    try:
        want, _ = _reference(hidden, head, ids, temperature=0.7)
        got = token_logprobs(hidden, head, ids, temperature=0.7, chunk_tokens=5).logp
    finally:
        hook.remove()
    plain = token_logprobs(hidden, head, ids, temperature=0.7, chunk_tokens=5).logp
    assert (got - want).abs().max() < 1e-5 and (plain - want).abs().max() > 1e-2
