"""Bad input ends every command with one line naming the file or key and exit code 2, never a traceback."""

import json

import pytest
from typer.testing import CliRunner

from tests.rows import good_row
from videor1.cli import app
from videor1.models.load import check_model_source

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_a_binary_config_is_named_not_a_traceback(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_bytes(b"\xff\xfe\x00\x01binary")
    for command in ("train", "sft"):
        result = invoke(command, config)
        assert result.exit_code == 2 and "run.yaml: not UTF-8 text (byte 0)" in result.output


def test_invalid_media_values_name_the_option(tmp_path):
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([good_row()]))
    result = invoke("data", "validate", data, "--media-root", tmp_path, "--check-media", "--fps", "0")
    assert result.exit_code == 2 and "fps: Input should be greater than 0" in result.output
    result = invoke("data", "validate", data, "--media-root", tmp_path, "--check-media", "--max-frames", "1")
    assert result.exit_code == 2 and "max_frames" in result.output


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"), ("empty.json", "[]")])
def test_a_file_without_rows_does_not_validate(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    result = invoke("data", "validate", tmp_path / name, "--media-root", tmp_path)
    assert result.exit_code == 2 and f"{name}: no rows" in result.output


def test_a_line_that_is_not_utf8_is_that_rows_problem(tmp_path):
    data = tmp_path / "rows.jsonl"
    rows = [json.dumps(good_row()).encode(), b"\xff\xfe not text", json.dumps(good_row(problem_id=8)).encode()]
    data.write_bytes(b"\n".join(rows))
    result = invoke("data", "validate", data, "--media-root", tmp_path)
    assert result.exit_code == 1 and "row 2: row: not valid JSON: not UTF-8 text (byte 0 of the line)" in result.output
    assert "3 rows, 2 valid, 1 with problems" in result.output


def test_a_model_path_that_does_not_exist_is_named(tmp_path):
    data = tmp_path / "eval_videomme.json"
    data.write_text(json.dumps([good_row()]))
    result = invoke("eval", "--model", tmp_path / "no-such-model", "--bench", "videomme", "--data", data,
                    "--media-root", tmp_path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "no-such-model': no such folder (and not a hub id" in result.output
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_model_source(data)
    check_model_source("Qwen/Qwen2.5-VL-7B-Instruct")  # a hub id is left to transformers


def test_an_output_dir_under_a_file_is_named(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'afile' / 'run'}\nmodel:\n  name_or_path: {tmp_path}/m\n"
                      f"data:\n  train_file: {tmp_path}/rows.json\n  media_root: {tmp_path}\n")
    result = invoke("train", config)
    assert result.exit_code == 2 and "afile/run: Not a directory" in result.output.replace("\n", "")


def test_debug_shows_the_traceback_and_bugs_keep_theirs(tmp_path, monkeypatch):
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([good_row()]))
    result = runner.invoke(app, ["--debug", "data", "validate", str(data), "--media-root", str(tmp_path),
                                 "--check-media", "--fps", "0"])
    assert result.exit_code == 1 and type(result.exception).__name__ == "ValidationError"

    import videor1.data.validate as validate_module

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(validate_module, "validate", broken)
    result = runner.invoke(app, ["data", "validate", str(data), "--media-root", str(tmp_path)])
    assert isinstance(result.exception, RuntimeError)  # not dressed up as an input error
