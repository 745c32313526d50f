"""Format reward: the completion must be exactly `<think>…</think>` then `<answer>…</answer>`.

Deviation from the original Video-R1 code, and why: the original used
`re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", text, re.DOTALL)`, whose lazy `.*?` still
stretches across tags, so "<think>a</think><answer>b</answer><think>c</think><answer>d</answer>" and nested
tags passed. We also require each of the four tags to occur exactly once. Surrounding whitespace is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from videor1.rewards.answers import completion_text

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_LAYOUT = re.compile(r"<think>.*</think>\s*<answer>.*</answer>", re.DOTALL)


def is_well_formed(text: str) -> bool:
    """True when stripped `text` is one `<think>…</think>`, optional whitespace, one `<answer>…</answer>`."""
    text = text.strip()
    # With every tag present exactly once, the layout regex can only match in the intended order
    return all(text.count(tag) == 1 for tag in _TAGS) and _LAYOUT.fullmatch(text) is not None


def format_reward(
    prompts: Sequence[Any], completions: Sequence[str | Sequence[Mapping[str, Any]]], **kwargs: Any
) -> list[float]:
    """TRL-style reward: 1.0 for each well-formed completion (see `is_well_formed`), else 0.0."""
    return [float(is_well_formed(completion_text(completion))) for completion in completions]
