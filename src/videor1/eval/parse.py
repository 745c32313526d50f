"""The answer a model gave, read the way the benchmarks read it, on top of the rewards' parsers.

An answer inside the last `<answer>…</answer>` is read by the rewards' own parsers (`parse_choice`,
`parse_number`: one parser, two uses). Benchmarks also score models that do not use the tags, so when
there are none, or the tagged text is not a bare letter, the *conclusion* is searched: the text after the
last `</think>`, or the whole output when that is empty.

Multiple choice, in order, the first rule that finds a valid option letter wins, and within a rule the
*last* occurrence wins (a reasoning model states its conclusion last):
1. the rewards' `parse_choice` on the whole conclusion ("B", "(B)", "B. dog", "Option B");
2. an explicit marker: "answer is B", "Answer: (C)", "final answer: **D**";
3. a bracketed letter: "(B) dog", "[B]";
4. a letter followed by "." ")" or ":" and a space: "B. dog", "so C) …";
5. an option's text as a whole word or phrase: "it is the dog" -> the option "B. dog".
Rules 2-5 follow lmms-eval's MMMU / VideoMMMU `parse_multi_choice_response`
(lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py: answer marker first, then bracketed, then punctuated
letters, then option contents, latest occurrence wins), restricted to the options' own letters. Unlike
it, a bare capital followed by a space ("A cat") is never read as a choice, and a response without any
match gives no answer (scored wrong) instead of a random letter.

Numbers: inside tags, the first number (the rewards' `parse_number`: "3.5 meters" -> 3.5). Without tags,
the *last* number of the conclusion ("I count 2 chairs and 1 table, so 3" -> 3). VSI-Bench's official
parser takes the first word of the response (`fuzzy_matching`, thinking-in-space vsibench/utils.py),
which is the same number for the short answers it prompts for; for reasoning text the answer comes last.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from videor1.rewards.answers import extract_answer, parse_choice, parse_number, parse_numbers

Source = Literal["tag", "fallback", "none"]

_THINK_END = "</think>"
_OPTION = re.compile(r"^\s*[(\[]?([A-Z])[.):\]]\s*(.*?)\s*$", re.DOTALL)
# "answer" and "option" in any case, the letter itself upper-case only ("the answer is a dog" names no option)
_MARKER = re.compile(r"(?i:answer)\s*(?i:is|:|：)?\s*(?:(?i:option)\s*)?[*(\[\s]*([A-Z])(?![A-Za-z0-9])")
_BRACKETED = re.compile(r"[(\[]([A-Z])[)\]]")
_PUNCTUATED = re.compile(r"(?<![A-Za-z0-9])([A-Z])[.):](?=\s|$)")


@dataclass(frozen=True)
class Extracted:
    """The answer read from an output (None when nothing was found) and where it came from."""

    answer: str | None
    source: Source


def conclusion(output: str) -> str:
    """The text after the last `</think>`, or the whole output when that part is empty."""
    tail = output.rsplit(_THINK_END, 1)[-1].strip()
    return tail or output.strip()


def option_letters(options: Sequence[str]) -> dict[str, str]:
    """Letter -> option text for options written "A. text"; unlettered options get A, B, C… in order."""
    letters = {}
    for i, option in enumerate(options):
        match = _OPTION.match(option)
        if match:
            letters[match.group(1)] = match.group(2)
        else:
            letters[chr(ord("A") + i)] = option.strip()
    return letters


def _last_letter(pattern: re.Pattern[str], text: str, valid: dict[str, str]) -> str | None:
    found = [m.group(1).upper() for m in pattern.finditer(text) if m.group(1).upper() in valid]
    return found[-1] if found else None


def _option_by_text(text: str, valid: dict[str, str]) -> str | None:
    """The option whose text occurs last in `text` as a whole phrase; the longer text wins a tie."""
    best: tuple[int, int, str] | None = None
    for letter, content in valid.items():
        if not content:
            continue
        matches = list(re.finditer(rf"(?<!\w){re.escape(content.lower())}(?!\w)", text.lower()))
        if matches:
            candidate = (matches[-1].start(), len(content), letter)
            best = candidate if best is None or candidate[:2] > best[:2] else best
    return best[2] if best else None


def choice_in_text(text: str, options: Sequence[str]) -> str | None:
    """An option letter stated in free text (rules 1-5 of the module docstring), or None."""
    valid = option_letters(options)
    whole = parse_choice(text)
    if whole is not None and whole in valid:
        return whole
    for pattern in (_MARKER, _BRACKETED, _PUNCTUATED):
        letter = _last_letter(pattern, text, valid)
        if letter is not None:
            return letter
    return _option_by_text(text, valid)


def _format_number(value: float) -> str:
    """A parsed number as text, integers without ".0" (so the saved answer reads like the model's)."""
    return str(int(value)) if value.is_integer() else repr(value)


def extract_prediction(output: str, problem_type: str, options: Sequence[str] = ()) -> Extracted:
    """The answer of one output for its problem type: from `<answer>` tags, else from the conclusion."""
    tagged = extract_answer(output)
    if problem_type == "multiple choice":
        if tagged is not None:
            letter = parse_choice(tagged)
            if letter is not None:
                return Extracted(letter, "tag")
            letter = choice_in_text(tagged, options)
            return Extracted(letter, "fallback") if letter else Extracted(None, "none")
        letter = choice_in_text(conclusion(output), options)
        return Extracted(letter, "fallback") if letter else Extracted(None, "none")
    if problem_type in ("numerical", "regression"):
        if tagged is not None:
            value = parse_number(tagged)
            return Extracted(_format_number(value), "tag") if value is not None else Extracted(None, "none")
        numbers = parse_numbers(conclusion(output))
        return Extracted(_format_number(numbers[-1]), "fallback") if numbers else Extracted(None, "none")
    if tagged is not None:
        return Extracted(tagged, "tag")
    text = conclusion(output)
    return Extracted(text, "fallback") if text else Extracted(None, "none")
