"""Prompt templates of Video-R1 and chat messages for a sample.

The question template and the per-type answer instructions are the paper's, word for word, so a
checkpoint trained here sees the prompts Video-R1's released model saw (and vice versa).
"""

from __future__ import annotations

from typing import Any

QUESTION_TEMPLATE = (
    "{Question}\n"
    "Please think about this question as if you were a human pondering deeply. "
    "Engage in an internal dialogue using expressions such as 'let me think', 'wait', 'Hmm', 'oh, I see', "
    "'let's break it down', etc, or other natural language thought expressions "
    "It's encouraged to include self-reflection or verification in the reasoning process. "
    "Provide your detailed reasoning between the <think> </think> tags, and then give your final answer "
    "between the <answer> </answer> tags."
)

TYPE_TEMPLATES: dict[str, str] = {
    "multiple choice": " Please provide only the single option letter (e.g., A, B, C, D, etc.) within the "
    "<answer> </answer> tags.",
    "numerical": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "OCR": " Please transcribe text from the image/video clearly and provide your text answer within the "
    "<answer> </answer> tags.",
    "free-form": " Please provide your text answer within the <answer> </answer> tags.",
    "regression": " Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
}


def question_text(problem: str, problem_type: str, options: list[str]) -> str:
    """The question as Video-R1 writes it: multiple choice appends "Options:" and one option per line."""
    if problem_type == "multiple choice":
        return problem + "Options:\n" + "".join(option + "\n" for option in options)
    return problem


def user_prompt(problem: str, problem_type: str, options: list[str]) -> str:
    """The full user text: question, reasoning instruction and the answer-type instruction."""
    if problem_type not in TYPE_TEMPLATES:
        raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {', '.join(TYPE_TEMPLATES)}")
    question = question_text(problem, problem_type, options)
    return QUESTION_TEMPLATE.format(Question=question) + TYPE_TEMPLATES[problem_type]


def chat_messages(
    problem: str, problem_type: str, options: list[str], data_type: str, *, system_prompt: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages for one sample: the media placeholder first, then the prompt text."""
    if data_type not in ("image", "video"):
        raise ValueError(f"unknown data_type {data_type!r}; expected image or video")
    content = [{"type": data_type}, {"type": "text", "text": user_prompt(problem, problem_type, options)}]
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages
