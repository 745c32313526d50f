"""`videor1 data prepare DIR` end to end: every set unpacked, converted, validated and summarised; reruns skip
finished archives; bad input is one line and exit 2; rows with problems exit 1; Video-R1's eval file compared."""

import json
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.rows import good_row
from tests.test_data_convert import BUILDERS, make_vsibench, write_clip, write_zip
from videor1.cli import app
from videor1.data.dataset import load_dataset
from videor1.data.prepare import prepare

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


def png() -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.full((48, 64, 3), 90, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


VIDEO = "./LLaVA-Video-178K/liwei_youtube_videos/videos/youtube_video_2024/ytb_7nRmsEw7nsE.mp4"
IMAGE = "./Math/Multimath-300k/17ff4c7d14c388134de02381b1fc2824.png"


def make_training(base: Path, clip: bytes) -> None:
    """Video-R1/Video-R1-data: the two JSONs at the top, media zips in per-source folders (src/unzip.py's
    layout); `fetch` puts the RL JSON and the media in video-r1-260k/, the SFT JSON alone in video-r1-cot-165k/."""
    rows = [
        good_row(problem_id=1, problem="What does the man hold?", options=["A. a cup", "B. a phone"], process="",
                 path=VIDEO, data_source="LLaVA-Video-178K"),
        good_row(problem_id=2, problem="What is x?", data_type="image", problem_type="numerical", options=[],
                 process="", solution="<answer>3</answer>", path=IMAGE, data_source="Multimath"),
    ]
    rl = base / "video-r1-260k"
    rl.mkdir(parents=True)
    (rl / "Video-R1-260k.json").write_text(json.dumps(rows))
    # each folder's <Folder>_partN.zip are complete zips, unpacked where they lie (src/unzip.py)
    write_zip(rl / "LLaVA-Video-178K" / "LLaVA-Video-178K_part1.zip", {VIDEO.split("LLaVA-Video-178K/")[1]: clip})
    write_zip(rl / "LLaVA-Video-178K" / "LLaVA-Video-178K_part2.zip", {"liwei_youtube_videos/other.mp4": clip})
    write_zip(rl / "Math" / "Math_part1.zip", {IMAGE.split("Math/")[1]: png()})
    # what `fetch` leaves beside the files: its manifest and huggingface_hub's metadata folder
    (rl / "fetch.json").write_text("{}")
    write_zip(rl / ".cache" / "huggingface" / "download" / "x.zip", {"never/unpacked.txt": b"x"})
    sft = base / "video-r1-cot-165k"
    sft.mkdir()
    cot = [{**row, "process": "<think>Looking at it.</think>"} for row in rows]
    (sft / "Video-R1-COT-165k.json").write_text(json.dumps(cot))


@pytest.fixture
def everything(tmp_path, clip):
    base = tmp_path / "data"
    for build in BUILDERS.values():
        build(base, clip)
    make_training(base, clip)
    return base


def prepare_cli(*args):
    return runner.invoke(app, ["data", "prepare", *map(str, args)])


def error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_every_set_is_prepared_and_a_rerun_unpacks_nothing(everything):
    result = prepare_cli(everything)
    assert result.exit_code == 0, result.output
    assert f"OK: wrote {everything / 'prepare.json'}" in result.output
    assert (
        "vsibench: 4 rows, 4 valid, 0 bad, 0 conversion issues; media 4 found, 0 missing, 0 bad of 3 decoded"
        in result.output
    )
    summary = json.loads((everything / "prepare.json").read_text())
    sets = {entry["name"]: entry for entry in summary["sets"]}
    assert summary["ok"] and list(sets) == [
        "video-r1-260k",
        "video-r1-cot-165k",
        "vsibench",
        "videommmu",
        "mmvu",
        "mvbench",
        "tempcompass",
        "videomme",
    ]
    assert sets["mvbench"]["by_category"] == {
        "action_antonym": 1,
        "action_sequence": 1,
        "episodic_reasoning": 1,
        "object_existence": 1,
    }
    assert sets["videomme"]["by_category"] == {"long": 1, "short": 1}
    assert sets["tempcompass"]["skipped_files"] == ["yes_no/: not multiple choice"]
    assert sets["vsibench"]["archives"] == {
        "partials_removed": 0,
        "archives_unpacked": 3,
        "files_written": 3,
        "files_present": 0,
    }
    # the training sets: media found under the repo's layout; the SFT JSON uses the RL folder's media
    assert (sets["video-r1-260k"]["media_found"], sets["video-r1-260k"]["media_missing"]) == (2, 0)
    assert sets["video-r1-260k"]["archives"]["archives_unpacked"] == 3
    assert not (everything / "video-r1-260k" / "never").exists()
    assert sets["video-r1-cot-165k"]["media_root"] == str(everything / "video-r1-260k")
    assert sets["video-r1-cot-165k"]["media_found"] == 2 and sets["video-r1-cot-165k"]["by_category"] == {
        "LLaVA-Video-178K": 1,
        "Multimath": 1,
    }
    for name in BUILDERS:
        out = everything / name / f"eval_{name}.json"
        assert sets[name]["output"] == str(out)
        assert load_dataset(out, everything / name, benchmark=True).problems == []

    clip_file = everything / "vsibench" / "arkitscenes" / "41069025.mp4"
    stamp = clip_file.stat().st_mtime_ns
    again = prepare(everything, only=["vsibench", "mvbench"])
    assert [entry.archives for entry in again.sets] == [
        {"partials_removed": 0, "archives_skipped": 3},
        {"partials_removed": 0, "archives_skipped": 4},
    ]
    assert again.ok and clip_file.stat().st_mtime_ns == stamp


def test_one_set_folder_can_be_prepared_alone(tmp_path, clip):
    root = make_vsibench(tmp_path, clip)
    lines = []
    summary = prepare(root, check_media=False, say=lines.append)
    assert summary.ok and [entry.name for entry in summary.sets] == ["vsibench"]
    assert summary.sets[0].media_checked == 0 and summary.sets[0].media_found == 4
    assert "vsibench: arkitscenes.zip: 1 files written, 0 already there" in lines
    assert (root / "prepare.json").exists() and (root / "eval_vsibench.json").exists()


def test_rows_with_problems_exit_1_and_are_listed(tmp_path, clip):
    base = tmp_path / "data"
    make_vsibench(base, clip, broken=True)
    result = prepare_cli(base, "--no-check-media")
    assert result.exit_code == 1, result.output
    assert "vsibench: 6 rows, 5 valid, 1 bad, 2 conversion issues; media 5 found, 1 missing" in result.output
    problems = (base / "vsibench" / "prepare_problems.txt").read_text().splitlines()
    assert problems == [
        f"{base / 'vsibench' / 'test.jsonl'}: row 5: answer: 'E' is not among the options AB",
        f"{base / 'vsibench' / 'test.jsonl'}: row 6: path: missing file scannet/scene9999_00.mp4 after unpacking",
        f"{base / 'vsibench' / 'eval_vsibench.json'}: row 5: solution: answer 'not among the options: E' is not "
        "an option letter",
    ]
    assert all(line in result.output for line in problems)
    assert "FAILED" in result.output and not json.loads((base / "prepare.json").read_text())["ok"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, clip):
    result = prepare_cli(tmp_path / "nowhere")
    assert result.exit_code == 2 and "nowhere: not a folder" in error_line(result.output)
    (tmp_path / "empty").mkdir()
    assert "empty: no data set folder (video-r1-260k, " in error_line(prepare_cli(tmp_path / "empty").output)
    base = tmp_path / "data"
    make_vsibench(base, clip)
    result = prepare_cli(base, "--only", "mvbench")
    assert result.exit_code == 2 and "no mvbench folder (--only)" in error_line(result.output)
    result = prepare_cli(base, "--only", "vsi")
    assert result.exit_code == 2 and "--only vsi: unknown set" in error_line(result.output)
    (base / "mmvu").mkdir()
    result = prepare_cli(base)
    assert result.exit_code == 2 and "no MMVU question file (validation.json, data/validation.json)" in error_line(
        result.output
    )


def test_a_hostile_archive_stops_with_its_name_and_member(tmp_path, clip):
    base = tmp_path / "data"
    root = make_vsibench(base, clip)
    with zipfile.ZipFile(root / "scannet.zip", "a") as zf:
        zf.writestr("../../escaped.txt", b"evil")
    result = prepare_cli(base)
    assert result.exit_code == 2
    assert f"{root / 'scannet.zip'}: ../../escaped.txt: path with a '..' component" in error_line(result.output)
    assert not (tmp_path / "escaped.txt").exists() and not (root / "scannet").exists()
    # the limits are settings of the command
    write_zip(root / "scannet.zip", {"scannet/scene0011_00.mp4": clip, "scannet/README.txt": b"scenes"})
    result = prepare_cli(base, "--max-members", "1", "--only", "vsibench")
    assert result.exit_code == 2
    assert "scannet.zip: scannet/README.txt: more than 1 members (--max-members)" in error_line(result.output)
    assert prepare_cli(base, "--max-members", "2").exit_code == 0


def test_video_r1_eval_file_is_compared_and_rerooted(tmp_path, clip):
    base = tmp_path / "data"
    make_vsibench(base, clip)
    theirs = [
        {
            "problem_id": 1,
            "problem": "How many chair(s) are in this room?",
            "data_type": "video",
            "problem_type": "numerical",
            "options": [],
            "solution": "<answer>4</answer>",
            "path": "./VSI-Bench/arkitscenes/41069025.mp4",
            "data_source": "VSI-Bench",
        },
        {
            "problem_id": 2,
            "problem": "Standing by the bed facing the door, is the lamp to my left or right?",
            "data_type": "video",
            "problem_type": "multiple choice",
            "options": ["A. left", "B. right"],
            "solution": "<answer>A</answer>",
            "path": "./VSI-Bench/arkitscenes/41069025.mp4",
            "data_source": "VSI-Bench",
        },
        {
            "problem_id": 3,
            "problem": "How large is this room in square meters?",
            "data_type": "video",
            "problem_type": "regression",
            "options": [],
            "solution": "<answer>21.3</answer>",
            "path": "./VSI-Bench/scannet/scene0011_00.mp4",
            "data_source": "VSI-Bench",
        },
        {
            "problem_id": 9,
            "problem": "How many sofa(s)?",
            "data_type": "video",
            "problem_type": "numerical",
            "options": [],
            "solution": "<answer>1</answer>",
            "path": "./VSI-Bench/scannet/scene0000_00.mp4",
            "data_source": "VSI-Bench",
        },
    ]
    (base / "video-r1-eval").mkdir()
    (base / "video-r1-eval" / "eval_vsibench.json").write_text(json.dumps(theirs))
    summary = prepare(base, check_media=False)
    assert summary.ok and summary.sets[0].video_r1["paired"] == 3
    report = json.loads((base / "vsibench" / "compare_video_r1.json").read_text())
    assert (report["ours"], report["video_r1"], report["paired"]) == (4, 4, 3)
    assert report["only_ours"] == {"count": 1, "examples": [4]}
    assert report["only_video_r1"] == {"count": 1, "examples": [9]}
    differences = report["differences"]
    assert differences["answer"]["count"] == 1 and differences["answer"]["examples"][0] | {} == {
        "ours": 2,
        "video_r1": 2,
        "ours_value": "b",
        "video_r1_value": "a",
    }
    assert differences["problem"]["count"] == 1 and differences["problem"]["examples"][0]["ours"] == 3
    assert differences["problem_type"]["count"] == 1 and differences["options"]["count"] == 0
    assert report["categories"]["ours"]["object_counting"] == 1 and report["categories"]["video_r1"] == {"unknown": 4}
    moved = json.loads((base / "vsibench" / "eval_vsibench.video_r1.json").read_text())
    assert [row["path"] for row in moved] == [
        "./arkitscenes/41069025.mp4",
        "./arkitscenes/41069025.mp4",
        "./scannet/scene0011_00.mp4",
        "./VSI-Bench/scannet/scene0000_00.mp4",
    ]
    assert moved[0]["video_r1_path"] == "./VSI-Bench/arkitscenes/41069025.mp4" and "video_r1_path" not in moved[3]
    samples = load_dataset(base / "vsibench" / "eval_vsibench.video_r1.json", base / "vsibench").samples
    assert [s.media_path.exists() for s in samples] == [True, True, True, False]
