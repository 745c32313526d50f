"""Benchmark files as people publish them: schema variants, frame folders, bad rows, and Video-R1's own outputs.

Every file here is written by the test in the variant it stands for (media under `video` with a leading
`/`, `data_type: frame`, a folder of JPEG frames behind a `.mp4`-less path, an option without text, a row
that cannot be evaluated), and goes through `videor1 eval` on a tiny model with real media decoding.
"""

import json
import shutil

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from tests.rows import good_row
from tests.test_eval_runner import FLAGS, SMALL
from videor1.config import MediaConfig
from videor1.data.media import load_video
from videor1.eval import generate as generate_module
from videor1.eval.commands import register
from videor1.eval.config import BenchmarkRun, DecodingConfig, EvalConfig
from videor1.eval.runner import EvalError, run_eval
from videor1.eval.video_r1_outputs import original_mra, original_reward

app = typer.Typer()
register(app)
runner = CliRunner()

OPTIONS = ["A. left", "B. right", "C. up", "D. down"]


def frames_of(video_path):
    """Every frame of a real mp4 as HxWx3 uint8 arrays."""
    import av

    with av.open(str(video_path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def mvbench_root(tmp_path_factory, synth_root):
    """MVBench's layout: source folders of mp4s, and TVQA clips as folders of JPEG frames."""
    root = tmp_path_factory.mktemp("mvbench")
    videos = sorted((synth_root / "videos").glob("*.mp4"))
    for source, video in (("star/Charades_v1_480", videos[0]), ("ssv2_video", videos[1]), ("misc", videos[2])):
        (root / "MVBench" / source).mkdir(parents=True)
        shutil.copy(video, root / "MVBench" / source / "clip.mp4")
    for clip in ("s01e01_clip_01", "s01e01_clip_02"):
        folder = root / "MVBench" / "tvqa" / "frames_fps3_hq" / clip
        folder.mkdir(parents=True)
        for i, frame in enumerate(frames_of(videos[3]), start=1):
            Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return root


def mc(problem_id, **changes):
    row = good_row(problem_id=problem_id, options=OPTIONS, solution="<answer>B</answer>", data_source="")
    row.update(changes)
    return row


def mvbench_rows():
    """One row per variant; the comment says where each one's category comes from."""
    bad = mc("bad", solution="<answer>E</answer>", path="./MVBench/misc/clip.mp4")  # E is not an option
    no_task_media = {"path": "./MVBench/misc/clip.mp4"}
    rows = [
        mc(1, path="./MVBench/misc/clip.mp4", task_type="Action Antonym"),  # its column
        mc("two", video="/MVBench/star/Charades_v1_480/clip.mp4"),  # path: star is shared by 3 tasks
        mc(3, image=None, video="/MVBench/ssv2_video/clip.mp4"),  # path: ssv2_video is action_antonym's
        mc(4, data_type="frame", path="/MVBench/tvqa/frames_fps3_hq/s01e01_clip_01", fps=6),  # path: tvqa
        mc(5, path="./MVBench/tvqa/frames_fps3_hq/s01e01_clip_02"),  # a video path that is a folder
        bad,
        mc(7, options=["A. ", "B. ", "C. ", "D. "], **no_task_media),  # option text in the video: unknown
        mc(8, problem_type="numerical", options=None, solution="<answer>3</answer>", **no_task_media),
        mc("two", path="./MVBench/misc/clip.mp4"),  # duplicate id: recorded, never generated
    ]
    for row in rows:
        if "video" in row or "image" in row:
            del row["path"]
    return rows


@pytest.fixture
def recorded(monkeypatch):
    """Scripted answers (right letter, number 3) in place of the model's; keep the media each prompt got."""
    seen = {}

    def fake(model, processor, samples, media, **decoding):
        for sample, item in zip(samples, media, strict=True):
            seen[sample.problem_id] = item
        return [f"<think>hmm</think><answer>{s.answer}</answer>" for s in samples]

    monkeypatch.setattr(generate_module, "generate_texts", fake)
    return seen


def test_every_variant_evaluates_with_one_line_per_row(tiny_models, mvbench_root, recorded, tmp_path):
    data = tmp_path / "eval_mvbench.json"
    rows = mvbench_rows()
    data.write_text(json.dumps(rows))
    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_models()), "--bench", "mvbench", "--data", str(data), "--media-root",
            str(mvbench_root), "--out", str(out), "--frame-fps", "2", *FLAGS]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output

    records = [json.loads(line) for line in (out / "mvbench" / "predictions.jsonl").read_text().splitlines()]
    assert [r["row"] for r in sorted(records, key=lambda r: r["row"])] == list(range(1, len(rows) + 1))
    by_row = {r["row"]: r for r in records}
    failed = {row: r for row, r in by_row.items() if r["error"]}
    assert sorted(failed) == [6, 9]
    assert failed[6]["error"] == "invalid row: solution: answer E is not among the options ABCD"
    assert failed[9]["error"].startswith("invalid row: problem_id: duplicate of row 2")
    assert failed[9]["id"] == "row:9" and failed[6]["id"] == "bad"
    assert all(r["error_kind"] == "row" and r["score"] == 0.0 for r in failed.values())
    assert all(r["score"] == 1.0 for row, r in by_row.items() if row not in failed)

    categories = {row: (r["category"], r["category_source"]) for row, r in by_row.items()}
    assert categories[1] == ("action_antonym", "column:task_type")
    assert categories[2] == ("star", "path")
    assert categories[3] == ("action_antonym", "path")
    assert categories[4] == categories[5] == ("episodic_reasoning", "path")
    assert categories[7] == ("unknown", "unknown")

    # the frame folders were read as videos: the row's fps column, else --frame-fps; mp4 sampling rules
    folder_row, plain_row = recorded[4].video, recorded[5].video
    assert (folder_row.video_fps, plain_row.video_fps) == (6.0, 2.0)
    assert folder_row.total_frames == plain_row.total_frames == 8
    mp4 = load_video(mvbench_root / "MVBench/misc/clip.mp4", MediaConfig(**SMALL).sampling(),
                     MediaConfig(**SMALL).video_budget(28))
    assert recorded[1].video.frame_indices == mp4.frame_indices
    assert plain_row.frame_indices == [0, 2, 5, 7]  # 8 frames at 2 fps: 4 s, capped at 4 frames over 0..7

    summary = json.loads((out / "mvbench" / "results.json").read_text())
    assert (summary["count"], summary["failed"], summary["failed_by"]) == (len(rows), 2, {"row": 2})
    assert summary["category_sources"] == {"column": 1, "path": 4, "unknown": 4}
    # "star" and "unknown" are no MVBench tasks: the overall is over samples, not a mean of made-up tasks
    assert summary["aggregation"] == "sample_mean" and summary["overall"] == pytest.approx(7 / 9)
    assert "categories from: 1 column, 4 path, 4 unknown" in result.output
    assert "2 failed (2 row)" in result.output


def test_strict_stops_on_an_invalid_row_before_the_model_loads(mvbench_root, tmp_path):
    data = tmp_path / "eval_mvbench.json"
    data.write_text(json.dumps(mvbench_rows()))
    cfg = EvalConfig(model="no-such-model", media=MediaConfig(**SMALL), out=str(tmp_path / "run"),
                     decoding=DecodingConfig(max_new_tokens=8),
                     benchmarks=[BenchmarkRun(name="mvbench", data=str(data), media_root=str(mvbench_root))])
    with pytest.raises(EvalError, match="2 invalid rows.*\nrow 6: solution: answer E is not among"):
        run_eval(cfg, strict=True)
    assert not (tmp_path / "run").exists()


def test_a_multiple_choice_only_benchmark_skips_invalid_rows_outside_its_subset(mvbench_root, tmp_path):
    from videor1.eval.data import load_benchmark

    rows = [mc(1, path="./MVBench/misc/clip.mp4"),
            mc(2, problem_type="free-form", options=None, solution="", path="./MVBench/misc/clip.mp4"),
            mc(3, problem_type="multiple choice", options="A. x", path="./MVBench/misc/clip.mp4"),
            "not a row"]
    data = tmp_path / "eval_mmvu.json"
    data.write_text(json.dumps(rows))
    loaded = load_benchmark(BenchmarkRun(name="mmvu", data=str(data), media_root=str(mvbench_root)))
    assert [s.row for s in loaded.samples] == [1]
    # row 2 is free-form (outside MMVU's multiple-choice subset) even though it is invalid
    assert [(bad.row, bad.key) for bad in loaded.invalid] == [(3, "3"), (4, "row:4")]
    assert loaded.invalid[1].reasons == ("row: expected a JSON object, got str",)


# ---------------------------------------------------------------------------------------------------
# Video-R1's eval_bench.py outputs


def test_original_rule_on_hand_computed_cases():
    assert original_reward("<think>x</think><answer> B </answer>", "<answer>B</answer>", "multiple choice") == 1.0
    assert original_reward("<answer>B. right</answer>", "<answer>B</answer>", "multiple choice") == 0.0
    assert original_reward("B", "<answer>B</answer>", "multiple choice") == 1.0  # no tags: the whole output
    assert original_reward("<answer>3.0</answer>", "<answer>3</answer>", "numerical") == 0.0  # decimal rule
    assert original_reward("<answer>1,000</answer>", "<answer>1000.0</answer>", "numerical") == 1.0
    assert original_reward("<answer>2.004</answer>", "<answer>2.0</answer>", "numerical") == 1.0  # 2 decimals
    assert original_reward("<answer>a dog</answer>", "<answer>a dog</answer>", "free-form") == 0.0
    assert original_reward("<answer>3</answer>", "<answer>4</answer>", "regression") == pytest.approx(0.5)
    # 5 % off: exactly on the 0.95 threshold, float32 counts it within (our exact MRA does not)
    assert original_mra(1.05, 1.0) == pytest.approx(1.0)


def original_row(i, problem_type, truth, output, category, reward=None):
    row = good_row(problem_id=f"vsi-{i}", problem_type=problem_type, solution=f"<answer>{truth}</answer>",
                   path=f"./arkitscenes/{i}.mp4", data_source="VSI-Bench", question_type=category)
    if problem_type != "multiple choice":
        row["options"] = None
    row["output"] = output
    row["prediction"] = output
    row["reward"] = original_reward(output, row["solution"], problem_type) if reward is None else reward
    row["correct"] = row["reward"] == 1.0
    return row


def vsi_output_rows():
    """VSI-Bench rows as eval_bench.py leaves them, one per kind of (dis)agreement."""
    return [
        original_row(1, "multiple choice", "B", "<think>t</think><answer>B</answer>", "route_planning"),
        original_row(2, "multiple choice", "B", "<answer>B. right</answer>", "route_planning"),  # reading
        original_row(3, "numerical", "4", "<answer>3</answer>", "object_counting"),  # metric: MRA 0.5 vs 0
        original_row(4, "regression", "2.0", "<answer>2.0</answer>", "object_abs_distance"),  # agree: 1
        original_row(5, "regression", "1", "<answer>1.05</answer>", "room_size_estimation"),  # MRA edge
        original_row(6, "multiple choice", "A", "<answer>error</answer>", "obj_appearance_order"),  # batch error
        original_row(7, "multiple choice", "A", "<answer>A</answer>", "object_rel_direction_easy", reward=0.0),
    ]


def test_rescoring_an_original_output_explains_each_difference(tmp_path):
    rows = vsi_output_rows()
    acc = [r["reward"] for r in rows if r["problem_type"] != "regression"]
    mra = [r["reward"] for r in rows if r["problem_type"] == "regression"]
    final = {"mean_acc": sum(acc) / len(acc), "mean_mra": sum(mra) / len(mra)}
    path = tmp_path / "eval_vsibench_model_greedy_output.json"
    path.write_text(json.dumps({"results": rows, "final_acc": [final]}, indent=2))

    result = runner.invoke(app, ["eval", "score", str(path), "--bench", "vsibench", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    comparison = summary["original"]
    assert comparison["final_acc"] == pytest.approx(final)
    assert comparison["file_headline"] == pytest.approx((final["mean_acc"] + final["mean_mra"]) / 2)
    assert {name: entry["rows"] for name, entry in comparison["reasons"].items()} == {
        "answer_reading": 1, "metric": 1, "mra_precision": 1, "file_reward": 1}
    assert comparison["reasons"]["metric"]["example"]["row"] == 3
    assert comparison["reasons"]["metric"]["example"]["our_score"] == pytest.approx(0.5)
    assert comparison["reasons"]["mra_precision"]["example"]["our_score"] == pytest.approx(0.9)
    assert (comparison["rows_compared"], comparison["rows_differing"]) == (7, 4)
    # ours: VSI-Bench's task mean (direction levels merged), the batch-error row failed
    assert summary["failed_by"] == {"generation": 1}
    tasks = summary["tasks"]
    assert tasks == pytest.approx({"object_counting": 0.5, "object_abs_distance": 1.0, "room_size_estimation": 0.9,
                                   "object_rel_direction": 1.0, "route_planning": 1.0, "obj_appearance_order": 0.0})
    assert summary["overall"] == pytest.approx(sum(tasks.values()) / 6)
    assert "rows scored differently: 4 of 7" in result.output and "| metric:" in result.output

    # the same rows as JSONL score the same, without a final_acc to compare
    lines = tmp_path / "outputs.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = runner.invoke(app, ["eval", "score", str(lines), "--bench", "vsibench"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["overall"] == summary["overall"]
    assert json.loads(again.stdout)["original"]["final_acc"] is None


def test_where_the_metrics_agree_the_files_accuracy_is_reproduced(tmp_path):
    rows = []
    for i in range(8):
        truth = "ABCD"[i % 4]
        answer = truth if i % 3 else "D" if truth != "D" else "A"
        row = original_row(i, "multiple choice", truth, f"<think>t</think><answer>{answer}</answer>", "x")
        row["duration"] = ("short", "medium", "long")[i % 3]
        rows.append(row)
    # a resumed eval_bench.py run: final_acc covers only the rows of its last invocation
    last = [r["reward"] for r in rows[4:]]
    path = tmp_path / "eval_videomme_output.json"
    path.write_text(json.dumps({"results": rows, "final_acc": [{"mean_acc": sum(last) / 4, "mean_mra": 0.0}]}))
    out = tmp_path / "scored"
    result = runner.invoke(app, ["eval", "score", str(path), "--bench", "videomme", "--out", str(out),
                                 "--label", "video-r1-7b"])
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)["original"]
    mean_acc = sum(r["reward"] for r in rows) / len(rows)
    assert comparison["ours"] == pytest.approx(mean_acc) and comparison["rows_differing"] == 0
    assert comparison["file_rewards"]["mean_acc"] == pytest.approx(mean_acc)
    assert comparison["file_rewards"]["mean_mra"] is None and comparison["final_acc"]["mean_mra"] is None
    assert any("last invocation" in note for note in comparison["notes"])

    # a second benchmark into the same folder: one table row with both
    vsi = tmp_path / "eval_vsibench_output.json"
    vsi.write_text(json.dumps({"results": vsi_output_rows()}))
    assert runner.invoke(app, ["eval", "score", str(vsi), "--bench", "vsibench", "--out", str(out)]).exit_code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["videomme", "vsibench"]
    assert len((out / "videomme" / "predictions.jsonl").read_text().splitlines()) == 8
    table = runner.invoke(app, ["eval", "table", str(out)])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith("| video-r1-7b"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] != "–" and cells[7] == f"{100 * mean_acc:.1f}"


def test_a_score_folder_of_one_benchmark_from_before_is_a_table_row(tmp_path):
    folder = tmp_path / "old-score"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"benchmark": "mvbench", "title": "MVBench", "overall": 0.5}))
    table = runner.invoke(app, ["eval", "table", str(folder)])
    assert table.exit_code == 0, table.output
    assert "| old-score | – | – | – | – | 50.0 | – | – |" in table.stdout


def test_unreadable_outputs_are_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": 1, "truth": "B"}\n{"id": 2,')
    result = runner.invoke(app, ["eval", "score", str(path), "--bench", "mvbench"])
    assert result.exit_code == 2 and "row 2: not valid JSON" in result.output
    path.write_text(json.dumps({"id": 1, "truth": "B"}) + "\n")
    result = runner.invoke(app, ["eval", "score", str(path), "--bench", "mvbench"])
    assert result.exit_code == 2 and "row 1: missing field" in result.output
    rows = vsi_output_rows()
    del rows[0]["output"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"results": rows}))
    result = runner.invoke(app, ["eval", "score", str(path), "--bench", "vsibench"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["failed_by"] == {"row": 1, "generation": 1}

