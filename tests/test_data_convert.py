"""Each benchmark's own release format, built small with real H.264 clips and zipped as the release zips them,
converted to evaluation rows that the project's loader and validator accept.

The `make_*` builders are shared with test_data_prepare.py.
"""

import json
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from videor1.data.archives import extract, find_archives
from videor1.data.convert import CONVERTERS, ConvertError
from videor1.data.convert.common import lettered
from videor1.data.dataset import load_dataset
from videor1.data.media import write_video
from videor1.data.validate import validate
from videor1.eval.benchmarks import category_from_row, get_benchmark


def write_clip(path: Path) -> bytes:
    """A real 2-second H.264 mp4 (8 frames at 4 fps, 64x48, a bar moving right); its bytes."""
    frames = np.zeros((8, 48, 64, 3), dtype=np.uint8)
    for i in range(8):
        frames[i, :, i * 8 : (i + 1) * 8] = (200, 40, 40)
    write_video(path, frames, fps=4)
    return path.read_bytes()


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> bytes:
    """One clip, reused under every name."""
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


def jpeg(seed: int) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.fromarray(np.full((48, 64, 3), seed * 20 % 255, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def make_vsibench(base: Path, clip: bytes, *, broken: bool = False) -> Path:
    """nyu-visionx/VSI-Bench: test.jsonl (+ its subset parquets) and one zip per source dataset."""
    root = base / "vsibench"
    rows = [
        {
            "id": 1,
            "dataset": "arkitscenes",
            "scene_name": "41069025",
            "question_type": "object_counting",
            "question": "How many chair(s) are in this room?",
            "options": None,
            "ground_truth": "4",
        },
        {
            "id": 2,
            "dataset": "arkitscenes",
            "scene_name": "41069025",
            "question_type": "object_rel_direction_easy",
            "question": "Standing by the bed facing the door, is the lamp to my left or right?",
            "options": ["A. left", "B. right"],
            "ground_truth": "B",
        },
        {
            "id": 3,
            "dataset": "scannet",
            "scene_name": "scene0011_00",
            "question_type": "room_size_estimation",
            "question": "What is the size of this room (in square meters)?",
            "options": None,
            "ground_truth": "21.3",
        },
        {
            "id": 4,
            "dataset": "scannetpp",
            "scene_name": "0a5c013435",
            "question_type": "obj_appearance_order",
            "question": "Which order did they first appear in?",
            "options": ["A. sofa, tv", "B. tv, sofa"],
            "ground_truth": "A",
        },
    ]
    if broken:
        rows += [
            {
                "id": 5,
                "dataset": "scannet",
                "scene_name": "scene0011_00",
                "question_type": "route_planning",
                "question": "Which turn?",
                "options": ["A. Turn left", "B. Turn right"],
                "ground_truth": "E",
            },
            {
                "id": 6,
                "dataset": "scannet",
                "scene_name": "scene9999_00",
                "question_type": "object_counting",
                "question": "How many table(s)?",
                "options": None,
                "ground_truth": "2",
            },
        ]
    write_jsonl(root / "test.jsonl", rows)
    write_parquet(root / "test_debiased.parquet", rows[:2])
    write_zip(root / "arkitscenes.zip", {"arkitscenes/41069025.mp4": clip})
    write_zip(root / "scannet.zip", {"scannet/scene0011_00.mp4": clip})
    write_zip(root / "scannetpp.zip", {"scannetpp/0a5c013435.mp4": clip})
    return root


def make_videommmu(base: Path, clip: bytes) -> Path:
    """lmms-lab/VideoMMMU: one parquet per track, one zip per discipline folder."""
    root = base / "videommmu"
    image = {"bytes": b"\x89PNG", "path": "q.png"}
    write_parquet(
        root / "Perception" / "test-00000-of-00001.parquet",
        [
            {
                "id": "validation_Art_1",
                "question": "Which style is the painting shown?",
                "image": None,
                "options": ["cubism", "surrealism", "baroque"],
                "answer": "B",
                "question_type": "multiple-choice",
            },
        ],
    )
    write_parquet(
        root / "Comprehension" / "test-00000-of-00001.parquet",
        [
            {
                "id": "validation_Art_1",
                "question": "How many figures are painted?",
                "image": None,
                "options": [],
                "answer": "42",
                "question_type": "open",
            },
            {
                "id": "validation_Math_3",
                "question": "Name the theorem applied.",
                "image": None,
                "options": [],
                "answer": "Pythagoras",
                "question_type": "open",
            },
        ],
    )
    write_parquet(
        root / "Adaptation" / "test-00000-of-00001.parquet",
        [
            {
                "id": "validation_Math_3",
                "question": "Solve the problem in the last frame.",
                "image": image,
                "options": ["", "", "", ""],
                "answer": "C",
                "question_type": "multiple-choice",
            },
        ],
    )
    write_zip(root / "Art.zip", {"Art/validation_Art_1.mp4": clip})
    write_zip(root / "Science.zip", {"Science/validation_Math_3.mp4": clip})
    return root


def make_mmvu(base: Path, clip: bytes) -> Path:
    """yale-nlp/MMVU: validation.json and plain video files (no archive)."""
    root = base / "mmvu"
    url = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/videos/{}"
    rows = [
        {
            "id": "validation_1",
            "video": url.format("Chemistry/0.mp4"),
            "question_type": "multiple-choice",
            "metadata": {"subject": "Chemistry", "textbook": "Chemistry, 2nd Edition"},
            "question": "How many grams of precipitate are produced?",
            "choices": {"A": "10.0", "B": "5.0", "C": "12.0", "D": "15.0", "E": "20.0"},
            "answer": "A",
        },
        {
            "id": "validation_2",
            "video": url.format("Computer_Science/0.mp4"),
            "question_type": "multiple-choice",
            "metadata": {"subject": "Computer Science"},
            "question": "Which traversal is shown?",
            "choices": {"A": "BFS", "B": "DFS", "C": "Dijkstra", "D": "A*", "E": ""},
            "answer": "B",
        },
        {
            "id": "validation_0",
            "video": url.format("Art/0.mp4"),
            "question_type": "open-ended",
            "metadata": {"subject": "Art"},
            "question": "Which cinematic shooting technique is shown?",
            "choices": {"A": "", "B": "", "C": "", "D": "", "E": ""},
            "answer": "Dolly Zoom",
        },
    ]
    root.mkdir(parents=True)
    (root / "validation.json").write_text(json.dumps(rows))
    for rel in ("Chemistry/0.mp4", "Computer_Science/0.mp4", "Art/0.mp4"):
        (root / "videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "videos" / rel).write_bytes(clip)
    return root


def make_mvbench(base: Path, clip: bytes, *, broken: bool = False) -> Path:
    """OpenGVLab/MVBench: json/<task>.json and video/<source>.zip, data0613.zip holding late additions."""
    root = base / "mvbench"
    tasks = {
        "action_sequence": [
            {
                "video": "3YQ5B.mp4",
                "question": "What did the person do first?",
                "candidates": ["Took the cup.", "Put down the box.", "Opened the door."],
                "answer": "Put down the box.",
                "start": 1.5,
                "end": 8.0,
            }
        ],
        "action_antonym": [
            {
                "video": "1234.webm",
                "question": "What is the action performed?",
                "candidates": ["pulling left", "pushing right"],
                "answer": "pushing right",
            }
        ],
        "object_existence": [
            {
                "video": "video_10000.mp4",
                "question": "Are there any moving cylinders?",
                "candidates": ["yes", "no", "not sure"],
                "answer": "no",
            }
        ],
        "episodic_reasoning": [
            {
                "video": "s01e02_seg01_clip_00",
                "question": "Why does Sheldon leave?",
                "candidates": ["bored", "late", "angry"],
                "answer": "late",
                "start": 0,
                "end": 3,
            }
        ],
    }
    if broken:
        tasks["action_sequence"].append(
            {"video": "NOPE1.mp4", "question": "What happened after?", "candidates": ["a", "b"], "answer": "c"}
        )
    for task, rows in tasks.items():
        (root / "json").mkdir(parents=True, exist_ok=True)
        (root / "json" / f"{task}.json").write_text(json.dumps(rows))
    write_zip(root / "video" / "star.zip", {"star/Charades_v1_480/3YQ5B.mp4": clip})
    # ssv2 is webm in the release; Video-R1 converted it to mp4 (issue #70), which is what is found here
    write_zip(root / "video" / "ssv2_video.zip", {"ssv2_video/1234.mp4": clip})
    write_zip(root / "video" / "data0613.zip", {"data0613/clevrer/video_validation/video_10000.mp4": clip})
    frames = {f"tvqa/frames_fps3_hq/s01e02_seg01_clip_00/{i:05d}.jpg": jpeg(i) for i in range(1, 9)}
    write_zip(root / "video" / "tvqa.zip", frames)
    return root


def make_tempcompass(base: Path, clip: bytes) -> Path:
    """lmms-lab/TempCompass: a parquet per task format and tempcompass_videos.zip."""
    root = base / "tempcompass"
    write_parquet(
        root / "multi-choice" / "test-00000-of-00001.parquet",
        [
            {
                "video_id": "1025",
                "dim": "speed",
                "question": "How fast does the car move?\nA. slow\nB. fast\nC. normal",
                "answer": "B. fast",
            },
            {
                "video_id": "1025",
                "dim": "direction",
                "question": "Where does the car go?\nA. left\nB. right",
                "answer": "A. left",
            },
        ],
    )
    write_parquet(
        root / "yes_no" / "test-00000-of-00001.parquet",
        [
            {"video_id": "1025", "dim": "speed", "question": "Is the car fast?", "answer": "yes"},
        ],
    )
    write_zip(root / "tempcompass_videos.zip", {"videos/1025.mp4": clip})
    return root


def make_videomme(base: Path, clip: bytes) -> Path:
    """lmms-lab/Video-MME: videomme/test parquet and separate videos_chunked_NN.zip."""
    root = base / "videomme"
    common = {
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
        "url": "https://youtube.com/x",
        "task_type": "Counting Problem",
    }
    write_parquet(
        root / "videomme" / "test-00000-of-00001.parquet",
        [
            {
                "video_id": "001",
                "duration": "short",
                "videoID": "fFjv93ACGo8",
                "question_id": "001-1",
                "question": "How many people appear?",
                "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."],
                "answer": "C",
                **common,
            },
            {
                "video_id": "601",
                "duration": "long",
                "videoID": "zzLongOne",
                "question_id": "601-2",
                "question": "What is the film about?",
                "options": ["A. war", "B. love", "C. space", "D. sport"],
                "answer": "B",
                **common,
            },
        ],
    )
    write_zip(root / "videos_chunked_01.zip", {"data/fFjv93ACGo8.mp4": clip})
    write_zip(root / "videos_chunked_02.zip", {"data/zzLongOne.mkv": clip})  # lmms-eval also looks for .mkv
    write_zip(root / "subtitle.zip", {"subtitle/fFjv93ACGo8.srt": b"1\n00:00:00,000 --> 00:00:01,000\nhi\n"})
    return root


BUILDERS = {
    "vsibench": make_vsibench,
    "videommmu": make_videommmu,
    "mmvu": make_mmvu,
    "mvbench": make_mvbench,
    "tempcompass": make_tempcompass,
    "videomme": make_videomme,
}


def unpack(root: Path) -> None:
    for archive in find_archives(root):
        extract(root, archive)


def converted(name: str, tmp_path: Path, clip: bytes, **kwargs):
    root = BUILDERS[name](tmp_path, clip, **kwargs)
    unpack(root)
    return root, CONVERTERS[name](root)


def accepted(root: Path, rows: list[dict], name: str) -> None:
    """The project's own loader and validator accept every row and decode every media file."""
    out = root / f"eval_{name}.json"
    out.write_text(json.dumps(rows))
    assert load_dataset(out, root, benchmark=True).problems == []
    report = validate(out, root, check=True, benchmark=True)
    assert report.ok, [str(p) for p in report.dataset.problems + report.media_problems]


def by_id(rows):
    return {row["problem_id"]: row for row in rows}


def test_lettered_keeps_letters_and_adds_missing_ones():
    assert lettered(["A. left", "B. right"]) == ["A. left", "B. right"]
    assert lettered(["left", "right"]) == ["A. left", "B. right"]
    assert lettered(["", ""]) == ["A. ", "B. "]
    assert lettered(["B. out of order", "A. x"]) == ["A. B. out of order", "B. A. x"]


def test_vsibench(tmp_path, clip):
    root, done = converted("vsibench", tmp_path, clip)
    rows = by_id(done.rows)
    assert done.issues == [] and done.sources == ["test.jsonl"] and (done.media_found, done.media_missing) == (4, 0)
    assert done.skipped == ["test_debiased.parquet: a subset of test.jsonl"]
    assert rows[1] | {} == {
        "problem_id": 1,
        "problem": "How many chair(s) are in this room?",
        "data_type": "video",
        "problem_type": "regression",
        "options": [],
        "solution": "<answer>4</answer>",
        "path": "./arkitscenes/41069025.mp4",
        "data_source": "VSI-Bench",
        "question_type": "object_counting",
        "dataset": "arkitscenes",
        "scene_name": "41069025",
    }
    assert rows[2]["problem_type"] == "multiple choice" and rows[2]["options"] == ["A. left", "B. right"]
    assert rows[2]["solution"] == "<answer>B</answer>" and rows[3]["path"] == "./scannet/scene0011_00.mp4"
    bench = get_benchmark("vsibench")
    assert [category_from_row(bench, r).name for r in done.rows] == [
        "object_counting",
        "object_rel_direction_easy",
        "room_size_estimation",
        "obj_appearance_order",
    ]
    accepted(root, done.rows, "vsibench")


def test_vsibench_reads_the_first_release_parquet(tmp_path, clip):
    root = make_vsibench(tmp_path, clip)
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    (root / "test.jsonl").unlink()
    write_parquet(root / "test-00000-of-00001.parquet", rows)
    unpack(root)
    done = CONVERTERS["vsibench"](root)
    assert done.sources == ["test-00000-of-00001.parquet"] and len(done.rows) == 4 and done.issues == []


def test_bad_rows_are_reported_and_kept_never_fixed(tmp_path, clip):
    root, done = converted("vsibench", tmp_path, clip, broken=True)
    assert [str(i) for i in done.issues] == [
        "test.jsonl: row 5: answer: 'E' is not among the options AB",
        "test.jsonl: row 6: path: missing file scannet/scene9999_00.mp4 after unpacking",
    ]
    assert len(done.rows) == 6 and (done.media_found, done.media_missing) == (5, 1)
    rows = by_id(done.rows)
    assert rows[5]["solution"] == "<answer>not among the options: E</answer>"
    out = root / "eval.json"
    out.write_text(json.dumps(done.rows))
    report = validate(out, root, check=True, benchmark=True)
    assert [str(p) for p in report.dataset.problems] == [
        "row 5: solution: answer 'not among the options: E' is not an option letter"
    ]
    assert [p.reason for p in report.media_problems] == ["missing file (used by row 6)"]


def test_videommmu(tmp_path, clip):
    root, done = converted("videommmu", tmp_path, clip)
    rows = by_id(done.rows)
    assert done.issues == [] and sorted(rows) == [
        "Adaptation/validation_Math_3",
        "Comprehension/validation_Art_1",
        "Comprehension/validation_Math_3",
        "Perception/validation_Art_1",
    ]
    perception = rows["Perception/validation_Art_1"]
    assert perception["options"] == ["A. cubism", "B. surrealism", "C. baroque"]
    assert perception["solution"] == "<answer>B</answer>" and perception["path"] == "./Art/validation_Art_1.mp4"
    assert perception["track"] == "Perception" and "image" not in perception
    assert rows["Comprehension/validation_Art_1"]["problem_type"] == "numerical"
    assert rows["Comprehension/validation_Math_3"] | {} == rows["Comprehension/validation_Math_3"]
    assert rows["Comprehension/validation_Math_3"]["problem_type"] == "free-form"
    adaptation = rows["Adaptation/validation_Math_3"]
    assert adaptation["options"] == ["A. ", "B. ", "C. ", "D. "] and adaptation["solution"] == "<answer>C</answer>"
    assert adaptation["path"] == "./Science/validation_Math_3.mp4"
    accepted(root, done.rows, "videommmu")


def test_mmvu(tmp_path, clip):
    root, done = converted("mmvu", tmp_path, clip)
    rows = by_id(done.rows)
    assert done.issues == [] and done.sources == ["validation.json"]
    assert rows["validation_1"]["options"] == ["A. 10.0", "B. 5.0", "C. 12.0", "D. 15.0", "E. 20.0"]
    assert rows["validation_1"]["path"] == "./videos/Chemistry/0.mp4" and rows["validation_1"]["subject"] == "Chemistry"
    assert rows["validation_2"]["options"] == ["A. BFS", "B. DFS", "C. Dijkstra", "D. A*"]
    assert rows["validation_2"]["solution"] == "<answer>B</answer>"
    assert rows["validation_0"]["problem_type"] == "free-form" and rows["validation_0"]["options"] == []
    assert rows["validation_0"]["solution"] == "<answer>Dolly Zoom</answer>"
    accepted(root, done.rows, "mmvu")


def test_mvbench(tmp_path, clip):
    root, done = converted("mvbench", tmp_path, clip)
    rows = {row["task_type"]: row for row in done.rows}
    assert done.issues == [] and (done.media_found, done.media_missing) == (4, 0)
    sequence = rows["action_sequence"]
    assert sequence["options"] == ["A. Took the cup.", "B. Put down the box.", "C. Opened the door."]
    assert sequence["solution"] == "<answer>B</answer>" and (sequence["start"], sequence["end"]) == (1.5, 8.0)
    assert sequence["path"] == "./video/star/Charades_v1_480/3YQ5B.mp4"
    assert rows["action_antonym"]["path"] == "./video/ssv2_video/1234.mp4"
    assert rows["object_existence"]["path"] == "./video/data0613/clevrer/video_validation/video_10000.mp4"
    episodic = rows["episodic_reasoning"]
    assert episodic["data_type"] == "frame" and episodic["fps"] == 3.0
    assert episodic["path"] == "./video/tvqa/frames_fps3_hq/s01e02_seg01_clip_00"
    bench = get_benchmark("mvbench")
    assert {category_from_row(bench, r).name for r in done.rows} == set(rows)
    accepted(root, done.rows, "mvbench")


def test_mvbench_answer_outside_the_candidates_and_missing_clip(tmp_path, clip):
    _, done = converted("mvbench", tmp_path, clip, broken=True)
    assert [str(i) for i in done.issues] == [
        "json/action_sequence.json: row 2: path: missing file video/star/Charades_v1_480/NOPE1.mp4 after unpacking",
        "json/action_sequence.json: row 2: answer: 'c' is not among the options AB",
    ]


def test_tempcompass(tmp_path, clip):
    root, done = converted("tempcompass", tmp_path, clip)
    rows = by_id(done.rows)
    assert done.issues == [] and done.skipped == ["yes_no/: not multiple choice"]
    speed = rows["1025/speed/1"]
    assert speed["problem"] == "How fast does the car move?" and speed["options"] == ["A. slow", "B. fast", "C. normal"]
    assert speed["solution"] == "<answer>B</answer>" and speed["path"] == "./videos/1025.mp4"
    assert speed["dim"] == "speed"
    assert rows["1025/direction/1"]["solution"] == "<answer>A</answer>"
    accepted(root, done.rows, "tempcompass")


def test_videomme(tmp_path, clip):
    root, done = converted("videomme", tmp_path, clip)
    rows = by_id(done.rows)
    assert done.issues == []
    assert rows["001-1"]["options"] == ["A. 1.", "B. 2.", "C. 3.", "D. 4."]
    assert rows["001-1"]["solution"] == "<answer>C</answer>" and rows["001-1"]["duration"] == "short"
    assert rows["001-1"]["path"] == "./data/fFjv93ACGo8.mp4" and rows["601-2"]["path"] == "./data/zzLongOne.mkv"
    accepted(root, done.rows, "videomme")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_folder_without_the_release_files_is_bad_input(tmp_path, name):
    (tmp_path / name).mkdir()
    with pytest.raises(ConvertError, match=str(tmp_path / name)):
        CONVERTERS[name](tmp_path / name)


def test_videommmu_folders_beside_the_tracks_are_listed_not_read(tmp_path, clip):
    root = make_videommmu(tmp_path, clip)
    write_parquet(root / "Comprehension_Engineering" / "test-00000-of-00001.parquet", [{"id": "x"}])
    unpack(root)
    done = CONVERTERS["videommmu"](root)
    assert done.skipped == ["Comprehension_Engineering/: not one of the tracks Perception, Comprehension, Adaptation"]
    assert len(done.rows) == 4


def test_a_release_path_outside_its_folder_is_an_issue_not_a_lookup(tmp_path, clip):
    root = make_mmvu(tmp_path, clip)
    rows = json.loads((root / "validation.json").read_text())
    rows[0]["video"] = "https://huggingface.co/datasets/yale-nlp/MMVU/resolve/main/../../secret.mp4"
    (tmp_path / "secret.mp4").write_bytes(clip)
    (root / "validation.json").write_text(json.dumps(rows))
    done = CONVERTERS["mmvu"](root)
    assert [str(i) for i in done.issues] == [
        "validation.json: row 1: path: path '../../secret.mp4' escapes the media root"
    ]
    assert (done.media_found, done.media_missing) == (2, 1) and len(done.rows) == 3
