"""Parser tables for videor1.rewards.answers (shared by the rewards and the evaluation)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videor1.rewards.answers import completion_text, extract_answer, parse_choice, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>A</answer>", "A"),
        ("<think>hmm</think><answer>  B \n</answer>", "B"),  # content is stripped
        ("<answer>\n3.5\nmeters\n</answer>", "3.5\nmeters"),  # DOTALL: spans lines
        ("<answer>A</answer> wait <answer>C</answer>", "C"),  # the last tag wins, not the first
        ("<answer></answer>", ""),  # empty is an answer, not a missing one
        ("no tags at all", None),
        ("<answer>unterminated", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", "A"),
        ("A.", "A"),
        ("(A)", "A"),
        ("[B]", "B"),
        ("a", "A"),
        ("  c  ", "C"),
        ("d:", "D"),
        ("A. some text", "A"),
        ("A) text", "A"),
        ("(b) the red car", "B"),
        ("Option A", "A"),
        ("option: (c)", "C"),
        ("Choice D is right", "D"),
        ("**A**", "A"),
        # conservative: a leading letter must be set apart, so ordinary sentences are not letters
        ("I think it is B", None),
        ("A cat", None),
        ("e.g. the first", None),
        ("The answer is B", None),
        ("Options are shown", None),  # "option" must be a whole word: not "S" from "Options"
        ("optional", None),
        ("AB", None),
        ("12", None),
        ("", None),
    ],
)
def test_parse_choice(text: str, expected: str | None) -> None:
    assert parse_choice(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 2.0),
        ("2.0", 2.0),
        ("-3.5", -3.5),
        ("\u22123.5", -3.5),  # unicode minus sign
        ("+4", 4.0),
        ("1,000", 1000.0),
        ("1,000.5", 1000.5),
        ("1,234,567", 1234567.0),
        ("3.14 meters", 3.14),  # the first number, units ignored
        ("about 7 or 8", 7.0),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        (".5", 0.5),
        ("5.", 5.0),
        ("3-4", 3.0),  # a range: its first end, not 3 and then -4
        ("x-5", 5.0),  # a hyphen after a word is not a sign
        ("3 eggs", 3.0),  # the "e" of "eggs" is not an exponent
        ("50%", 50.0),
        ("none", None),
        ("", None),
        ("1e999", None),  # overflows to inf: not a usable number
    ],
)
def test_parse_number(text: str, expected: float | None) -> None:
    assert parse_number(text) == expected


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_parse_number_round_trips_formatted_floats(value: float) -> None:
    # "{:,.2f}" writes thousands separators and a sign, the forms a model copies from a question
    assert parse_number(f"{value:,.2f} units") == pytest.approx(float(f"{value:.2f}"))
    assert math.isclose(parse_number(repr(value)) or 0.0, value)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain text", "plain text"),
        ([{"role": "assistant", "content": "from a message"}], "from a message"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "last"}], "last"),
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "ab",
        ),
    ],
)
def test_completion_text(completion, expected: str) -> None:
    assert completion_text(completion) == expected
