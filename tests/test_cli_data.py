"""The data commands end to end: synth -> validate exits 0; a damaged copy exits 1 naming each row and file."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from videor1.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    result = runner.invoke(app, ["data", "synth", str(out), "--n", "30", "--seed", "0"])
    assert result.exit_code == 0, result.output
    return out


def validate(root, *extra):
    return runner.invoke(
        app, ["data", "validate", str(root / "train.json"), "--media-root", str(root), "--check-media", *extra]
    )


def test_clean_dataset_validates_with_counts(synth):
    result = validate(synth)
    assert result.exit_code == 0, result.output
    rows = json.loads((synth / "train.json").read_text())
    assert f"{len(rows)} rows, {len(rows)} valid, 0 with problems" in result.output
    for key in ("data_type", "problem_type", "data_source", "video", "image", "multiple choice", "regression"):
        assert key in result.output
    assert "OK: 0 bad rows, 0 bad media files" in result.output
    # the synthetic rows carry rationales, so they pass as SFT data too
    assert validate(synth, "--require-process").exit_code == 0


def test_damaged_copy_names_each_row_and_file(synth, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    rows = json.loads((root / "train.json").read_text())
    videos = [i for i, r in enumerate(rows) if r["data_type"] == "video"]
    rows[0]["problem_type"] = "essay"  # malformed row 1
    missing, truncated = rows[videos[1]], rows[videos[2]]
    (root / missing["path"]).unlink()
    data = (root / truncated["path"]).read_bytes()
    (root / truncated["path"]).write_bytes(data[: len(data) // 2])
    rows.append({"problem": "no id"})  # malformed last row
    (root / "train.json").write_text(json.dumps(rows))

    result = validate(root)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "row 1: problem_type: unknown 'essay'; expected one of multiple choice, numerical, OCR, free-form, " \
        "regression" in lines
    assert f"row {len(rows)}: problem_id: missing" in lines
    missing_line = next(line for line in lines if missing["path"][2:] in line)
    assert missing_line.endswith(f"missing file (used by row {videos[1] + 1})")
    truncated_line = next(line for line in lines if truncated["path"][2:] in line)
    assert f"(used by row {videos[2] + 1})" in truncated_line
    assert "FAILED: 2 bad rows, 2 bad media files" in result.output


def test_without_check_media_only_rows_are_checked(synth, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synth, root)
    shutil.rmtree(root / "videos")
    result = runner.invoke(app, ["data", "validate", str(root / "train.json"), "--media-root", str(root)])
    assert result.exit_code == 0, result.output


def test_benchmark_files_validate_with_their_variants(synth, tmp_path):
    """Media under `video` with a leading `/`, a frame folder, options without text: a benchmark file's forms."""
    from PIL import Image

    root = tmp_path / "bench"
    rows = [r for r in json.loads((synth / "train.json").read_text()) if r["problem_type"] == "multiple choice"]
    video = next(r for r in rows if r["data_type"] == "video")
    shutil.copy(synth / video["path"], tmp_path / "clip.mp4")
    (root / "MMVU/videos/Art").mkdir(parents=True)
    shutil.copy(tmp_path / "clip.mp4", root / "MMVU/videos/Art/0.mp4")
    frames = root / "tvqa/frames_fps3_hq/clip"
    frames.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (64, 48), (40 * i, 0, 0)).save(frames / f"{i + 1:05d}.jpg")
    blank = ["A. ", "B. ", "C. ", "D. "]
    base = {k: v for k, v in video.items() if k != "path"}
    data = [
        {**base, "problem_id": 1, "video": "/MMVU/videos/Art/0.mp4", "options": blank[: len(video["options"])]},
        {**base, "problem_id": "2", "data_type": "frame", "path": "./tvqa/frames_fps3_hq/clip", "fps": 3},
    ]
    (root / "eval.json").write_text(json.dumps(data))
    args = ["data", "validate", str(root / "eval.json"), "--media-root", str(root), "--check-media",
            "--min-frames", "2", "--max-frames", "4"]
    result = runner.invoke(app, [*args, "--benchmark"])
    assert result.exit_code == 0, result.output
    assert "OK: 0 bad rows, 0 bad media files of 2 checked" in result.output
    as_training = runner.invoke(app, args)
    assert as_training.exit_code == 1 and "row 1: options: option 1 'A. ' is not lettered" in as_training.output
    (frames / "00003.jpg").write_bytes(b"not a jpeg")
    broken = runner.invoke(app, [*args, "--benchmark"])
    assert broken.exit_code == 1 and "frame 00003.jpg: unreadable" in broken.output


def test_unreadable_file_exits_2(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    result = runner.invoke(app, ["data", "validate", str(tmp_path / "bad.json"), "--media-root", str(tmp_path)])
    assert result.exit_code == 2 and "not valid JSON" in result.output


def test_stats_prints_distribution_tables(synth):
    result = runner.invoke(app, ["data", "stats", str(synth / "train.json")])
    assert result.exit_code == 0, result.output
    assert "valid rows by problem_type" in result.output and "data_type x problem_type" in result.output


def test_models_tiny_with_a_dataset_corpus(synth, tmp_path):
    result = runner.invoke(
        app, ["models", "tiny", str(tmp_path / "m"), "--family", "qwen2_vl", "--corpus", str(synth / "train.json")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "tokenizer.json").exists()
    assert runner.invoke(app, ["models", "tiny", str(tmp_path / "x"), "--family", "gpt"]).exit_code == 2


def test_media_over_the_decode_budget_is_refused_before_decoding(synth):
    result = validate(synth, "--max-decode-pixels", "100")
    assert result.exit_code == 1
    assert "100 pixels (media.max_decode_pixels)" in result.output
