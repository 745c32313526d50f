"""Top-k and top-p truncation of scaled logits with HF's warpers' rules, and draws from it without sorting.

`TopPLogitsWarper` sorts every row's whole vocabulary at every decoding step and keeps a token iff the mass
ranked strictly above it is below top_p. Here the mass above a token is the mass of the tokens with a strictly
greater logit, so tokens with equal logits are kept or dropped together; HF's answer on such ties depends on
its sort's order, and without ties the two rules are the same. A row is decided by one of two routes:

- the `CANDIDATES` most likely tokens, when they already hold top_p of the mass (a trained policy, nearly
  always): the kept tokens are a prefix of them;
- otherwise the token is drawn from the whole distribution and kept iff the mass above it is below top_p,
  drawing again if not. The nucleus holds at least top_p of the mass, so a draw is kept with probability at least
  top_p (at most 1.05 draws on average at 0.95), and what is kept follows the truncated distribution exactly. The flat
  rows this route takes (a random-initialised model's nucleus at top_p 0.95 is ~500 of its 576 tokens) cost a
  running sum and a masked sum instead of a sort. Rows still pending after `_MAX_DRAWS` draws are sorted.

`kept_mask` (the scorer's truncated log-probs) ranks the rows the candidates do not decide with a full sort:
the same rule, so the scorer never calls a sampled token truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Top-p looks at this many candidates before anything else: RL policies put almost all their mass on far fewer.
CANDIDATES = 64

# Draws by rejection before a row is sorted: each is kept with probability >= top_p, so this is only reached
# for a tiny top_p on a flat row.
_MAX_DRAWS = 16


@dataclass(frozen=True)
class Ranked:
    """Some rows' most likely tokens, most likely first; the kept tokens are the first `count` of each row."""

    rows: torch.Tensor | None  # [R] the rows described; None = all of them
    ids: torch.Tensor  # [R, C] token ids in descending order of logit
    cumulative: torch.Tensor  # [R, C] float64 running sum of their probabilities (after top-k)
    above: torch.Tensor  # [R, C] float64 mass of the tokens with a strictly greater logit
    count: torch.Tensor  # [R] kept tokens, >= 1

    def draw(self, uniform: torch.Tensor) -> torch.Tensor:
        """[R] tokens drawn from each row's kept prefix by inverting its running sum at uniform [R] in [0, 1)."""
        last = (self.count - 1)[:, None]  # [R, 1]
        target = uniform[:, None] * self.cumulative.gather(1, last)  # [R, 1], within the kept mass
        # right=True skips zero-probability tokens: their running sum equals the previous one
        position = torch.searchsorted(self.cumulative, target, right=True).clamp(max=last)  # [R, 1]
        return self.ids.gather(1, position).squeeze(1)

    def kept(self, finite: torch.Tensor) -> torch.Tensor:
        """[R, V] True on the rows' kept tokens (`finite` gives the shape)."""
        rank = torch.arange(self.ids.shape[1], device=self.ids.device)
        return torch.zeros_like(finite).scatter_(1, self.ids, rank < self.count[:, None])

    def select(self, keep: torch.Tensor) -> Ranked:
        """The `keep` rows [S] of these (indices into this group's rows)."""
        rows = keep if self.rows is None else self.rows[keep]
        return Ranked(rows, self.ids[keep], self.cumulative[keep], self.above[keep], self.count[keep])


def _ranked(
    values: torch.Tensor, ids: torch.Tensor, log_total: torch.Tensor, top_p: float, rows: torch.Tensor | None,
    limit: torch.Tensor | None,
) -> Ranked:
    """Top-p over descending `values`: a token is kept iff the mass of strictly greater logits is < top_p."""
    # float64 sums: a float32 running sum would quantise the tail tokens' share of the draw to its ulp
    cumulative = (values - log_total).exp().double().cumsum(-1)  # [R, C]
    position = torch.arange(values.shape[1], device=values.device).expand_as(values)
    # each token's mass above is the running sum before the first token of its run of equal logits
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    first = position.masked_fill(~starts, 0).cummax(-1).values  # [R, C]
    above = F.pad(cumulative[:, :-1], (1, 0)).gather(1, first)
    if top_p < 1.0:
        # TopPLogitsWarper removes the ascending `cumsum <= 1 - top_p`, i.e. keeps the mass above < top_p; the mass
        # above only grows down the order, so the kept tokens are a prefix (the first always, its mass above is 0)
        count = (above < top_p).sum(-1)
        if limit is not None:
            count = torch.minimum(count, limit)
    else:
        count = limit if limit is not None else torch.full_like(ids[:, 0], ids.shape[1])
    return Ranked(rows, ids, cumulative, above, count)


def _sorted(
    scaled: torch.Tensor, log_total: torch.Tensor, top_p: float, rows: torch.Tensor, limit: torch.Tensor | None
) -> Ranked:
    """The `rows` ranked over their whole vocabulary: the sort HF does for every row."""
    values, ids = scaled[rows].sort(-1, descending=True)  # [R, V]
    return _ranked(values, ids, log_total[rows], top_p, rows, None if limit is None else limit[rows])


def truncate(
    scaled: torch.Tensor, log_total: torch.Tensor, top_k: int | None, top_p: float
) -> tuple[list[Ranked], torch.Tensor] | None:
    """Rows decided by their candidates (or top-k's sort), and [R] the rows left to top-p alone; None if no truncation.

    The rows left are those whose nucleus outgrows the candidates, without top-k: `draw` samples them by
    rejection, `kept_mask` sorts them.
    """
    vocab = scaled.shape[-1]
    k = min(top_k, vocab) if top_k else None
    every = torch.arange(scaled.shape[0], device=scaled.device)
    if k is None and top_p >= 1.0:
        return None
    if k is None and bool((scaled.amax(-1, keepdim=True) - log_total).exp().mul(CANDIDATES).lt(top_p).all()):
        # every row too flat for the candidates to hold top_p (each holds at most the top token's share)
        return [], every
    values, ids = torch.topk(scaled, k if k is not None else min(CANDIDATES, vocab))  # [N, K], descending
    if k is not None:
        # TopKLogitsWarper keeps every token tied with the k-th: top-p then renormalises over all of them
        kth = values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        log_total = scaled.logsumexp(-1, keepdim=True)  # [N, 1]
        limit = (scaled > float("-inf")).sum(-1)  # [N], > k only on ties with the k-th token
        complete = limit == k
    else:
        limit = None
        complete = torch.zeros_like(ids[:, 0], dtype=torch.bool)
    head = _ranked(values, ids, log_total, top_p, None, limit)
    # the candidates decide a row when they hold all of top-k's tokens, or when the mass above the last of them
    # already reaches top_p (every token after them has at least that much above it, ties with it included)
    resolved = complete | (head.above[:, -1] >= top_p) if top_p < 1.0 else complete
    if bool(resolved.all()):
        return [head], every[:0]
    rest = (~resolved).nonzero().squeeze(1)
    done = [head.select(resolved.nonzero().squeeze(1))] if bool(resolved.any()) else []
    if k is not None:
        # top-k's ties with the k-th token: rare, and the sort handles them
        return [*done, _sorted(scaled, log_total, top_p, rest, limit)], every[:0]
    return done, rest


def invert(cumulative: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """[R, 1] positions drawn by inverting each row's running sum [R, V] at uniform [R] in [0, 1)."""
    # right=True skips zero-probability (suppressed) tokens: their running sum equals the previous one
    drawn = torch.searchsorted(cumulative, uniform[:, None] * cumulative[:, -1:], right=True)
    return drawn.clamp(max=cumulative.shape[-1] - 1)


def _rejection(
    scaled: torch.Tensor, log_total: torch.Tensor, top_p: float, uniform: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """[R] tokens under top-p by rejection, -1 where `_MAX_DRAWS` draws all fell outside the nucleus."""
    probs = (scaled - log_total).exp()  # [R, V] float32, the values `_ranked` sums
    cumulative = probs.double().cumsum(-1)
    tokens = torch.full_like(uniform, -1, dtype=torch.long)
    pending = None  # the rows still drawing; None = all (the first draw, which needs no copies)
    for _ in range(_MAX_DRAWS):
        values, sums, mass = (scaled, cumulative, probs) if pending is None else (
            scaled[pending], cumulative[pending], probs[pending])
        drawn = invert(sums, uniform)  # [P, 1]
        above = torch.where(values > values.gather(1, drawn), mass, 0.0).sum(-1, dtype=torch.float64)
        kept = above < top_p
        if pending is None:
            tokens = drawn.squeeze(1).masked_fill(~kept, -1)
            pending = (~kept).nonzero().squeeze(1)
        else:
            tokens[pending[kept]] = drawn.squeeze(1)[kept]
            pending = pending[~kept]
        if not pending.numel():
            break
        uniform = torch.rand(pending.numel(), generator=generator, dtype=torch.float64, device=scaled.device)
    return tokens


def draw(
    scaled: torch.Tensor, log_total: torch.Tensor, top_k: int | None, top_p: float, uniform: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[N] tokens under top-k then top-p, row i drawn at `uniform[i]` first.

    The rows the candidates do not decide are drawn by rejection, taking further uniforms from `generator`.
    """
    decided = truncate(scaled, log_total, top_k, top_p)
    if decided is None:
        # the whole vocabulary in its own order: inverting the running sum needs no sort, and is several times
        # cheaper than torch.multinomial on a CPU
        return invert((scaled - log_total).exp().double().cumsum(-1), uniform).squeeze(1)
    groups, rest = decided
    tokens = torch.empty_like(uniform, dtype=torch.long)
    for group in groups:
        if group.rows is None:
            return group.draw(uniform)
        tokens[group.rows] = group.draw(uniform[group.rows])
    if rest.numel():
        whole = rest.numel() == scaled.shape[0]  # every row (a flat batch): no copy of the logits
        drawn = _rejection(scaled if whole else scaled[rest], log_total if whole else log_total[rest], top_p,
                           uniform if whole else uniform[rest], generator)
        tokens[rest] = drawn
        if bool((drawn < 0).any()):
            late = rest[drawn < 0]
            tokens[late] = _sorted(scaled, log_total, top_p, late, None).draw(
                torch.rand(late.numel(), generator=generator, dtype=torch.float64, device=scaled.device))
    return tokens


def kept_mask(scaled: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """[N, V] True on the tokens top-k then top-p keep (HF's warpers) from scaled logits."""
    finite = torch.isfinite(scaled)
    log_total = scaled.logsumexp(-1, keepdim=True)
    decided = truncate(scaled, log_total, top_k, top_p)
    if decided is None:
        return finite
    groups, rest = decided
    if rest.numel():
        groups = [*groups, _sorted(scaled, log_total, top_p, rest, None)]
    kept = torch.zeros_like(finite)
    for group in groups:
        if group.rows is None:
            kept = group.kept(finite)
        else:
            kept[group.rows] = group.kept(finite[group.rows])
    return kept & finite


def filter_logits(scaled: torch.Tensor, top_k: int | None, top_p: float) -> torch.Tensor:
    """Scaled logits with the tokens top-k/top-p remove at -inf, as HF's warpers leave them."""
    return scaled.masked_fill(~kept_mask(scaled, top_k, top_p), float("-inf"))
