"""Reading answers the way benchmarks do (tags first, then free text) and finding each benchmark's categories."""

from pathlib import Path

import pytest

from videor1.data.schema import parse_row
from videor1.eval.benchmarks import UNKNOWN_CATEGORY, Category, category_of, get_benchmark
from videor1.eval.parse import choice_in_text, conclusion, extract_prediction
from videor1.rewards.answers import parse_numbers

from .rows import good_row

OPTIONS = ["A. cat", "B. dog", "C. red car", "D. red"]


@pytest.mark.parametrize(
    ("output", "answer", "source"),
    [
        ("<think>dog or cat</think><answer>B</answer>", "B", "tag"),
        ("<answer>(c)</answer>", "C", "tag"),  # the reward's parser: brackets, lower case
        ("<answer>A</answer> wait <answer>D</answer>", "D", "tag"),  # the last tag
        ("<answer>it is the dog</answer>", "B", "fallback"),  # tagged text that is not a letter
        ("The answer is B", "B", "fallback"),  # explicit marker
        ("<think>A? C?</think> Answer: (C)", "C", "fallback"),  # only the conclusion is searched
        ("<think>maybe (A)</think>", "A", "fallback"),  # empty conclusion: the whole output
        ("(B) dog", "B", "fallback"),
        ("I first thought (A), but it is (B).", "B", "fallback"),  # the last bracketed letter
        ("So the best choice is C. red car", "C", "fallback"),
        ("It is the dog, clearly.", "B", "fallback"),  # the option's text
        ("It is the red car.", "C", "fallback"),  # the longer option wins a tie at one position
        ("the answer is a dog", "B", "fallback"),  # lower-case "a" is a word, not option A
        ("A cat sits on the mat", "A", "fallback"),  # no letter rule fires; option text "cat" does
        ("E. none of these", None, "none"),  # E is not an option
        ("nothing useful", None, "none"),
    ],
)
def test_multiple_choice_answers(output, answer, source):
    extracted = extract_prediction(output, "multiple choice", OPTIONS)
    assert (extracted.answer, extracted.source) == (answer, source)


@pytest.mark.parametrize(
    ("output", "problem_type", "answer", "source"),
    [
        ("<answer>3.5 meters</answer>", "numerical", "3.5", "tag"),  # tagged: the first number (reward rule)
        ("<answer>between 2 and 4</answer>", "regression", "2", "tag"),
        ("<answer>1,000</answer>", "numerical", "1000", "tag"),
        ("I count 2 chairs and 1 table, so 3.", "numerical", "3", "fallback"),  # untagged: the last number
        ("<think>12 frames, 4 chairs</think> About 4.5 m", "regression", "4.5", "fallback"),
        ("<answer>three</answer>", "numerical", None, "none"),
        ("no idea", "regression", None, "none"),
        ("<answer>ZPFA</answer>", "OCR", "ZPFA", "tag"),
        ("<think>x</think> the square moved up", "free-form", "the square moved up", "fallback"),
    ],
)
def test_numerical_and_text_answers(output, problem_type, answer, source):
    extracted = extract_prediction(output, problem_type)
    assert (extracted.answer, extracted.source) == (answer, source)


def test_helpers():
    assert conclusion("<think>a</think>  b ") == "b"
    assert conclusion("no tags") == "no tags"
    assert choice_in_text("Option D", OPTIONS) == "D"
    assert choice_in_text("dog", ["cat", "dog"]) == "B"  # unlettered options get A, B… in order
    assert parse_numbers("−2, 1,000 and 3.5e1 or x-5") == [-2.0, 1000.0, 35.0, 5.0]


def sample(**changes):
    return parse_row(good_row(**changes), row_number=1, media_root=Path("/data"))


def test_benchmarks_by_name_and_alias():
    assert get_benchmark("VSI-Bench").key == "vsibench"
    assert get_benchmark("video-mme").key == "videomme"
    assert get_benchmark("TempCompass").key == "tempcompass"
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("mmbench")


def test_categories_from_the_benchmarks_own_columns():
    def name(bench, row):
        return category_of(get_benchmark(bench), row).name

    assert name("vsibench", sample(question_type="object_rel_direction_hard")) == "object_rel_direction_hard"
    assert name("mvbench", sample(task_type="Fine-grained Action")) == "fine_grained_action"
    assert name("tempcompass", sample(dim="attribute_change")) == "attribute_change"
    assert name("videomme", sample(duration="Long")) == "long"
    assert name("videommmu", sample(track="Adaptation")) == "Adaptation"
    assert category_of(get_benchmark("mmvu"), sample(subject="Chemistry")) == Category("Chemistry", "column:subject")


def test_categories_fall_back_to_data_source_or_a_named_field():
    mvbench, unknown = get_benchmark("mvbench"), Category(UNKNOWN_CATEGORY, "unknown")
    found = category_of(mvbench, sample(data_source="MVBench/action_antonym"))
    assert found == Category("action_antonym", "data_source")
    assert category_of(mvbench, sample(data_source="https://youtube.com/x")) == unknown
    assert category_of(mvbench, sample(my_task="scene_transition"), "my_task").name == "scene_transition"
    assert category_of(mvbench, sample(data_source="moving_count"), "data_source").name == "moving_count"
    # a named field is the only place looked at, even where the path would tell
    assert category_of(mvbench, sample(path="tvqa/frames_fps3_hq/x"), "missing") == unknown


@pytest.mark.parametrize(
    "bench, path, expected",
    [
        ("mmvu", "/MMVU/videos/Chemistry/0.mp4", "Chemistry"),
        ("mmvu", "./videos/Art/12.mp4", "Art"),
        ("mmvu", "./MMVU/0.mp4", None),
        ("mvbench", "./MVBench/tvqa/frames_fps3_hq/s01e02_seg02_clip_05", "episodic_reasoning"),
        ("mvbench", "/MVBench/video/ssv2_video/1234.webm", "action_antonym"),
        ("mvbench", "./Evaluation/MVBench/star/Charades_v1_480/ABC.mp4", "star"),  # three tasks share star
        ("mvbench", "./MVBench/clevrer/video_validation/video_10000.mp4", "clevrer"),
        ("mvbench", "./MVBench/other/x.mp4", None),
        ("videommmu", "./VideoMMMU/Perception/Art_1.mp4", "Perception"),
        ("vsibench", "./vsi/object_counting/scene0.mp4", "object_counting"),
        ("videomme", "./videos/star/x.mp4", None),  # layouts are per benchmark
    ],
)
def test_categories_from_the_path_where_the_layout_encodes_them(bench, path, expected):
    found = category_of(get_benchmark(bench), sample(path=path, data_source=""))
    assert found == (Category(expected, "path") if expected else Category(UNKNOWN_CATEGORY, "unknown"))


def test_a_column_wins_over_the_path():
    found = category_of(get_benchmark("mmvu"), sample(subject="Physics", path="./videos/Art/1.mp4"))
    assert found == Category("Physics", "column:subject")


def test_metric_and_subset_per_benchmark():
    vsi, mmvu = get_benchmark("vsibench"), get_benchmark("mmvu")
    assert vsi.metric("room_size_estimation", "numerical") == "mra"
    assert vsi.metric("route_planning", "multiple choice") == "accuracy"
    assert vsi.task_of("object_rel_direction_easy") == "object_rel_direction"
    assert get_benchmark("mvbench").metric("action_count", "numerical") == "accuracy"
    assert mmvu.includes(sample()) and not mmvu.includes(sample(problem_type="free-form", options=[]))
    assert get_benchmark("videomme").includes(sample(problem_type="free-form", options=[]))
