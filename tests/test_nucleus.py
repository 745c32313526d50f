"""Top-p without sorting the vocabulary: the tie rule against a reference written out here, the rejection
route's draws against the truncated distribution (seeded chi-squared tests), and the sort after too many draws.

HF agreement on tie-free logits is tested in test_sampler.py."""

import pytest
import torch

from tests.test_sampler import chi2_critical, hf_kept
from videor1.models import nucleus
from videor1.models.generation import SamplingParams
from videor1.models.nucleus import CANDIDATES, kept_mask, truncate
from videor1.models.sampler import sample_next


def reference_kept(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """[N, V] True where the mass of the tokens with a strictly greater logit is below top_p, summed pairwise."""
    probs = logits.double().softmax(-1)  # [N, V]
    greater = logits[:, None, :] > logits[:, :, None]  # [N, i, j]: token j's logit above token i's
    above = (greater * probs[:, None, :]).sum(-1)
    return above < top_p


def test_tokens_tied_at_the_edge_are_kept_together():
    # probabilities 0.7046, three tied at 0.0953, two at 0.0047: the first tie has 0.7046 above it, the second
    # 0.7999 in HF's sorted order, so at top_p 0.75 HF keeps one of the three (which one is its sort's choice)
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, -2.0, -2.0]])
    assert int(torch.isfinite(hf_kept(logits, [], 1.0, None, 0.75)).sum()) == 2
    assert kept_mask(logits, None, 0.75).tolist() == [[True, True, True, True, False, False]]
    # the mass above the last tie is 0.7046 too: below 0.80 all three stay, at 0.70 all three go
    assert kept_mask(logits, None, 0.70).tolist() == [[True, False, False, False, False, False]]


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.95])
def test_kept_tokens_follow_the_rule_written_out_with_many_ties(top_p):
    gen = torch.Generator().manual_seed(3)
    scale = torch.tensor([0.2, 0.5, 1.0, 2.0, 4.0, 8.0])[:, None]
    logits = (torch.randn(6, 300, generator=gen) * scale).round(decimals=1)  # ties everywhere
    expected = reference_kept(logits, top_p)
    assert torch.equal(kept_mask(logits, None, top_p), expected)
    sizes = expected.sum(1)
    assert (sizes <= CANDIDATES).any() and (sizes > CANDIDATES).any()  # both the candidates and the sort decided


def draws(logits: torch.Tensor, top_p: float, seed: int, rounds: int = 10) -> torch.Tensor:
    """[rows, V] counts of `rounds` seeded draws for each row of `logits` repeated 1,000 times."""
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_p=top_p)
    gen = torch.Generator().manual_seed(seed)
    batch = logits.repeat(1000, 1)
    counts = torch.zeros(logits.shape)
    for _ in range(rounds):
        tokens, _ = sample_next(batch, params, None, gen)
        for row in range(logits.shape[0]):
            counts[row] += torch.bincount(tokens[row :: logits.shape[0]], minlength=logits.shape[1])
    return counts


def assert_truncated_distribution(counts: torch.Tensor, logits: torch.Tensor, top_p: float) -> None:
    kept = reference_kept(logits, top_p)
    assert (counts[~kept] == 0).all()  # nothing outside the nucleus, ties included
    expected = logits.double().softmax(-1).masked_fill(~kept, 0.0)
    expected = expected / expected.sum(-1, keepdim=True) * counts.sum(-1, keepdim=True)
    for row in range(logits.shape[0]):
        observed, wanted = counts[row][kept[row]], expected[row][kept[row]]
        assert float(((observed - wanted) ** 2 / wanted).sum()) < chi2_critical(int(kept[row].sum()) - 1), row


def flat_rows() -> torch.Tensor:
    """Two rows of 400 tokens too flat for the candidates to hold top_p 0.3, one in 5 runs of equal logits."""
    smooth = torch.linspace(1.0, 0.0, 400)
    steps = (smooth * 4).round() / 4
    return torch.stack([smooth, steps])


def test_rows_beyond_the_candidates_are_drawn_by_rejection_from_the_truncated_distribution():
    logits = flat_rows()
    for top_p in (0.3, 0.9):
        decided = truncate(logits, logits.logsumexp(-1, keepdim=True), None, top_p)
        assert decided is not None and decided[0] == [] and decided[1].tolist() == [0, 1]  # rejection for both
        assert_truncated_distribution(draws(logits, top_p, seed=11), logits, top_p)


def test_rows_still_drawing_after_the_last_rejection_are_sorted(monkeypatch):
    # one draw each: at top_p 0.3 the nuclei hold 0.30 and 0.50 of the mass, so 60% of the draws fall outside
    # and those rows go to the sort
    monkeypatch.setattr(nucleus, "_MAX_DRAWS", 1)
    logits = flat_rows()
    rejected = []
    original = nucleus._sorted

    def spy(scaled, log_total, top_p, rows, limit):
        rejected.append(rows.numel())
        return original(scaled, log_total, top_p, rows, limit)

    monkeypatch.setattr(nucleus, "_sorted", spy)
    counts = draws(logits, 0.3, seed=5, rounds=5)
    assert 0.55 * 2000 * 5 < sum(rejected) < 0.65 * 2000 * 5
    assert_truncated_distribution(counts, logits, 0.3)


def test_a_generator_seed_gives_the_same_tokens():
    logits = torch.cat([flat_rows(), torch.randn(6, 400, generator=torch.Generator().manual_seed(0)) * 6])
    groups, rest = truncate(logits, logits.logsumexp(-1, keepdim=True), None, 0.5)
    assert groups and rest.tolist() == [0, 1]  # the candidates and the rejection both decide rows
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.5)
    first = sample_next(logits, params, None, torch.Generator().manual_seed(9))[0]
    again = sample_next(logits, params, None, torch.Generator().manual_seed(9))[0]
    assert torch.equal(first, again)
