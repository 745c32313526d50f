"""Accuracy reward per problem type, on hand-computed numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videor1.rewards import PROBLEM_TYPES, accuracy_reward, accuracy_score, word_error_rate


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        ("A", "A", 1.0),
        ("(a)", "A", 1.0),
        ("A. a red car", "A", 1.0),
        ("Option C", "C. the dog", 1.0),
        ("B", "A", 0.0),
        ("I think", "A", 0.0),  # no letter
    ],
)
def test_multiple_choice(prediction: str, truth: str, expected: float) -> None:
    assert accuracy_score(prediction, truth, "multiple choice") == expected


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        ("2", "2.0", 1.0),  # the original scored 0: one side has a "." and the other does not
        ("2.0", "2", 1.0),
        ("1,000", "1000", 1.0),  # the original scored 0 for the same reason
        ("3.14159", "3.14", 1.0),  # round(3.14159, 2) = 3.14
        ("3.15", "3.14", 0.0),
        ("3.14 meters", "3.14", 1.0),
        ("-7", "-7.00", 1.0),
        ("7", "-7", 0.0),
        ("seven", "7", 0.0),  # parse failure
    ],
)
def test_numerical(prediction: str, truth: str, expected: float) -> None:
    assert accuracy_score(prediction, truth, "numerical") == expected


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        ("0", "0", 1.0),  # gt = 0: absolute error 0 -> 1 (the original scored 0)
        ("0.5", "0", 0.5),  # 1 - min(1, |0.5|)
        ("-2", "0", 0.0),  # 1 - min(1, 2)
        ("5", "4", 0.75),  # 1 - |5 - 4| / 4
        ("3", "4", 0.75),  # 1 - |3 - 4| / 4
        ("12", "4", 0.0),  # 1 - min(1, 8 / 4): clipped
        ("4", "4", 1.0),
        ("about 3 m", "4", 0.75),
        ("n/a", "4", 0.0),  # unparseable prediction
        ("4", "unknown", 0.0),  # unparseable truth
    ],
)
def test_regression(prediction: str, truth: str, expected: float) -> None:
    assert accuracy_score(prediction, truth, "regression") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        ("the cat sat", "the cat sat", 1.0),
        ("the  cat\nsat ", "the cat sat", 1.0),  # whitespace-normalised
        ("the cat sit", "the cat sat", 1 - 1 / 3),  # 1 substitution / 3 reference words
        ("the cat", "the cat sat", 1 - 1 / 3),  # 1 deletion / 3
        ("the big cat sat", "the cat sat", 1 - 1 / 3),  # 1 insertion / 3
        ("The cat", "the cat", 0.5),  # case-sensitive, as the original: 1 substitution / 2
        ("a b c", "hello", 0.0),  # 1 substitution + 2 insertions = 3 / 1 word -> 1 - 3 clipped to 0
        ("", "the cat", 0.0),  # 2 deletions / 2
        ("", "", 1.0),  # empty reference: only an empty prediction is right
        ("x", "", 0.0),
    ],
)
def test_ocr(prediction: str, truth: str, expected: float) -> None:
    assert accuracy_score(prediction, truth, "OCR") == pytest.approx(expected)


def test_word_error_rate_can_exceed_one() -> None:
    # "hello" -> "a b c": substitute hello->a, insert b, insert c = 3 edits over 1 reference word
    assert word_error_rate("hello", "a b c") == 3.0


def test_free_form_identical_and_disjoint() -> None:
    assert accuracy_score("a man rides a horse", "a man rides a horse", "free-form") == pytest.approx(1.0)
    assert accuracy_score("blue sky", "red car", "free-form") == 0.0


def test_free_form_partial() -> None:
    # reference "the cat sat on the mat" (6 tokens, 5 bigrams), prediction "the cat sat" (3 tokens, 2 bigrams)
    # ROUGE-1: overlap 3 -> P = 3/3, R = 3/6, F1 = 2·1·0.5 / 1.5 = 2/3
    # ROUGE-2: overlap {the cat, cat sat} = 2 -> P = 2/2, R = 2/5, F1 = 2·1·0.4 / 1.4 = 4/7
    # ROUGE-L: LCS "the cat sat" = 3 -> F1 = 2/3 as ROUGE-1
    # mean = (2/3 + 4/7 + 2/3) / 3 = 40/63
    assert accuracy_score("the cat sat", "the cat sat on the mat", "free-form") == pytest.approx(40 / 63)


def test_free_form_stems_and_ignores_case() -> None:
    # rouge-score lower-cases and Porter-stems: "Running dogs" and "run dog" are the same tokens
    assert accuracy_score("Running dogs", "run dog", "free-form") == pytest.approx(1.0)


@pytest.mark.parametrize("problem_type", PROBLEM_TYPES)
def test_none_prediction_scores_zero(problem_type: str) -> None:
    assert accuracy_score(None, "A", problem_type) == 0.0


def test_unknown_problem_type_names_it() -> None:
    with pytest.raises(ValueError, match="'yes/no'"):
        accuracy_score("A", "A", "yes/no")


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30), st.sampled_from(PROBLEM_TYPES))
def test_score_in_unit_interval(prediction: str, truth: str, problem_type: str) -> None:
    assert 0.0 <= accuracy_score(prediction, truth, problem_type) <= 1.0


def test_accuracy_reward_batch() -> None:
    completions = [
        "<think>two apples</think><answer>2</answer>",  # numerical, "2" = "2.0" -> 1
        "<think>...</think>",  # no <answer> tag -> 0
        "<answer>A</answer><think>no, wait</think><answer>B</answer>",  # last tag "B" vs "A" -> 0
        "<answer>4</answer>",  # regression, solution without tags: |4 - 5| / 5 -> 0.8
    ]
    rewards = accuracy_reward(
        ["p"] * 4,
        completions,
        solution=["<answer>2.0</answer>", "<answer>A</answer>", "<answer>A</answer>", " 5 "],
        problem_type=["numerical", "multiple choice", "multiple choice", "regression"],
        extra_column=[0, 1, 2, 3],  # other dataset columns are passed through by TRL and ignored
    )
    assert rewards == pytest.approx([1.0, 0.0, 0.0, 0.8])


def test_accuracy_reward_conversational() -> None:
    completions = [
        [{"role": "assistant", "content": "<think>x</think><answer>(b)</answer>"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "<answer>C</answer>"}]}],
    ]
    rewards = accuracy_reward(
        [[{"role": "user", "content": "q"}]] * 2,
        completions,
        solution=["<answer>B</answer>", "<answer>B</answer>"],
        problem_type=["multiple choice"] * 2,
    )
    assert rewards == [1.0, 0.0]


def test_accuracy_reward_rejects_misaligned_columns() -> None:
    with pytest.raises(ValueError):
        accuracy_reward(["p"], ["<answer>A</answer>"], solution=["A", "B"], problem_type=["multiple choice"])
