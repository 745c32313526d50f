"""Token log-probabilities from final hidden states, the vocabulary projection done a chunk of tokens at a time.

Scoring K tokens the plain way builds the [K, V] logits, casts them to float32 (a copy), divides by the
temperature (another copy) and keeps them for backward: at Qwen2.5-VL's V = 152,064 with G = 8 completions of
768 tokens that is 3.7 GB per float32 copy for one prompt. Here each chunk of `chunk_tokens` tokens goes through
lm_head, the temperature, the suppressed tokens and the log-softmax on its own, and only the chunk's hidden
states are kept for backward, which rebuilds the chunk's logits: no tensor of [K, V] ever exists and the logits'
memory is bounded by one chunk, whatever K is. The price is one more lm_head matmul per chunk in backward.

Two routes. A plain `nn.Linear` head (Qwen's lm_head) goes through `_LinearLogprobs`, whose backward turns the
rebuilt logits into the gradient in place (softmax minus one-hot): one [C, V] buffer per pass, where autograd
through logsumexp and gather makes several (measured 1.5x slower on SFT's step). Any other head, or one with
forward hooks, is called as a module under `torch.utils.checkpoint`, so whatever wraps it sees an ordinary call.
FSDP2 keeps the root's parameters, lm_head among them, gathered through the scorer's forward and backward, so
both routes read the gathered weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from videor1.models.nucleus import filter_logits

DEFAULT_CHUNK_TOKENS = 1024
"""Tokens per chunk: at V = 152,064 one chunk's float32 logits are 0.62 GB."""


class TokenLogprobs(NamedTuple):
    """What `token_logprobs` returns."""

    logp: torch.Tensor
    """[K] log-probs of the ids under softmax(logits / temperature) without the suppressed tokens."""
    sampled: torch.Tensor | None
    """[K] log-probs after top-k / top-p and renormalisation, no gradient (-inf where truncated); None when
    neither truncates."""


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] without materialising the full log-probabilities."""
    picked = torch.gather(logits, -1, ids.unsqueeze(-1)).squeeze(-1)  # [..., ]
    return picked - torch.logsumexp(logits, dim=-1)


def scaled_logits(
    head: nn.Module, hidden: torch.Tensor, temperature: float, suppressed: torch.Tensor | None
) -> torch.Tensor:
    """[C, V] float32 logits / temperature with the suppressed tokens at -inf: what rollouts sample from."""
    logits = head(hidden).float() / temperature  # [C, V]
    if suppressed is not None:  # the sampler renormalises over the tokens it may emit; so does the scorer
        logits.index_fill_(-1, suppressed, float("-inf"))  # in place: no second [C, V] copy
    return logits


def truncated_logprobs(
    logits: torch.Tensor, ids: torch.Tensor, *, top_k: int | None, top_p: float, rows_per_chunk: int = 1024
) -> torch.Tensor:
    """[N, T] log-probs of `ids` after top-k then top-p (HF's and vLLM's rule) and renormalisation; no gradient.

    logits [N, T, V] already divided by the temperature. A token the truncation removes gets -inf. Rows are
    filtered in chunks, so at most `rows_per_chunk` x V extra values live at once.
    """
    flat, flat_ids = logits.detach().reshape(-1, logits.shape[-1]), ids.reshape(-1)  # [N*T, V], [N*T]
    with torch.no_grad():
        parts = [
            selective_log_softmax(filter_logits(chunk, top_k, top_p), chunk_ids)
            for chunk, chunk_ids in zip(flat.split(rows_per_chunk), flat_ids.split(rows_per_chunk), strict=True)
        ]
    return torch.cat(parts).view(ids.shape)  # [N, T]


class _LinearLogprobs(torch.autograd.Function):
    """One chunk through a linear head: log-probs forward, and a backward that rebuilds the chunk's logits and
    turns them into the gradient in place (softmax minus one-hot), so each pass holds one [C, V] buffer."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, temperature, suppressed, top_k, top_p):  # noqa: ANN001, ANN205
        logits = _linear_logits(hidden, weight, bias, temperature, suppressed)  # [C, V] float32
        lse = torch.logsumexp(logits, dim=-1)  # [C]
        logp = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lse  # [C]
        if top_p < 1.0 or top_k:
            sampled = truncated_logprobs(logits, ids, top_k=top_k, top_p=top_p)  # [C], no gradient
        else:
            sampled = logp.new_empty(0)
        ctx.save_for_backward(hidden, weight, bias, ids, lse, suppressed)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(sampled)
        return logp, sampled

    @staticmethod
    def backward(ctx, grad_logp, _grad_sampled):  # noqa: ANN001, ANN205
        hidden, weight, bias, ids, lse, suppressed = ctx.saved_tensors
        logits = _linear_logits(hidden, weight, bias, ctx.temperature, suppressed)  # [C, V], rebuilt
        # d logp_c / d z_cv = (1[v = id_c] - softmax(z_c)_v) / T, with z the raw logits (suppressed: p = 0)
        scale = (grad_logp / ctx.temperature).unsqueeze(-1)  # [C, 1]
        grad = logits.sub_(lse.unsqueeze(-1)).exp_().mul_(-scale)  # [C, V]: -p * g / T, in place
        grad.scatter_add_(-1, ids.unsqueeze(-1), scale)
        grad = grad.to(weight.dtype)
        grad_hidden = grad @ weight if ctx.needs_input_grad[0] else None  # [C, H]
        grad_weight = grad.T @ hidden if ctx.needs_input_grad[1] else None  # [V, H]
        grad_bias = grad.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def _plain_linear(head: nn.Module) -> bool:
    """An nn.Linear nobody hooks: its weight can be used directly (a hook may change what the module returns)."""
    from torch.nn.modules import module

    hooks = (head._forward_hooks, head._forward_pre_hooks, module._global_forward_hooks,
             module._global_forward_pre_hooks)  # fmt: skip
    return type(head) is nn.Linear and not any(hooks)


def _linear_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float,
    suppressed: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """[C, V] float32 logits / temperature with the suppressed tokens at -inf, as `scaled_logits` for a Linear."""
    logits = F.linear(hidden, weight, bias).float()
    logits.div_(temperature)
    if suppressed is not None:
        logits.index_fill_(-1, suppressed, float("-inf"))
    return logits


class _Chunk:
    """One chunk's log-probs; the truncated ones are computed on the first call only, not on the recompute."""

    def __init__(self, head: nn.Module, temperature: float, suppressed: torch.Tensor | None, top_k: int | None,
                 top_p: float):  # fmt: skip
        self.head, self.temperature, self.suppressed = head, temperature, suppressed
        self.top_k, self.top_p = top_k, top_p
        self.sampled: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        logits = scaled_logits(self.head, hidden, self.temperature, self.suppressed)  # [C, V]
        if (self.top_p < 1.0 or self.top_k) and self.sampled is None:  # backward's recompute needs the logits only
            self.sampled = truncated_logprobs(logits, ids, top_k=self.top_k, top_p=self.top_p)
        return selective_log_softmax(logits, ids)  # [C]


def token_logprobs(
    hidden: torch.Tensor,
    head: nn.Module,
    ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    suppressed: Sequence[int] | torch.Tensor | None = None,
    top_k: int | None = None,
    top_p: float = 1.0,
    chunk_tokens: int | None = DEFAULT_CHUNK_TOKENS,
) -> TokenLogprobs:
    """Log-probs of `ids` [...] given the hidden states [..., H] that predict them, `chunk_tokens` at a time.

    `chunk_tokens=None` projects every token at once and keeps the [K, V] logits for backward (no recompute).
    """
    if chunk_tokens is not None and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1 or None, got {chunk_tokens}")
    shape = ids.shape
    flat, flat_ids = hidden.reshape(-1, hidden.shape[-1]), ids.reshape(-1)  # [K, H], [K]
    if suppressed is not None and not isinstance(suppressed, torch.Tensor):
        suppressed = torch.tensor(list(suppressed), dtype=torch.long, device=flat.device) if len(suppressed) else None
    truncates = top_p < 1.0 or bool(top_k)
    recompute = chunk_tokens is not None and torch.is_grad_enabled()
    recompute = recompute and (flat.requires_grad or any(p.requires_grad for p in head.parameters()))
    step = chunk_tokens or max(flat_ids.numel(), 1)
    # no tokens still goes through the head once: a sharded zero-weight pass must reach the same parameters as
    # the other processes' backward
    chunks = list(zip(flat.split(step), flat_ids.split(step), strict=True)) or [(flat, flat_ids)]
    logps, sampled = [], []
    for chunk, chunk_ids in chunks:
        if chunk_tokens is not None and _plain_linear(head):  # Qwen's head: the hand-written gradient
            logp, truncated = _LinearLogprobs.apply(
                chunk, head.weight, head.bias, chunk_ids, temperature, suppressed, top_k, top_p
            )
            logps.append(logp)
            sampled.append(truncated)
            continue
        # any other head module (a wrapped one): keep the chunk's hidden states and rebuild its logits in backward
        part = _Chunk(head, temperature, suppressed, top_k, top_p)
        logps.append(checkpoint(part, chunk, chunk_ids, use_reentrant=False) if recompute else part(chunk, chunk_ids))
        sampled.append(part.sampled)
    logp = torch.cat(logps).view(shape)
    return TokenLogprobs(logp, torch.cat(sampled).view(shape) if truncates else None)  # type: ignore[arg-type]
