"""Damaged checkpoints, deeply nested JSON and files that are not regular files end every command with one
line naming the file and exit code 2: no traceback, no RecursionError, no command waiting for ever."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading

import pytest
import yaml
from safetensors import SafetensorError
from typer.testing import CliRunner

from tests.rows import good_row
from videor1.annotate.teacher import media_url
from videor1.cli import app
from videor1.cli_errors import input_error_message
from videor1.data.dataset import (
    MAX_JSON_DEPTH,
    DatasetError,
    JSONDepthError,
    iter_rows,
    load_dataset,
    loads_json,
    open_regular_file,
    read_json,
)
from videor1.data.schema import parse_row
from videor1.models.load import CheckpointError, load_model

runner = CliRunner()
SUBPROCESS_S = 180  # a fresh interpreter imports torch and transformers on a busy 2-core machine
HANG_S = 20  # far above what refusing a FIFO takes, far below "for ever"
CORRUPT = "truncated or corrupt safetensors file"
SMALL = ["--max-pixels", "3136", "--image-max-pixels", "3136", "--max-new-tokens", "4"]


def nested(depth: int) -> str:
    """A JSON list nested `depth` levels deep: [[[…]]]."""
    return "[" * depth + "]" * depth


def error_line(output: str) -> str:
    """The single `error: …` line of a command's output (failing when there is none, or a traceback)."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


# --- damaged checkpoints ------------------------------------------------------------------------------------


def truncate(weights):
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def huge_header(weights):
    # safetensors starts with the header's length as 8 little-endian bytes
    data = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", 2**62) + data[8:])


@pytest.fixture(params=[truncate, huge_header], ids=["truncated", "header-2^62"])
def damaged(request, tiny_models, tmp_path):
    """A copy of the tiny model whose model.safetensors is damaged; yields (folder, weights file)."""
    folder = tmp_path / "damaged-model"
    shutil.copytree(tiny_models(), folder)
    request.param(folder / "model.safetensors")
    return folder, folder / "model.safetensors"


def test_load_model_names_the_damaged_file(damaged):
    folder, weights = damaged
    with pytest.raises(CheckpointError) as raised:
        load_model(folder, dtype="float32")
    message = input_error_message(raised.value)
    assert message is not None and "\n" not in message
    assert message.startswith(f"{weights}: {CORRUPT} (")


def test_the_damaged_shard_of_a_sharded_checkpoint_is_named(tiny_models, tmp_path):
    folder = tmp_path / "sharded"
    load_model(tiny_models(), dtype="float32").save_pretrained(folder, max_shard_size="1MB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 2
    truncate(shards[1])
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(shards[1]))}: {CORRUPT} \\(.*file not fully covered"):
        load_model(folder, dtype="float32")


def test_a_safetensors_error_from_elsewhere_is_still_input():
    # a weights file read outside load_model (a LoRA adapter through peft) names no file, but is no bug either
    assert input_error_message(SafetensorError("invalid header length")) == f"{CORRUPT} (invalid header length)"


def test_infer_and_eval_end_in_one_line(damaged, synth_root, tmp_path):
    folder, weights = damaged
    image = next((synth_root / "images").glob("*.png"))
    result = runner.invoke(app, ["infer", "--model", str(folder), *SMALL, "--image", str(image), "How many?"])
    assert result.exit_code == 2 and f"{weights}: {CORRUPT}" in error_line(result.output)

    video = next((synth_root / "videos").glob("*.mp4"))
    data = tmp_path / "eval_videomme.json"
    data.write_text(json.dumps([good_row(path=str(video.relative_to(synth_root)))]))
    result = runner.invoke(app, ["eval", "--model", str(folder), "--bench", "videomme", "--data", str(data),
                                 "--media-root", str(synth_root), "--out", str(tmp_path / "run"), *SMALL])
    assert result.exit_code == 2 and f"{weights}: {CORRUPT}" in error_line(result.output)


def test_train_ends_in_one_line(damaged, synth_root, tmp_path):
    folder, weights = damaged
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "run"), "tensorboard": False,
        "model": {"name_or_path": str(folder), "dtype": "float32"},
        "data": {"train_file": str(synth_root / "train.json"), "media_root": str(synth_root)},
    }))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2 and f"{weights}: {CORRUPT}" in error_line(result.output)


def test_serve_ends_in_one_line(damaged):
    # a real process: serve installs log handlers, and a regression that loaded the model would serve for ever
    folder, weights = damaged
    command = [sys.executable, "-m", "videor1.cli", "serve", "--model", str(folder), "--port", "1",
               "--api-key", "k", "--torch-threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_S)
    assert done.returncode == 2 and f"{weights}: {CORRUPT}" in error_line(done.stderr)


# --- deeply nested JSON -------------------------------------------------------------------------------------


def test_loads_json_bounds_the_depth():
    assert loads_json(nested(MAX_JSON_DEPTH)) is not None
    assert loads_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert loads_json("3") == 3
    # just over the bound parses, and is refused; 200,000 levels would be a RecursionError in json.loads
    for depth in (MAX_JSON_DEPTH + 1, 900, 200_000):
        with pytest.raises(JSONDepthError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            loads_json(nested(depth))
    with pytest.raises(JSONDepthError):
        loads_json('[{"options": ' + nested(MAX_JSON_DEPTH) + "}]")  # depth 66: list, object, then 64


@pytest.mark.parametrize("depth", [200_000, MAX_JSON_DEPTH + 1])
def test_nested_json_data_file_is_one_line(tmp_path, depth):
    data = tmp_path / "deep.json"
    data.write_text(nested(depth))
    result = runner.invoke(app, ["data", "validate", str(data), "--media-root", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{data}: JSON nested deeper than {MAX_JSON_DEPTH} levels" in error_line(result.output)


def test_a_nested_jsonl_line_is_that_rows_problem(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(good_row()) + "\n" + "[" * 200_000 + "\n")
    loaded = load_dataset(data, tmp_path)
    assert [str(p) for p in loaded.problems] == [f"row 2: row: JSON nested deeper than {MAX_JSON_DEPTH} levels"]
    result = runner.invoke(app, ["data", "validate", str(data), "--media-root", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_eval_annotate_and_train_name_the_nested_file(tmp_path, tiny_models, synth_root):
    data = tmp_path / "deep.json"
    data.write_text("[" * 200_000)
    expected = f"{data}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
    result = runner.invoke(app, ["eval", "--model", str(tiny_models()), "--bench", "videomme", "--data", str(data),
                                 "--media-root", str(tmp_path), "--out", str(tmp_path / "run"), *SMALL])
    assert result.exit_code == 2 and expected in error_line(result.output)
    result = runner.invoke(app, ["annotate", "--data", str(data), "--media-root", str(tmp_path), "--out",
                                 str(tmp_path / "cot.json"), "--endpoint", "http://127.0.0.1:1/v1",
                                 "--teacher-name", "t"])
    assert result.exit_code == 2 and expected in error_line(result.output)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "train"), "tensorboard": False,
        "model": {"name_or_path": str(tiny_models())}, "data": {"train_file": str(data), "media_root": str(tmp_path)},
    }))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2 and expected in error_line(result.output)


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff[]")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        read_json(bad)
    bad.write_text("[1,")
    with pytest.raises(DatasetError, match=r"bad\.json: not valid JSON"):
        read_json(bad)


# --- files that are not regular files -----------------------------------------------------------------------


def finishes(fn, seconds: float = HANG_S):
    """fn() in a thread: its result or exception, failing the test (not hanging it) when it does not return."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return thread, outcome


def release(fifo):
    """Open the FIFO for writing and close it, so a reader blocked on it (a broken fix) sees the end and returns."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader is waiting


def fifo_refusal(fifo, read):
    """Make `fifo` a named pipe and read it with `read` in a bounded thread: the exception it ended with."""
    os.mkfifo(fifo)
    thread, outcome = finishes(read)
    alive = thread.is_alive()
    release(fifo)
    assert not alive, "reading a FIFO blocked"
    return outcome.get("error")


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_a_fifo_is_refused_without_waiting(tmp_path, suffix):
    fifo = tmp_path / f"rows{suffix}"
    error = fifo_refusal(fifo, lambda: list(iter_rows(fifo)))
    assert isinstance(error, DatasetError)
    assert str(error) == f"{fifo}: not a regular file (a named pipe)"


def test_data_validate_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "rows.json"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "videor1.cli", "data", "validate", str(fifo), "--media-root", str(tmp_path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SUBPROCESS_S)
    except subprocess.TimeoutExpired:
        pytest.fail("`videor1 data validate FIFO` did not return")
    assert done.returncode == 2
    assert f"{fifo}: not a regular file (a named pipe)" in error_line(done.stderr)


def test_devices_and_folders_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="not a regular file \\(a character device\\)"):
        open_regular_file(os.devnull)
    with pytest.raises(DatasetError, match="not a regular file \\(a folder\\)"):
        read_json(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_regular_file(tmp_path / "missing.json")


def test_the_teachers_media_fifo_is_refused(tmp_path):
    fifo = tmp_path / "clip.mp4"
    sample = parse_row(good_row(path="clip.mp4"), row_number=1, media_root=tmp_path)
    error = fifo_refusal(fifo, lambda: media_url(sample, "data-url"))
    assert str(error) == f"{fifo}: not a regular file (a named pipe)"


def test_eval_score_refuses_a_fifo_and_a_nested_file(tmp_path):
    """`videor1 eval score` reads predictions or eval_bench.py outputs through the same checks."""
    from videor1.eval.video_r1_outputs import OutputFileError, read_scored_file

    fifo = tmp_path / "outputs.json"
    error = fifo_refusal(fifo, lambda: read_scored_file(fifo))
    assert isinstance(error, OutputFileError)
    assert str(error) == f"{fifo}: not a regular file (a named pipe)"
    deep = tmp_path / "deep.json"
    deep.write_text(nested(200_000))
    with pytest.raises(OutputFileError, match=f"deep\\.json: JSON nested deeper than {MAX_JSON_DEPTH} levels"):
        read_scored_file(deep)
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"truth": "A"}\n' + nested(MAX_JSON_DEPTH + 1) + "\n")
    with pytest.raises(OutputFileError, match="deep\\.jsonl: row 2: not valid JSON: JSON nested deeper"):
        read_scored_file(lines)


def test_a_config_that_is_a_fifo_or_nested_too_deeply_is_one_line(tmp_path):
    from videor1.config import ConfigError, TrainConfig, load_config

    fifo = tmp_path / "c.yaml"
    error = fifo_refusal(fifo, lambda: load_config(TrainConfig, fifo))
    assert isinstance(error, ConfigError)
    assert str(error) == f"{fifo}: not a regular file (a named pipe)"
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 200_000)
    with pytest.raises(ConfigError, match="deep\\.yaml: YAML nested too deeply to be a config"):
        load_config(TrainConfig, deep)
