"""T-GRPO temporal reward (Video-R1, arXiv 2503.21776, eq. 1-2), per question.

For each video question the policy answers G times on the frames in order and G̃ times on shuffled
frames. With p and p̃ the fractions of correct answers in the two groups, the temporal reward is
r_t = α if p ≥ μ·p̃ else 0, added to every correct answer of the ordered group.

Deviations from the original Video-R1 code, and why:
- p and p̃ are computed per question ([B, G] -> [B]); the original averaged them over the whole device
  batch, which is only the paper's quantity at batch size 1.
- α, μ and the correctness threshold are arguments (see `PRESETS`, defined with the config in
  `videor1.config` and re-exported here) instead of the literals 0.3, 0.8 and 0.1 inline in the trainer;
  the paper states μ = 1.0 and binary correctness, the released code used μ = 0.8 and accuracy > 0.1.
- What p and p̃ average is an argument too. The paper: the fraction of correct answers. The released code:
  the mean accuracy *reward* (`acc_mean >= 0.8 * shuffled_acc_mean` in its grpo_trainer.py), which differs
  for continuous rewards (OCR, free-form, regression): ordered accuracies 0.2 × 8 against shuffled 0.9 × 4
  pass the paper's test at threshold 0.1 (1.0 ≥ 0.8 · 1.0) and fail the released one (0.2 < 0.8 · 0.9).

`temporal_bonus` is the one place the reward α·granted·correct is computed; the trainer reaches it through
`videor1.rl.scoring.temporal_rewards`, which selects a batch's video questions.

Known critique (Video-R1 issue #51): with 0/1 accuracy and equal format rewards, adding +α to every correct
answer of a group is an affine map of that group's rewards (R = a + c with a ∈ {0, 1} and c the shared
format reward becomes (1 + α)·a + c), and group normalisation (R − mean) / std is invariant to it, so the
advantages do not change (up to the 1e-4 added to the std). The temporal signal only reaches the gradient
when the rewards in a group are not binary (continuous accuracy, differing format or length rewards) or
when rewards are not normalised per group. `tests/test_rewards_shaping.py` demonstrates both numerically.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from videor1.config import PRESETS, TemporalPreset

__all__ = ["PRESETS", "TemporalPreset", "TemporalStats", "is_correct", "temporal_bonus", "temporal_stats"]


class TemporalStats(NamedTuple):
    """Per-question quantities of the temporal test, for the reward and for logging."""

    p: Tensor
    """[B] fraction of correct answers on ordered frames."""
    p_shuffled: Tensor
    """[B] fraction of correct answers on shuffled frames (p̃)."""
    granted: Tensor
    """[B] bool: p ≥ μ·p̃ and at least one ordered answer is correct, i.e. some answer got the bonus."""


def is_correct(accuracy: Tensor, threshold: float) -> Tensor:
    """Correctness of continuous accuracy rewards: accuracy > threshold, same shape, bool."""
    return accuracy > threshold


def temporal_stats(
    ordered_correct: Tensor, shuffled_correct: Tensor, *, mu: float, ordered_scores: Tensor | None = None,
    shuffled_scores: Tensor | None = None, atol: float = 1e-6,
) -> TemporalStats:
    """Per-question p, p̃ and granted mask: ordered_correct [B, G], shuffled_correct [B, G̃] -> three [B].

    p and p̃ are the groups' fractions of correct answers (the paper), or the means of `ordered_scores` [B, G]
    and `shuffled_scores` [B, G̃] when given (the released code averages the accuracy rewards).
    """
    if ordered_correct.dim() != 2 or shuffled_correct.dim() != 2:
        raise ValueError(
            f"expected [B, G] and [B, G'] tensors; got {tuple(ordered_correct.shape)} "
            f"and {tuple(shuffled_correct.shape)}"
        )
    if ordered_correct.shape[0] != shuffled_correct.shape[0]:
        raise ValueError(
            "ordered and shuffled groups disagree on B: "
            f"{ordered_correct.shape[0]} vs {shuffled_correct.shape[0]}"
        )
    if ordered_correct.shape[1] == 0 or shuffled_correct.shape[1] == 0:
        raise ValueError("each question needs at least one ordered and one shuffled completion")
    if (ordered_scores is None) != (shuffled_scores is None):
        raise ValueError("give both ordered_scores and shuffled_scores, or neither")
    ordered = ordered_correct if ordered_scores is None else ordered_scores
    shuffled = shuffled_correct if shuffled_scores is None else shuffled_scores
    if ordered.shape != ordered_correct.shape or shuffled.shape != shuffled_correct.shape:
        raise ValueError("scores and correctness must have the same shapes")
    p = ordered.float().mean(dim=1)  # [B]
    p_shuffled = shuffled.float().mean(dim=1)  # [B]
    # a correct ordered answer: with none, p ≥ μ·p̃ may hold (vacuously, or on scores below the threshold)
    # but rewards nobody, and counting it would inflate the logged temporal-reward rate
    # atol: the boundary p == μ·p̃ must grant, but e.g. 0.8 * 0.75 is not exactly 0.6 in binary floats
    granted = (p >= mu * p_shuffled - atol) & ordered_correct.bool().any(dim=1)  # [B]
    return TemporalStats(p=p, p_shuffled=p_shuffled, granted=granted)


def temporal_bonus(
    ordered_correct: Tensor, shuffled_correct: Tensor, *, alpha: float, mu: float,
    ordered_scores: Tensor | None = None, shuffled_scores: Tensor | None = None, atol: float = 1e-6,
) -> tuple[Tensor, TemporalStats]:
    """T-GRPO temporal reward and its test: ordered_correct [B, G], shuffled_correct [B, G̃] -> bonus [B, G], stats.

    bonus is α on each correct ordered answer of a question that passed p ≥ μ·p̃, else 0 (float32); p and p̃
    as in `temporal_stats` (fractions correct, or the means of the scores when given).
    """
    stats = temporal_stats(ordered_correct, shuffled_correct, mu=mu, ordered_scores=ordered_scores,
                           shuffled_scores=shuffled_scores, atol=atol)  # three [B]
    bonus = alpha * (stats.granted.unsqueeze(1) & ordered_correct.bool()).float()  # [B, G]
    return bonus, stats
