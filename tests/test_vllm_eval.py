"""`videor1 eval --engine vllm` end to end on a tiny model, against `--engine hf` on the same rows (-m vllm).

Greedy decoding (--temperature 0): the engine's greedy completions equal the HF path's (tests/test_vllm.py), so
the two runs' predictions must be identical, row for row. One row's prompt is longer than --max-model-len:
vLLM refuses the whole batch, the batch is retried one by one, and only that row fails.
The vLLM run is the real command in a child process: building an engine reconfigures logging, which closes
every handler's stream, pytest's captured stderr included when CliRunner has swapped sys.stderr out.
"""

import json
import subprocess
import sys

import pytest

vllm = pytest.importorskip("vllm")

import typer  # noqa: E402
import yaml  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from videor1.eval.commands import register  # noqa: E402

pytestmark = pytest.mark.vllm

app = typer.Typer()
register(app)
runner = CliRunner()

FLAGS = ["--frames", "4", "--max-pixels", "3136", "--image-max-pixels", "3136", "--max-new-tokens", "8",
         "--temperature", "0", "--dtype", "float32"]  # eval's and infer's alike
VLLM_FLAGS = ["--engine", "vllm", "--enforce-eager", "--max-model-len", "512"]
LONG = "mvbench-long"


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory, synth_root):
    """An MVBench-format file: five video rows, an image row and one row whose prompt outgrows 512 tokens."""
    rows = json.loads((synth_root / "train.json").read_text())
    videos = [r for r in rows if r["data_type"] == "video" and r["problem_type"] == "multiple choice"][:5]
    image = next(r for r in rows if r["data_type"] == "image" and r["problem_type"] == "multiple choice")
    long = {**videos[0], "problem": videos[0]["problem"] + " and then" * 300}
    bench = []
    # the long row shares the first batch of three (--batch-size 3) with two good ones, which must not fail with it
    for i, row in enumerate([videos[0], long, *videos[1:], image]):
        row = {k: v for k, v in row.items() if k != "process"}
        row.update(problem_id=LONG if i == 1 else f"mvbench-{i}", task_type="Action Sequence")
        bench.append(row)
    path = tmp_path_factory.mktemp("bench") / "eval_mvbench.json"
    path.write_text(json.dumps(bench))
    return path, len(bench)


def eval_args(model, bench, root, out, *extra):
    return ["eval", "--model", str(model), "--bench", "mvbench", "--data", str(bench), "--media-root", str(root),
            "--out", str(out), "--batch-size", "3", *FLAGS, *extra]


def predictions(out):
    lines = (out / "mvbench" / "predictions.jsonl").read_text().splitlines()
    return {record["id"]: record for record in map(json.loads, lines)}


def test_vllm_eval_predictions_equal_the_hf_engine(tiny_models, synth_root, bench_file, tmp_path):
    model, (bench, count) = tiny_models(), bench_file
    hf_out, vllm_out = tmp_path / "hf", tmp_path / "vllm"
    assert (result := runner.invoke(app, eval_args(model, bench, synth_root, hf_out))).exit_code == 0, result.output
    command = [sys.executable, "-m", "videor1.cli", *eval_args(model, bench, synth_root, vllm_out, *VLLM_FLAGS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{count} samples, 1 failed (1 generation)" in done.stdout, done.stdout
    hf, vl = predictions(hf_out), predictions(vllm_out)
    assert len(hf) == len(vl) == count
    assert vl[LONG]["error_kind"] == "generation" and "maximum context length is 512" in vl[LONG]["error"]
    assert all(record["error"] is None for key, record in vl.items() if key != LONG)
    assert all(record["error"] is None for record in hf.values())
    assert {k: r["output"] for k, r in vl.items() if k != LONG} == {k: r["output"] for k, r in hf.items() if k != LONG}
    assert any(r["output"] for r in vl.values())  # not trivially equal: the tiny model writes something
    assert yaml.safe_load((vllm_out / "mvbench" / "config.yaml").read_text())["engine"] == "vllm"
    assert "mvbench: overall" in (vllm_out / "eval.log").read_text()  # the run's log outlived vLLM's logging set-up
    # the engine is a resume setting: vLLM predictions are not added to the HF run's folder
    refused = runner.invoke(app, eval_args(model, bench, synth_root, hf_out, *VLLM_FLAGS))
    assert refused.exit_code == 2 and "other settings (engine)" in refused.output


def test_vllm_infer_answers_as_the_hf_engine(tiny_models, synth_root):
    args = ["infer", "What color is the shape?", "--model", str(tiny_models()), "--image",
            str(synth_root / "images" / "000000.png"), "--option", "red", "--option", "green", *FLAGS]
    hf = runner.invoke(app, args)
    assert hf.exit_code == 0, hf.output
    done = subprocess.run([sys.executable, "-m", "videor1.cli", *args, "--engine", "vllm", "--enforce-eager"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # vLLM logs to stdout too: compare from the answer's first line on
    assert done.stdout[done.stdout.index("Reasoning:"):] == hf.stdout[hf.stdout.index("Reasoning:"):]
