"""Benchmark metrics on hand-computed cases: MRA at every threshold edge, VSI-Bench's task mean, breakdowns."""

import pytest

from videor1.eval.benchmarks import BENCHMARKS, get_benchmark
from videor1.eval.metrics import (
    MRA_THRESHOLDS,
    category_means,
    mean,
    mean_relative_accuracy,
    merge_levels,
    table1_markdown,
    vsi_overall,
)
from videor1.eval.scoring import score_output, summarize

# With y = 100 the relative error is (ŷ − 100) / 100; the ten tolerances 1 − θ are 0.50, 0.45, …, 0.05, and an
# answer counts at a threshold only when its error is strictly below the tolerance. An error of exactly
# k·0.05 therefore passes the 10 − k tolerances above it: MRA = (10 − k) / 10.
EXACT_EDGES = [(100 + 5 * k, (10 - k) / 10) for k in range(1, 11)]  # errors 0.05, 0.10, …, 0.50
# Just below k·0.05 the tolerance k·0.05 itself passes too: (11 − k) / 10.
BELOW_EDGES = [(100 + 5 * k - 0.1, (11 - k) / 10) for k in range(1, 11)]
# Just above, the same as exactly on it.
ABOVE_EDGES = [(100 + 5 * k + 0.1, (10 - k) / 10) for k in range(1, 11)]


def test_thresholds_are_the_ten_literals():
    assert MRA_THRESHOLDS == ("0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95")


@pytest.mark.parametrize(("prediction", "expected"), [(100, 1.0), *EXACT_EDGES, *BELOW_EDGES, *ABOVE_EDGES])
def test_mra_at_every_threshold_edge(prediction, expected):
    assert mean_relative_accuracy(prediction, 100) == expected


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        (105, 100, 0.9),  # in floats 1 - 0.95 = 0.050000000000000044 > 0.05 would wrongly give 1.0
        (0.95, 1, 0.9),  # in floats |0.95 - 1| = 0.050000000000000044: the written error is exactly 0.05
        (1.05, 1, 0.9),
        (90, 100, 0.8),  # errors are absolute: 10 % under is 10 % off
        (-11, -10, 0.8),  # |y| in the denominator
        (250, 100, 0.0),  # 150 % off
        (0, 100, 0.0),  # 100 % off
    ],
)
def test_mra_is_exact_on_decimal_edges(prediction, truth, expected):
    assert mean_relative_accuracy(prediction, truth) == expected


def test_mra_with_truth_zero_scores_only_an_exact_zero():
    # relative error is undefined at y = 0: exact 0 scores 1, anything else 0 (documented in metrics.py)
    assert mean_relative_accuracy(0, 0) == 1.0
    assert mean_relative_accuracy(0.0, 0) == 1.0
    assert mean_relative_accuracy(0.001, 0) == 0.0
    assert mean_relative_accuracy(None, 3) == 0.0


def test_means_and_per_category_means():
    assert mean([]) is None
    assert mean([0.1] * 10) == 0.1  # fsum: exact, whatever the order
    assert category_means([("a", 1.0), ("b", 0.0), ("a", 0.0), ("a", 0.5)]) == {"a": (0.5, 3), "b": (0.0, 1)}


def test_merge_levels_averages_level_scores_not_samples():
    merged = {"dir": ("easy", "medium", "hard")}
    assert merge_levels({"easy": 1.0, "medium": 0.5, "hard": 0.0, "count": 0.3}, merged) == {"dir": 0.5, "count": 0.3}
    assert merge_levels({"hard": 0.25, "count": 0.3}, merged) == {"dir": 0.25, "count": 0.3}  # levels present only


def record(category, score, metric="accuracy", error=None, answer="A"):
    return {"category": category, "score": score, "metric": metric, "error": error, "answer": answer,
            "output": "<think>x</think><answer>A</answer>"}


VSI_RECORDS = [
    record("object_counting", 1.0, "mra"), record("object_counting", 0.6, "mra"),  # 0.8
    record("object_abs_distance", 0.6, "mra"), record("object_size_estimation", 0.4, "mra"),
    record("room_size_estimation", 0.2, "mra"),
    record("object_rel_direction_easy", 1.0), record("object_rel_direction_easy", 1.0),  # 1.0
    record("object_rel_direction_medium", 1.0), record("object_rel_direction_medium", 0.0),  # 0.5
    record("object_rel_direction_hard", 0.0),  # 0.0 -> direction 0.5 (pooled samples would give 0.6)
    record("object_rel_distance", 1.0), record("route_planning", 0.0),
    record("obj_appearance_order", 1.0), record("obj_appearance_order", 0.0),  # 0.5
]


def test_vsibench_overall_is_the_mean_of_its_eight_tasks():
    summary = summarize(BENCHMARKS["vsibench"], VSI_RECORDS)
    assert summary["tasks"] == pytest.approx({
        "object_counting": 0.8, "object_abs_distance": 0.6, "object_size_estimation": 0.4,
        "room_size_estimation": 0.2, "object_rel_distance": 1.0, "object_rel_direction": 0.5,
        "route_planning": 0.0, "obj_appearance_order": 0.5,
    })
    assert list(summary["tasks"]) == list(BENCHMARKS["vsibench"].categories)  # the paper's order
    # (0.8 + 0.6 + 0.4 + 0.2 + 1.0 + 0.5 + 0.0 + 0.5) / 8
    assert summary["overall"] == pytest.approx(0.5)
    # the original eval_bench.py: (mean MC accuracy 5/9 + mean MRA 2.8/5) / 2 = 0.5578 — not what we report
    assert summary["overall"] != pytest.approx((5 / 9 + 2.8 / 5) / 2)
    assert summary["categories"]["object_rel_direction_medium"] == {"score": 0.5, "count": 2, "metric": "accuracy"}
    assert vsi_overall({"a": 1.0, "easy": 0.0, "hard": 1.0}, {"dir": ("easy", "hard")}) == 0.75


def test_vsibench_scores_numerical_answers_by_mra_and_choices_by_accuracy():
    vsi = BENCHMARKS["vsibench"]
    counted = score_output(vsi, "<think>…</think><answer>105</answer>", "100", "regression", [], "object_counting")
    assert (counted.answer, counted.metric, counted.score) == ("105", "mra", 0.9)
    # numerical problem type in an unknown category: still MRA on VSI-Bench
    assert score_output(vsi, "<answer>2.2</answer>", "2", "numerical", [], "unknown").score == 0.8
    chosen = score_output(vsi, "<answer>B</answer>", "B", "multiple choice", ["A. x", "B. y"],
                          "object_rel_direction_hard")
    assert (chosen.metric, chosen.score) == ("accuracy", 1.0)
    # elsewhere a number must be equal (the reward's rule), not close
    mmmu = BENCHMARKS["videommmu"]
    assert score_output(mmmu, "<answer>105</answer>", "100", "numerical", [], "Adaptation").score == 0


@pytest.mark.parametrize(
    ("name", "records", "categories", "overall"),
    [
        # sample mean: 4 correct of 6, although the track mean would be 0.5
        ("videommmu", [("Perception", 1), ("Perception", 0), ("Comprehension", 1), ("Comprehension", 1),
                       ("Comprehension", 1), ("Adaptation", 0)],
         {"Perception": 0.5, "Comprehension": 1.0, "Adaptation": 0.0}, 4 / 6),
        ("mmvu", [("Biology", 1), ("Biology", 0), ("Physics", 1)], {"Biology": 0.5, "Physics": 1.0}, 2 / 3),
        # task mean: (0.75 + 0.0) / 2, although 3 of 5 samples are right
        ("mvbench", [("action_sequence", 1), ("action_sequence", 1), ("action_sequence", 1),
                     ("action_sequence", 0), ("moving_count", 0)],
         {"action_sequence": 0.75, "moving_count": 0.0}, 0.375),
        ("tempcompass", [("speed", 1), ("action", 0), ("action", 1), ("direction", 1)],
         {"action": 0.5, "speed": 1.0, "direction": 1.0}, 0.75),
        ("videomme", [("long", 1), ("short", 1), ("short", 1), ("medium", 0), ("long", 0), ("long", 0)],
         {"short": 1.0, "medium": 0.0, "long": 1 / 3}, 0.5),
    ],
)
def test_per_category_means_of_each_benchmark(name, records, categories, overall):
    summary = summarize(get_benchmark(name), [record(c, float(s)) for c, s in records])
    assert {c: row["score"] for c, row in summary["categories"].items()} == pytest.approx(categories)
    assert summary["overall"] == pytest.approx(overall)
    known = get_benchmark(name).categories
    if known:  # reported in the benchmark's own order
        assert list(summary["categories"]) == [c for c in known if c in categories]


def test_failed_and_unparsed_samples_count_as_wrong():
    records = [record("short", 1.0), record("short", 0.0, error="x.mp4: unreadable", answer=None),
               record("long", 0.0, answer=None)]
    summary = summarize(BENCHMARKS["videomme"], records)
    assert (summary["count"], summary["failed"], summary["unparsed"]) == (3, 1, 1)
    assert summary["overall"] == pytest.approx(1 / 3)


def test_table1_layout():
    scores = {"vsibench": 0.358, "videomme": 0.593, "mvbench": None}
    table = table1_markdown({"Video-R1-7B": scores}, {"Video-R1-7B": 32})
    lines = table.splitlines()
    assert lines[0] == "| Model | Frames | VSI-Bench | VideoMMMU | MMVU | MVBench | TempCompass | VideoMME |"
    assert lines[2] == "| Video-R1-7B | 32 | 35.8 | – | – | – | – | 59.3 |"
