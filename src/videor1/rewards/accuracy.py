"""Accuracy reward: score an extracted answer against the ground truth, per problem type.

Deviations from the original Video-R1 code, and why:
- numerical: the original scored 0 whenever exactly one side had a "." or "," ("2" vs "2.0",
  "1000" vs "1,000"), then compared `float()` of the whole string. We compare the parsed numbers
  rounded to `decimals` places, so any spelling of the same number scores 1.
- regression: the original's relative error was (|ŷ − y| + 1e-9) / (|y| + 1e-9), which is 1 for an exact
  answer when y = 0, so the exact answer scored 0. We use the absolute error when y = 0.
- multiple choice: option letters via `parse_choice` instead of raw string equality ("A." = "A").
- OCR: the original divided by the reference length without guarding an empty reference; we score an
  empty reference 1 only against an empty prediction.
- The answer is taken from the last `<answer>` tag, not the first (see `answers.py`).
- The ROUGE scorer is built once, not on every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from rouge_score import rouge_scorer

from videor1.rewards.answers import completion_text, extract_answer, parse_choice, parse_number

PROBLEM_TYPES = ("multiple choice", "numerical", "OCR", "free-form", "regression")


def multiple_choice_score(prediction: str, truth: str) -> float:
    """1.0 when both parse to the same option letter, else 0.0."""
    letter = parse_choice(prediction)
    return float(letter is not None and letter == parse_choice(truth))


def numerical_score(prediction: str, truth: str, *, decimals: int = 2) -> float:
    """1.0 when both parse to numbers equal after rounding to `decimals` places, else 0.0."""
    pred, gt = parse_number(prediction), parse_number(truth)
    if pred is None or gt is None:
        return 0.0
    return float(round(pred, decimals) == round(gt, decimals))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance divided by the number of reference words (can exceed 1)."""
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        # undefined for an empty reference: perfect when both are empty, unboundedly wrong otherwise
        return 0.0 if not hyp else math.inf
    # one row of the edit-distance table at a time: previous[j] = distance(ref[:i-1], hyp[:j])
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, start=1):
            substitution = previous[j - 1] + (ref_word != hyp_word)
            current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
        previous = current
    return previous[-1] / len(ref)


def ocr_score(prediction: str, truth: str) -> float:
    """1 − word error rate, clipped to [0, 1]; case-sensitive (as the original), whitespace-normalised."""
    return min(1.0, max(0.0, 1.0 - word_error_rate(truth, prediction)))


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    """The shared ROUGE scorer, built on first use (building it loads the stemmer)."""
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def free_form_score(prediction: str, truth: str) -> float:
    """Mean F1 of ROUGE-1, ROUGE-2 and ROUGE-L (stemmed, lower-cased by rouge-score's tokenizer)."""
    scores = _rouge().score(truth, prediction)
    return sum(score.fmeasure for score in scores.values()) / len(scores)


def regression_score(prediction: str, truth: str) -> float:
    """1 − min(1, |ŷ − y| / |y|); the absolute error 1 − min(1, |ŷ|) when y = 0; 0.0 on a parse failure."""
    pred, gt = parse_number(prediction), parse_number(truth)
    if pred is None or gt is None:
        return 0.0
    error = abs(pred - gt) / abs(gt) if gt != 0 else abs(pred)
    return 1.0 - min(1.0, error)


_SCORERS: Mapping[str, Callable[[str, str], float]] = {
    "multiple choice": multiple_choice_score,
    "numerical": numerical_score,
    "OCR": ocr_score,
    "free-form": free_form_score,
    "regression": regression_score,
}


def accuracy_score(prediction: str | None, truth: str, problem_type: str) -> float:
    """Score one extracted answer against the truth for `problem_type` (one of PROBLEM_TYPES), in [0, 1]."""
    scorer = _SCORERS.get(problem_type)
    if scorer is None:
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {PROBLEM_TYPES}")
    if prediction is None:
        return 0.0
    return scorer(prediction, truth)


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[str | Sequence[Mapping[str, Any]]],
    *,
    solution: Sequence[str],
    problem_type: Sequence[str],
    **kwargs: Any,
) -> list[float]:
    """TRL-style reward: accuracy of each completion's last `<answer>` against its `solution`."""
    rewards = []
    for completion, sol, kind in zip(completions, solution, problem_type, strict=True):
        truth = extract_answer(sol)
        # Some datasets store the bare answer without tags
        truth = sol.strip() if truth is None else truth
        rewards.append(accuracy_score(extract_answer(completion_text(completion)), truth, kind))
    return rewards
