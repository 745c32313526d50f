"""The demo pipeline end to end at toy size (mechanics, not learning: README reports the measured run)."""

import json

from typer.testing import CliRunner

from videor1.cli import app
from videor1.demo import DemoSettings, run_demo


def test_demo_pipeline_writes_results_table_and_plots(tmp_path):
    settings = DemoSettings(n_train=16, n_test=8, sft_steps=2, sft_batch_size=4, rl_steps=2, rl_prompts=2,
                            rl_generations=2, max_new_tokens=8, eval_batch_size=8)
    lines = []
    results = run_demo(tmp_path, seed=0, settings=settings, say=lines.append)
    assert [line[:5] for line in lines if line.startswith("[")] == ["[1/7]", "[2/7]", "[3/7]", "[4/7]", "[5/7]",
                                                                     "[6/7]", "[7/7]"]
    assert list(results["stages"]) == ["untrained", "SFT", "SFT+T-GRPO", "SFT+GRPO"]
    table = (tmp_path / "results.md").read_text()
    for row in ("all questions", "media: video", "media: image", "video, order-dependent", "format reward"):
        assert row in table
    assert json.loads((tmp_path / "results.json").read_text())["table"] == table.strip()
    for run in ("tgrpo", "grpo"):
        assert (tmp_path / run / "plots" / "reward_accuracy.png").exists()
        assert (tmp_path / run / "plots" / "loss_kl.png").exists()
    assert (tmp_path / "tgrpo" / "plots" / "temporal_rate.png").exists()
    assert len((tmp_path / "answers-SFT.jsonl").read_text().splitlines()) == 8


def test_plot_command(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": i, "reward/accuracy": i / 10, "temporal/rate": None, "loss/kl": 0.01 * i} for i in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "plots" / "reward_accuracy.png").exists() and not (run / "plots" / "temporal_rate.png").exists()
    assert CliRunner().invoke(app, ["plot", str(tmp_path / "nothing")]).exit_code == 2
