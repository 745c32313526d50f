"""`videor1 eval` end to end on a tiny model: six benchmark files, one table, resume, isolation, rescoring, infer."""

import importlib.util
import json
import shutil

import pytest
import typer
import yaml
from typer.testing import CliRunner

from videor1.config import MediaConfig
from videor1.data.dataset import load_dataset
from videor1.eval import generate as generate_module
from videor1.eval.commands import register
from videor1.eval.config import BenchmarkRun, DecodingConfig, EvalConfig
from videor1.eval.generate import answer_samples, generate_batch
from videor1.eval.runner import PredictionStore, run_eval
from videor1.models.load import load_model_and_processor

app = typer.Typer()
register(app)
runner = CliRunner()

SMALL = {"max_frames": 4, "video_min_pixels": 3136, "video_max_pixels": 3136, "image_min_pixels": 3136,
         "image_max_pixels": 3136}
FLAGS = ["--frames", "4", "--max-pixels", "3136", "--image-max-pixels", "3136", "--max-new-tokens", "8"]

# (category column, value, problem type) per row; numeric rows get a numeric truth
LAYOUT = {
    "vsibench": ("question_type", [("object_counting", "regression"), ("object_abs_distance", "regression"),
                                   ("object_rel_direction_easy", "mc"), ("object_rel_direction_hard", "mc"),
                                   ("route_planning", "mc")]),
    "videommmu": ("track", [("Perception", "mc"), ("Comprehension", "mc"), ("Adaptation", "mc")]),
    "mmvu": ("subject", [("Biology", "mc"), ("Physics", "mc"), ("Physics", "free-form")]),
    "mvbench": ("task_type", [("Action Sequence", "mc"), ("moving_count", "mc"), ("moving_count", "mc")]),
    "tempcompass": ("dim", [("action", "mc"), ("speed", "mc"), ("speed", "free-form")]),
    "videomme": ("duration", [("short", "mc"), ("medium", "mc"), ("long", "mc")]),
}


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory, synth_root):
    """One small file per benchmark in Video-R1's eval schema plus the benchmark's category column."""
    out = tmp_path_factory.mktemp("benchmarks")
    videos = [r for r in json.loads((synth_root / "train.json").read_text()) if r["data_type"] == "video"]
    choices = [r for r in videos if r["problem_type"] == "multiple choice"]
    files = {}
    for key, (column, layout) in LAYOUT.items():
        rows = []
        for i, (category, kind) in enumerate(layout):
            row = {k: v for k, v in (choices[i % len(choices)]).items() if k != "process"}
            row.update(problem_id=f"{key}-{i}", path=videos[i].get("path"), data_source=key, **{column: category})
            if kind == "regression":
                row.update(problem_type="regression", options=[], solution=f"<answer>{i + 2}</answer>")
            elif kind == "free-form":
                row.update(problem_type="free-form", options=[], solution="<answer>it moves</answer>")
            rows.append(row)
        files[key] = out / f"eval_{key}.json"
        files[key].write_text(json.dumps(rows))
    return files


def scripted_output(sample):
    """A well-formed output: the right letter, or a number 5 % off (MRA 0.9); wrong on `duration: long`."""
    if sample.problem_type == "multiple choice":
        wrong = "B" if sample.answer == "A" else "A"
        letter = wrong if sample.extra.get("duration") == "long" else sample.answer
        return f"<think>let me think</think><answer>{letter}</answer>"
    if sample.problem_type == "regression":
        return f"<think>hmm</think><answer>{float(sample.answer) * 1.05:g}</answer>"
    return f"<think>hmm</think><answer>{sample.answer}</answer>"


@pytest.fixture
def scripted(monkeypatch):
    """Replace the model's generations by scripted ones (the model is still loaded); count the calls."""
    calls = []

    def fake(model, processor, samples, media, **decoding):
        calls.append([s.problem_id for s in samples])
        return [scripted_output(s) for s in samples]

    monkeypatch.setattr(generate_module, "generate_texts", fake)
    return calls


def eval_args(model, files, root, out, *names):
    args = ["eval", "--model", str(model), "--media-root", str(root), "--out", str(out), *FLAGS]
    for name in names:
        args += ["--bench", name, "--data", str(files[name])]
    return args


def test_six_benchmarks_one_table_and_rescoring(tiny_models, synth_root, bench_files, scripted, tmp_path):
    out = tmp_path / "run"
    args = eval_args(tiny_models(), bench_files, synth_root, out, *LAYOUT) + ["--batch-size", "2", "--label", "tiny"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    scores = {key: summary["overall"] for key, summary in results["benchmarks"].items()}
    # VSI-Bench: counting 0.9, distance 0.9 (5 % off), direction (1 + 1) / 2, route 1 -> (0.9 + 0.9 + 1 + 1) / 4
    assert scores == pytest.approx({"vsibench": 0.95, "videommmu": 1.0, "mmvu": 1.0, "mvbench": 1.0,
                                    "tempcompass": 1.0, "videomme": 2 / 3})
    assert results["excluded"] == {"vsibench": 0, "videommmu": 0, "mmvu": 1, "mvbench": 0, "tempcompass": 1,
                                   "videomme": 0}
    assert results["benchmarks"]["mvbench"]["tasks"] == {"action_sequence": 1.0, "moving_count": 1.0}
    assert results["benchmarks"]["videomme"]["categories"]["long"]["score"] == 0.0
    table = (out / "results.md").read_text()
    assert "| tiny | 4 | 95.0 | 100.0 | 100.0 | 100.0 | 100.0 | 66.7 |" in table
    assert "| object_rel_direction (levels merged) | accuracy | | 100.0 |" in table
    assert sum(len(batch) for batch in scripted) == 18  # the two non-MC rows were never generated
    for name in ("config.yaml", "eval.log"):
        assert (out / name).stat().st_size > 0
    # `eval score` rebuilds each benchmark's results.json from its predictions alone
    for key in LAYOUT:
        scored = runner.invoke(app, ["eval", "score", str(out / key / "predictions.jsonl"), "--bench", key])
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.stdout) == json.loads((out / key / "results.json").read_text())
    # `eval table` prints a row per run folder
    listed = runner.invoke(app, ["eval", "table", str(out), str(out / "results.json")])
    assert listed.stdout.count("| tiny | 4 | 95.0") == 1  # same label: one row


def test_comma_lists_and_a_rerun_with_other_settings_is_refused(tiny_models, synth_root, bench_files, scripted,
                                                               tmp_path):
    out = tmp_path / "run"
    files = ",".join(str(bench_files[k]) for k in ("mvbench", "videomme"))
    args = ["eval", "--model", str(tiny_models()), "--bench", "mvbench,video-mme", "--data", files,
            "--media-root", str(synth_root), "--out", str(out), *FLAGS]
    assert runner.invoke(app, args).exit_code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["mvbench", "videomme"]
    refused = runner.invoke(app, [*args, "--frames", "6"])
    assert refused.exit_code == 2 and "other settings (media)" in refused.output
    assert runner.invoke(app, [*args, "--frames", "6", "--overwrite"]).exit_code == 0
    bad = runner.invoke(app, ["eval", "--model", "m", "--bench", "vsibench,mmvu", "--data", files.split(",")[0],
                              "--media-root", str(synth_root)])
    assert bad.exit_code == 2 and "one --data per --bench" in bad.output


def test_eval_run_takes_a_yaml_config_with_overrides_and_prints_plain_progress(tiny_models, synth_root,
                                                                               bench_files, scripted, tmp_path):
    """The flags' run as a config file, as `videor1 train` takes one; off a terminal, progress is plain lines."""
    flags_out, config_out = tmp_path / "flags", tmp_path / "config"
    flags = ["eval", "--model", str(tiny_models()), "--bench", "mvbench", "--data", str(bench_files["mvbench"]),
             "--media-root", str(synth_root), "--out", str(flags_out), *FLAGS]
    assert runner.invoke(app, flags).exit_code == 0
    settings = {"model": str(tiny_models()), "out": str(tmp_path / "elsewhere"), "media": SMALL,
                "decoding": {"max_new_tokens": 8},
                "benchmarks": [{"name": "mvbench", "data": str(bench_files["mvbench"]), "media_root": str(synth_root)}]}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(settings))
    result = runner.invoke(app, ["eval", "run", str(path), f"out={config_out}"])
    assert result.exit_code == 0, result.output
    assert "mvbench: 3/3 (100%)" in result.output  # CliRunner is no terminal: a line, not a bar
    assert (json.loads((config_out / "mvbench" / "results.json").read_text())
            == json.loads((flags_out / "mvbench" / "results.json").read_text()))
    bad = runner.invoke(app, ["eval", "run", str(path), "decoding.temprature=0"])
    assert bad.exit_code != 0 and "decoding.temprature" in str(bad.exception or bad.output)


def config(model, files, root, out, name="vsibench", batch_size=2):
    return EvalConfig(
        model=str(model), dtype="float32", media=MediaConfig(**SMALL), batch_size=batch_size, out=str(out),
        decoding=DecodingConfig(max_new_tokens=8),
        benchmarks=[BenchmarkRun(name=name, data=str(files[name]) if isinstance(files, dict) else str(files),
                                 media_root=str(root))],
    )


def test_a_run_killed_midway_resumes_without_redoing_or_losing_anything(tiny_models, synth_root, bench_files,
                                                                        monkeypatch, tmp_path):
    real, calls = generate_module.generate_texts, []

    def dies_on_second_batch(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while generating its second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_module, "generate_texts", dies_on_second_batch)
    cfg = config(tiny_models(), bench_files, synth_root, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg)
    predictions = tmp_path / "run" / "vsibench" / "predictions.jsonl"
    first = predictions.read_text()
    assert [json.loads(line)["id"] for line in first.splitlines()] == ["vsibench-0", "vsibench-1"]

    calls.clear()
    monkeypatch.setattr(generate_module, "generate_texts", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    results = run_eval(cfg)
    assert calls == [2, 1]  # only the 3 unfinished samples, in batches of 2
    text = predictions.read_text()
    assert text.startswith(first)  # finished lines untouched
    ids = [json.loads(line)["id"] for line in text.splitlines()]
    assert ids == [f"vsibench-{i}" for i in range(5)]  # none lost, none twice
    assert results["benchmarks"]["vsibench"]["count"] == 5

    calls.clear()
    run_eval(cfg)
    assert calls == []  # a finished run generates nothing


def test_a_line_cut_by_a_kill_is_redone(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"id": 1, "error": None}) + "\n" + '{"id": 2, "err')
    store = PredictionStore(path)
    assert "1" in store and "2" not in store and store.dropped == 1
    store.append([{"id": 2, "error": "x: missing file"}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1, 2]
    assert PredictionStore(path).drop_failed() == 1
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [1]


def test_one_corrupt_video_fails_alone(tiny_models, synth_root, monkeypatch, tmp_path):
    root = tmp_path / "media"
    shutil.copytree(synth_root / "videos", root / "videos")
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    rows = json.loads((synth_root / "train.json").read_text())
    rows = [r for r in rows if r["data_type"] == "video" and r["problem_type"] == "multiple choice"][:3]
    rows[1] = {**rows[1], "path": "./videos/corrupt.mp4"}
    data = tmp_path / "eval_videomme.json"
    data.write_text(json.dumps(rows))
    real, calls = generate_module.generate_texts, []
    monkeypatch.setattr(generate_module, "generate_texts", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))

    results = run_eval(config(tiny_models(), data, root, tmp_path / "run", name="videomme", batch_size=3))
    lines = (tmp_path / "run" / "videomme" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if r["error"]]
    assert len(failed) == 1 and failed[0]["id"] == rows[1]["problem_id"] and "corrupt.mp4" in failed[0]["error"]
    assert failed[0]["score"] == 0.0
    assert all(r["output"] for r in records if not r["error"])  # the other two were generated…
    assert calls == [2]  # …together, in one batch
    summary = results["benchmarks"]["videomme"]
    assert (summary["count"], summary["failed"]) == (3, 1)


def test_a_failing_batch_is_retried_one_by_one(tiny_models, synth_root, monkeypatch):
    model, processor = load_model_and_processor(tiny_models(), dtype="float32")
    samples = [s for s in load_dataset(synth_root / "train.json", synth_root).samples if s.is_video][:3]
    real, culprit = generate_module.generate_texts, samples[1].problem_id

    def fails_with_culprit(model, processor, batch, media, **decoding):
        if any(s.problem_id == culprit for s in batch):
            raise RuntimeError("CUDA out of memory")
        return real(model, processor, batch, media, **decoding)

    monkeypatch.setattr(generate_module, "generate_texts", fails_with_culprit)
    generations = generate_batch(model, processor, samples, MediaConfig(**SMALL), max_new_tokens=4, temperature=0.0)
    assert [g.sample.problem_id for g in generations] == [s.problem_id for s in samples]
    assert [g.error for g in generations] == [None, "RuntimeError: CUDA out of memory", None]
    assert generations[0].text and generations[2].text


def test_sft_held_out_answers_still_work(tiny_models, synth_root):
    model, processor = load_model_and_processor(tiny_models(), dtype="float32")
    samples = load_dataset(synth_root / "test.json", synth_root).samples[:3]
    answers = answer_samples(model, processor, samples, MediaConfig(**SMALL), batch_size=2, max_new_tokens=4)
    assert [a.sample for a in answers] == samples and all(a.error is None for a in answers)


def test_infer_prints_reasoning_and_answer(tiny_models, synth_root):
    video = next((synth_root / "videos").glob("*.mp4"))
    image = next((synth_root / "images").glob("*.png"))
    base = ["infer", "--model", str(tiny_models()), *FLAGS]
    result = runner.invoke(app, [*base, "--video", str(video), "Which way does it move?\nA. left\nB. right"])
    assert result.exit_code == 0, result.output
    assert "Reasoning:" in result.output and "Answer:" in result.output
    result = runner.invoke(app, [*base, "--image", str(image), "How many shapes?", "--type", "numerical"])
    assert result.exit_code == 0, result.output
    assert "Reasoning:" in result.output and "Answer:" in result.output
    assert runner.invoke(app, [*base, "question"]).exit_code == 2  # neither --video nor --image


def test_infer_reads_the_answer_with_the_evaluation_parser(tiny_models, synth_root, monkeypatch):
    seen = []

    def fake(model, processor, samples, media, **decoding):
        seen.append(samples[0])
        return ["<think>It starts left and ends right.</think><answer>B</answer>"]

    monkeypatch.setattr(generate_module, "generate_texts", fake)
    video = next((synth_root / "videos").glob("*.mp4"))
    result = runner.invoke(app, ["infer", "--model", str(tiny_models()), *FLAGS, "--video", str(video),
                                 "Which way does it move?", "--option", "left", "--option", "right"])
    assert result.exit_code == 0, result.output
    assert "It starts left and ends right." in result.output and "Answer: B. right" in result.output
    assert seen[0].problem_type == "multiple choice" and seen[0].options == ["A. left", "B. right"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed (test_vllm_eval.py)")
def test_vllm_engine_without_vllm_names_the_install(synth_root, bench_files, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, [*eval_args("some/model", bench_files, synth_root, out, "mvbench"), "--engine", "vllm"])
    assert result.exit_code == 2 and 'needs the vllm package, which is not installed: pip install -e ".[vllm]"' in \
        result.output
    assert not out.exists()  # refused before any folder is written
    image = next((synth_root / "images").glob("*.png"))
    result = runner.invoke(app, ["infer", "q", "--model", "some/model", "--image", str(image), "--engine", "vllm"])
    assert result.exit_code == 2 and 'pip install -e ".[vllm]"' in result.output


def test_engine_settings_are_checked_and_older_folders_resume_as_hf(tiny_models, synth_root, bench_files, scripted,
                                                                     tmp_path):
    out = tmp_path / "run"
    args = eval_args(tiny_models(), bench_files, synth_root, out, "mvbench")
    for extra, message in ((["--engine", "tgi"], "engine: Input should be 'hf' or 'vllm'"),
                           (["--engine", "vllm", "--device", "cpu"], "device: for the hf engine only"),
                           (["--engine", "vllm", "--repetition-penalty", "1.1"], "repetition_penalty: for the hf")):
        refused = runner.invoke(app, [*args, *extra])
        assert refused.exit_code == 2 and message in refused.output, refused.output
    assert runner.invoke(app, args).exit_code == 0
    saved = out / "mvbench" / "config.yaml"
    settings = yaml.safe_load(saved.read_text())
    assert settings["engine"] == "hf"
    del settings["engine"]  # a folder written before the engine was a setting: its predictions are the HF engine's
    saved.write_text(yaml.safe_dump(settings, sort_keys=False))
    assert runner.invoke(app, args).exit_code == 0
    assert sum(len(batch) for batch in scripted) == 3  # the rerun resumed: nothing generated again
