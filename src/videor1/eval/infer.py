"""`videor1 infer`: one question about one video or image, answered with the evaluation's prompt and parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videor1.config import MediaConfig
from videor1.data.schema import PROBLEM_TYPES, Sample
from videor1.eval.generate import generate_batch
from videor1.eval.parse import extract_prediction, option_letters

_INLINE_OPTION = re.compile(r"^\s*\(?([A-Z])[.)]\s+\S")
_OPTIONS_HEADER = re.compile(r"^\s*options?\s*:\s*$", re.IGNORECASE)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_OPEN = "<answer>"


class InferError(Exception):
    """A question that cannot be answered: bad arguments, unreadable media or a failed generation."""


@dataclass(frozen=True)
class Inference:
    """The model's full output, its reasoning, the extracted answer and, for a choice, the option's text."""

    output: str
    reasoning: str
    answer: str | None
    option: str | None = None


def split_inline_options(question: str) -> tuple[str, list[str]]:
    """("question", ["A. x", "B. y"]) from a question whose last lines are lettered options A, B, … in order."""
    lines = question.strip().splitlines()
    options: list[str] = []
    while lines and _INLINE_OPTION.match(lines[-1]):
        options.insert(0, lines.pop().strip())
    letters = [_INLINE_OPTION.match(o).group(1) for o in options]  # type: ignore[union-attr]
    if not options or letters != [chr(ord("A") + i) for i in range(len(options))]:
        return question.strip(), []
    if lines and _OPTIONS_HEADER.match(lines[-1]):
        lines.pop()
    return "\n".join(lines), options


def lettered(options: list[str]) -> list[str]:
    """Options as Video-R1 writes them ("A. text"); options already lettered in order are kept as they are."""
    expected = [chr(ord("A") + i) for i in range(len(options))]
    if list(option_letters(options)) == expected and all(_INLINE_OPTION.match(o) for o in options):
        return options
    return [f"{letter}. {option.strip()}" for letter, option in zip(expected, options, strict=True)]


def reasoning_of(output: str) -> str:
    """The last `<think>` block, else the text before `<answer>`, else the whole output."""
    blocks = _THINK.findall(output)
    if blocks:
        return blocks[-1].strip()
    return output.split(_ANSWER_OPEN, 1)[0].strip()


def build_sample(media_path: Path, data_type: str, question: str, options: list[str], problem_type: str) -> Sample:
    """A one-off Sample for a question about a file (options make it multiple choice)."""
    problem, inline = split_inline_options(question)
    options = lettered(options) if options else inline
    if options:
        problem_type = "multiple choice"
        # Video-R1's template appends "Options:" right after the problem text
        problem = problem if problem.endswith("\n") else problem + "\n"
    if problem_type not in PROBLEM_TYPES:
        raise InferError(f"unknown problem type {problem_type!r}; expected one of {', '.join(PROBLEM_TYPES)}")
    return Sample(
        problem_id="infer", problem=problem, data_type=data_type, problem_type=problem_type, options=options,
        solution="", path=media_path.name, media_path=media_path,
    )


def answer_question(model: Any, processor: Any, sample: Sample, media: MediaConfig, **decoding: Any) -> Inference:
    """Generate (HF model or vLLM engine) and parse the answer to one question; InferError when either fails."""
    generation = generate_batch(model, processor, [sample], media, **decoding)[0]
    if generation.error is not None:
        raise InferError(generation.error)
    extracted = extract_prediction(generation.text, sample.problem_type, sample.options)
    option = option_letters(sample.options).get(extracted.answer or "") if sample.options else None
    return Inference(generation.text, reasoning_of(generation.text), extracted.answer, option)
