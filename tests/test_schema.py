"""Row validation: each kind of malformed row is reported with its field, and paths cannot escape the root."""

from pathlib import Path

import pytest

from tests.rows import good_row
from videor1.data.schema import Problem, parse_row, resolve_media_path, row_problems


def fields(row, **kwargs):
    return [name for name, _ in row_problems(row, **kwargs)]


def test_good_rows_of_every_type_pass():
    assert row_problems(good_row()) == []
    assert row_problems(good_row(problem_type="numerical", options=[], solution="<answer>2.0</answer>")) == []
    assert row_problems(good_row(problem_type="regression", options=[], solution="<answer>-0.25</answer>")) == []
    assert row_problems(good_row(problem_type="OCR", options=[], solution="<answer>HELLO</answer>")) == []
    assert row_problems(good_row(problem_type="free-form", solution="<answer>it moves</answer>")) == []
    # Video-R1-260k leaves process empty; only SFT data needs it
    assert row_problems(good_row(process="")) == []
    assert row_problems(good_row(data_type="image", path="images/x.png")) == []


@pytest.mark.parametrize(
    "row, field",
    [
        ([1, 2], "row"),
        (good_row(problem_type="essay"), "problem_type"),
        (good_row(data_type="audio"), "data_type"),
        (good_row(options=[]), "options"),
        (good_row(options="A. left"), "options"),
        (good_row(options=["left", "right"]), "options"),
        (good_row(options=["A. left", "C. right"]), "options"),
        (good_row(solution="B"), "solution"),
        (good_row(solution="<answer></answer>"), "solution"),
        (good_row(solution="<answer>E</answer>"), "solution"),
        (good_row(solution="<answer>right</answer>"), "solution"),
        (good_row(problem_type="numerical", options=[], solution="<answer>many</answer>"), "solution"),
        (good_row(problem_type="regression", options=[], solution="<answer>n/a</answer>"), "solution"),
        (good_row(process="It moves right."), "process"),
        (good_row(process="<think></think>"), "process"),
        (good_row(process="<think>a<think>b</think></think>"), "process"),
        (good_row(process=3), "process"),
        (good_row(problem=""), "problem"),
        (good_row(path=""), "path"),
        (good_row(problem_id=True), "problem_id"),
        (good_row(problem_id=[1]), "problem_id"),
        (good_row(data_source=5), "data_source"),
    ],
)
def test_each_malformed_row_names_its_field(row, field):
    assert field in fields(row)


@pytest.mark.parametrize("missing", ["problem_id", "problem", "data_type", "problem_type", "solution"])
def test_missing_required_field(missing):
    row = good_row()
    del row[missing]
    assert (missing, "missing") in row_problems(row)


def test_missing_media_names_every_key_looked_at():
    row = good_row()
    del row["path"]
    assert row_problems(row) == [("path", "missing (no path, video or image column)")]


@pytest.mark.parametrize("key", ["video", "image"])
def test_media_under_video_or_image_with_a_leading_slash(tmp_path, key):
    row = good_row()
    del row["path"]
    row[key] = "/MMVU/videos/Chemistry/0.mp4"
    assert row_problems(row) == []
    sample = parse_row(row, row_number=1, media_root=tmp_path)
    assert sample.media_path == tmp_path / "MMVU/videos/Chemistry/0.mp4"
    assert sample.path == "/MMVU/videos/Chemistry/0.mp4" and key not in sample.extra


def test_first_media_key_naming_a_file_wins(tmp_path):
    row = good_row(path="", video="clips/a.mp4", image="frames/a.png")
    assert row_problems(row) == []
    sample = parse_row(row, row_number=1, media_root=tmp_path)
    assert sample.media_path == tmp_path / "clips/a.mp4" and sample.extra == {"image": "frames/a.png"}
    assert fields(good_row(path="", video=None)) == ["path"]


def test_frame_rows_are_videos_with_an_optional_fps(tmp_path):
    sample = parse_row(good_row(data_type="frame", fps=3), row_number=1, media_root=tmp_path)
    assert sample.data_type == "video" and sample.is_video and sample.frame_fps == 3.0
    assert parse_row(good_row(), row_number=1, media_root=tmp_path).frame_fps is None
    assert row_problems(good_row(data_type="frame")) == []
    for bad in (0, -2, "3", True):
        assert fields(good_row(fps=bad)) == ["fps"]


def test_benchmark_files_may_leave_option_text_empty():
    row = good_row(options=["A. ", "B.", "(C)", "D:"], solution="<answer>B</answer>")
    assert fields(row) == ["options"]  # training data must say what each option is
    assert row_problems(row, benchmark=True) == []
    assert fields(good_row(options=["A. ", "x"]), benchmark=True) == ["options"]


def test_ids_may_be_strings_or_integers_and_options_null_without_choices():
    assert row_problems(good_row(problem_id="mmvu-12")) == []
    assert row_problems(good_row(problem_id=12)) == []
    assert fields(good_row(problem_id=1.5)) == ["problem_id"]
    assert row_problems(good_row(problem_type="free-form", options=None, solution="<answer>a dog</answer>")) == []


def test_several_problems_in_one_row_are_all_reported():
    row = good_row(problem_type="multiple choice", options=["x"], process="oops", data_type="gif")
    assert set(fields(row)) == {"options", "process", "data_type"}


def test_require_process_for_sft_data():
    assert fields(good_row(process=""), require_process=True) == ["process"]
    assert fields(good_row(process=None), require_process=True) == ["process"]
    assert fields(good_row(), require_process=True) == []


def test_tolerant_answer_letters():
    assert row_problems(good_row(solution="<answer> (B) </answer>")) == []
    assert row_problems(good_row(solution="<answer>b.</answer>")) == []


@pytest.mark.parametrize(
    "path",
    ["../secret.mp4", "videos/../../x.mp4", "C:\\x.mp4", "..\\x.mp4", "/../etc/passwd", "//../x.mp4", "/", "./",
     "a/.."],
)
def test_path_escape_is_refused(tmp_path, path):
    with pytest.raises(ValueError):
        resolve_media_path(path, tmp_path)


@pytest.mark.parametrize(
    "path, expected",
    [("./videos/a.mp4", "videos/a.mp4"), ("a/../b.png", "b.png"), ("/etc/passwd", "etc/passwd"),
     ("/MMVU/videos/0.mp4", "MMVU/videos/0.mp4"), ("\\x\\a.mp4", "x/a.mp4")],
)
def test_paths_inside_the_root_resolve(tmp_path, path, expected):
    assert resolve_media_path(path, tmp_path) == tmp_path / expected


def test_parse_row_keeps_extra_columns_and_resolves_media(tmp_path):
    sample = parse_row(good_row(task="direction", order_dependent=True), row_number=3, media_root=tmp_path)
    assert sample.media_path == tmp_path / "videos/000007.mp4"
    assert sample.answer == "B"
    assert sample.extra == {"task": "direction", "order_dependent": True}
    assert sample.row == 3 and sample.is_video
    assert sample.to_row() == good_row(task="direction", order_dependent=True)


def test_problem_text():
    assert str(Problem("d.json", 4, "solution", "no tag")) == "row 4: solution: no tag"
    assert str(Problem(str(Path("v/a.mp4")), None, "path", "missing file")) == "v/a.mp4: missing file"
