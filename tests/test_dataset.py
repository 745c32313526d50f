"""Dataset files in every supported format load to the same samples; bad rows are reported, never dropped silently."""

import json

import pytest

from tests.rows import good_row
from videor1.data.dataset import DatasetError, load_dataset


def rows():
    return [
        good_row(problem_id=1),
        good_row(problem_id=2, data_type="image", path="images/a.png", problem_type="numerical", options=[],
                 solution="<answer>3</answer>"),
        good_row(problem_id=3, solution="no tags"),
        good_row(problem_id=1, path="../escape.mp4"),
    ]


def check(loaded):
    assert loaded.num_rows == 4
    assert [s.problem_id for s in loaded.samples] == [1, 2]
    assert [(p.row, p.field) for p in loaded.problems] == [(3, "solution"), (4, "problem_id"), (4, "path")]
    assert "duplicate of row 1" in loaded.problems[1].reason
    assert loaded.bad_rows == 2
    assert loaded.counts("data_type") == {"video": 1, "image": 1}


def test_json_list(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(rows()))
    check(load_dataset(tmp_path / "d.json", tmp_path))


def test_jsonl_counts_rows_by_line_and_reports_bad_json(tmp_path):
    lines = [json.dumps(r) for r in rows()]
    (tmp_path / "d.jsonl").write_text("\n".join(lines[:2]) + "\n\n{not json\n" + "\n".join(lines[2:]) + "\n")
    loaded = load_dataset(tmp_path / "d.jsonl", tmp_path)
    assert [s.problem_id for s in loaded.samples] == [1, 2]
    # blank line 3 is skipped, line 4 is broken JSON, rows 3 and 4 of the list are on lines 5 and 6
    assert [(p.row, p.field) for p in loaded.problems] == [(4, "row"), (5, "solution"), (6, "problem_id"), (6, "path")]


def test_parquet_and_datasets_folder(tmp_path):
    from datasets import Dataset

    table = Dataset.from_list(rows())
    table.to_parquet(str(tmp_path / "d.parquet"))
    check(load_dataset(tmp_path / "d.parquet", tmp_path))
    table.save_to_disk(str(tmp_path / "saved"))
    check(load_dataset(tmp_path / "saved", tmp_path))


@pytest.mark.parametrize("content, message", [("{", "not valid JSON"), ('{"a": 1}', "expected a JSON list")])
def test_unreadable_files_raise(tmp_path, content, message):
    (tmp_path / "d.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / "d.json", tmp_path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "nope.json", tmp_path)
