"""Answer parsing shared by the rewards and the evaluation (one parser, two uses).

Deviations from the original Video-R1 code, and why:
- `extract_answer` takes the *last* `<answer>…</answer>`; the original took the first, so a model that
  drafts an answer inside its reasoning and corrects it later was scored on the draft.
- `parse_choice` reads the option letter from "A", "(a)", "A. text", "Option B"…; the original compared
  raw strings, so "A." against "A" scored 0.
- `parse_number` takes the first number in the text and understands thousands separators, signs and
  exponents; the original called `float()` on the whole string, so "3 meters" failed to parse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

# Conservative on purpose: a letter only counts when it cannot be the first word of a sentence
# ("I think…", "A cat…"), i.e. it stands alone, is bracketed, is followed by . ) : or is named an option.
_CHOICE_ALONE = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:]?")
_CHOICE_BRACKETED = re.compile(r"[(\[]([A-Za-z])[)\]](?![A-Za-z0-9])")
_CHOICE_PUNCTUATED = re.compile(r"([A-Za-z])[.):](?=\s|$)")
_CHOICE_NAMED = re.compile(r"(?:option|choice)\b\s*:?\s*[(\[]?([A-Za-z])(?![A-Za-z0-9])", re.IGNORECASE)

# Thousands-grouped digits come first so "1,000" is one number; the sign must not follow a word
# character so "x-5" or "3-4" do not turn into negative numbers.
_NUMBER = re.compile(
    r"(?:(?<!\w)[+-])?"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)"
    r"(?:[eE][+-]?\d+)?"
)
_UNICODE_MINUS = "\u2212"


def extract_answer(text: str) -> str | None:
    """Stripped content of the last `<answer>…</answer>` in `text`, or None when there is none."""
    matches = _ANSWER.findall(text)
    return matches[-1].strip() if matches else None


def parse_choice(text: str) -> str | None:
    """Upper-case option letter from "A", "a", "(A)", "A.", "A) text", "A. text", "Option A"; else None."""
    # Markdown bold ("**A**") is common in chat-tuned models and never part of the letter
    text = text.strip().strip("*").strip()
    whole = _CHOICE_ALONE.fullmatch(text)
    if whole:
        return whole.group(1).upper()
    for pattern in (_CHOICE_BRACKETED, _CHOICE_PUNCTUATED, _CHOICE_NAMED):
        match = pattern.match(text)
        if match:
            return match.group(1).upper()
    return None


def parse_number(text: str) -> float | None:
    """First finite number in `text` ("2", "-3.5", "1,000.5", "+4", "1e3", "3.14 meters"); else None."""
    match = _NUMBER.search(text.replace(_UNICODE_MINUS, "-"))
    if match is None:
        return None
    value = float(match.group(0).replace(",", ""))
    return value if math.isfinite(value) else None


def parse_numbers(text: str) -> list[float]:
    """Every finite number in `text`, in order, by the same rule as `parse_number`."""
    values = (float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text.replace(_UNICODE_MINUS, "-")))
    return [value for value in values if math.isfinite(value)]


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """Text of a TRL completion: a plain string, or the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    # Multimodal chat templates store content as parts: [{"type": "text", "text": ...}, ...]
    return "".join(part.get("text", "") for part in content if part.get("type", "text") == "text")
