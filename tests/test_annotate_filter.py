"""The rationale filter on hand-written teacher outputs, and the run's files on disk."""

import json

import pytest

from videor1.annotate.filter import FilterRules, Verdict, best_kept, judge, think_block
from videor1.annotate.store import AnnotationStore, drop_partial_line, read_jsonl

RULES = FilterRules(threshold=0.6, min_think=10, max_think=60)


def verdict(output, truth="B", problem_type="multiple choice", rules=RULES, **kwargs):
    return judge(output, truth=truth, problem_type=problem_type, rules=rules, **kwargs)


@pytest.mark.parametrize(("output", "reason", "accuracy"), [
    ("<think>It moves right, so B.</think><answer>B</answer>", None, 1.0),
    ("  <think>It moves right, so B.</think>\n\n<answer>(B)</answer>\n", None, 1.0),  # spaces and "(B)" are fine
    ("<think>It moves left, so A.</think><answer>A</answer>", "accuracy", 0.0),
    ("<think>It moves right, so B.</think>", "format", 0.0),  # no answer
    ("It moves right. <answer>B</answer>", "format", 1.0),  # right answer, no rationale: still rejected
    ("<think>a</think><answer>A</answer><think>b</think><answer>B</answer>", "format", 1.0),  # two blocks
    ("<think>x<think>It moves right</think></think><answer>B</answer>", "format", 1.0),  # nested
    ("<think>Right. B</think><answer>B</answer>", "think_too_short", 1.0),  # 8 characters < 10
    ("<think>" + "It moves right. " * 4 + "</think><answer>B</answer>", "think_too_long", 1.0),  # 63 > 60
])
def test_multiple_choice_outputs(output, reason, accuracy):
    v = verdict(output)
    assert (v.kept, v.reason, v.accuracy) == (reason is None, reason, accuracy)


def test_the_kept_process_is_the_think_block_as_written():
    v = verdict("<think>\n  It moves right, so B.\n</think>\n<answer>B</answer>")
    assert v.process == "<think>\n  It moves right, so B.\n</think>" and v.think_length == len("It moves right, so B.")


def test_length_counts_stripped_think_text_in_the_given_unit():
    output = "<think>  one two three four  </think><answer>B</answer>"
    words = FilterRules(threshold=0.6, min_think=4, max_think=4)
    assert verdict(output, rules=words, length=lambda text: len(text.split())).kept
    assert verdict(output, rules=words).reason == "think_too_long"  # 18 characters


@pytest.mark.parametrize(("problem_type", "truth", "answer", "kept", "accuracy"), [
    ("numerical", "3", "3.0", True, 1.0),
    ("numerical", "3", "4", False, 0.0),
    ("regression", "10", "7", True, 0.7),  # 1 - |7 - 10| / 10 = 0.7 >= 0.6
    ("regression", "10", "3", False, 0.3),  # 1 - |3 - 10| / 10 = 0.3
    ("OCR", "HELLO WORLD", "HELLO WORD", False, 0.5),  # one of two words wrong: WER 0.5
    ("OCR", "HELLO WORLD", "HELLO WORLD", True, 1.0),
])
def test_other_problem_types_use_the_reward_scores(problem_type, truth, answer, kept, accuracy):
    v = verdict(f"<think>Let me think about it.</think><answer>{answer}</answer>", truth=truth,
                problem_type=problem_type)
    assert v.accuracy == pytest.approx(accuracy) and v.kept == kept


def test_threshold_zero_keeps_any_well_formed_answer_and_the_bound_is_inclusive():
    wrong = "<think>It moves left, so A.</think><answer>A</answer>"
    assert verdict(wrong, rules=FilterRules(threshold=0.0, min_think=1)).kept
    exact = "<think>0123456789</think><answer>B</answer>"  # exactly min_think characters
    assert verdict(exact).kept


def test_rules_are_checked():
    with pytest.raises(ValueError, match="at least 1"):
        FilterRules(min_think=0)
    with pytest.raises(ValueError, match="below min_think"):
        FilterRules(min_think=5, max_think=4)


def test_best_kept_takes_the_most_accurate_then_the_first():
    def v(kept, accuracy):
        return Verdict(kept, None if kept else "accuracy", "", accuracy)

    assert best_kept([v(False, 0.9), v(True, 0.7), v(True, 0.8), v(True, 0.8)]) == 2
    assert best_kept([v(False, 1.0), v(False, 0.0)]) is None
    assert think_block("no tags") is None


def test_store_files_resume_and_consolidate_in_input_order(tmp_path):
    out = tmp_path / "cot.json"
    with AnnotationStore(out) as store:
        store.keep({"problem_id": 3, "process": "<think>c</think>"})
        store.keep({"problem_id": 1, "process": "<think>a</think>"})
        store.reject({"problem_id": 2, "reason": "format", "output": "x"})
        store.fail({"problem_id": 4, "reason": "teacher", "detail": "HTTP 503"})
    # a kill in the middle of a write leaves a partial line; it is dropped on the next start
    with store.kept_path.open("a") as f:
        f.write('{"problem_id": 5, "proc')
    assert store.done_ids() == {1, 2, 3}  # 4 failed transiently: not done; the partial 5 is not done either
    with store:
        assert store.kept_path.read_text().endswith('"<think>a</think>"}\n')
        store.keep({"problem_id": 5, "process": "<think>e</think>"})
    assert store.consolidate([5, 4, 3, 2, 1]) == 3
    assert [row["problem_id"] for row in json.loads(out.read_text())] == [5, 3, 1]
    # a later run with the work files gone still counts (and keeps) what the consolidated file holds
    store.kept_path.unlink()
    assert store.done_ids() == {1, 2, 3, 5}
    assert store.consolidate([1, 2, 3, 4, 5]) == 3


def test_jsonl_output_and_corrupt_lines(tmp_path):
    store = AnnotationStore(tmp_path / "cot.jsonl")
    with store:
        store.keep({"problem_id": "b"})
    assert store.consolidate(["a", "b"]) == 1
    assert [json.loads(line) for line in (tmp_path / "cot.jsonl").read_text().splitlines()] == [{"problem_id": "b"}]
    assert store.rejected_path.name == "cot.rejected.jsonl" and store.log_path.name == "cot.annotate.log"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": 1}\nnot json\n{"problem_id": 2}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(bad)
    drop_partial_line(bad)  # complete lines are left alone
    assert bad.read_text().count("\n") == 3
