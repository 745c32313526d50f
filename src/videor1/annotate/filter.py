"""Rule filtering of teacher rationales: pure functions over one output and its row's ground truth.

An output is kept when (checked in this order, the first failure is the reason):
1. `format`: it is exactly `<think>…</think>` then `<answer>…</answer>` (the reward's `is_well_formed`);
2. `think_too_short` / `think_too_long`: the stripped `<think>` text is within the length bounds
   (characters, or tokens with a tokenizer's counter);
3. `accuracy`: the reward's `accuracy_score` of its last `<answer>` against the row's solution is at
   least the threshold (0.6 by default, as the original Video-R1 CoT filtering).
Accuracy is computed for every output, kept or not, so rejected files show how close each one came.
The kept `process` is the `<think>…</think>` block exactly as the teacher wrote it, which the schema's
`process` rule accepts (one non-empty, non-nested block).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from videor1.rewards import accuracy_score, extract_answer, is_well_formed

REASONS: tuple[str, ...] = ("format", "think_too_short", "think_too_long", "accuracy")
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclass(frozen=True)
class FilterRules:
    """Acceptance rules for one teacher output."""

    threshold: float = 0.6
    """Keep when the accuracy reward is at least this."""
    min_think: int = 1
    """Fewest characters (or tokens) of stripped <think> text; at least 1, since SFT rows need a rationale."""
    max_think: int | None = None
    """Most characters (or tokens) of stripped <think> text; None for no bound."""

    def __post_init__(self) -> None:
        if self.min_think < 1:
            raise ValueError(f"min_think must be at least 1, got {self.min_think}")
        if self.max_think is not None and self.max_think < self.min_think:
            raise ValueError(f"max_think ({self.max_think}) is below min_think ({self.min_think})")


@dataclass(frozen=True)
class Verdict:
    """The filter's decision on one output."""

    kept: bool
    reason: str | None
    """None when kept, else one of REASONS."""
    detail: str
    accuracy: float
    process: str | None = None
    """The `<think>…</think>` block, when the output is well formed."""
    think_length: int | None = None


def think_block(text: str) -> str | None:
    """The first `<think>…</think>` block of `text` (tags included), or None."""
    match = _THINK.search(text)
    return match.group(0) if match else None


def judge(
    output: str, *, truth: str, problem_type: str, rules: FilterRules, length: Callable[[str], int] = len
) -> Verdict:
    """Apply the rules to one output; `truth` is the row's answer (inside its solution's <answer> tags)."""
    accuracy = accuracy_score(extract_answer(output), truth, problem_type)
    process = think_block(output)
    if process is None or not is_well_formed(output):
        return Verdict(False, "format", "not exactly <think>...</think><answer>...</answer>", accuracy)
    size = length(process[len("<think>") : -len("</think>")].strip())
    if size < rules.min_think:
        return Verdict(False, "think_too_short", f"<think> length {size} < {rules.min_think}", accuracy, process, size)
    if rules.max_think is not None and size > rules.max_think:
        return Verdict(False, "think_too_long", f"<think> length {size} > {rules.max_think}", accuracy, process, size)
    if accuracy < rules.threshold:
        return Verdict(False, "accuracy", f"accuracy {accuracy:.3f} < {rules.threshold}", accuracy, process, size)
    return Verdict(True, None, f"accuracy {accuracy:.3f}", accuracy, process, size)


def best_kept(verdicts: Sequence[Verdict]) -> int | None:
    """Index of the kept verdict with the highest accuracy (the first on ties), or None when none is kept."""
    kept = [i for i, v in enumerate(verdicts) if v.kept]
    return max(kept, key=lambda i: (verdicts[i].accuracy, -i)) if kept else None
