"""The demo pipeline end to end at toy size (mechanics, not learning: README reports the measured run)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from videor1.cli import app
from videor1.data.schema import Sample
from videor1.demo import DemoSettings, chance, rl_summary, rl_table, run_demo


@pytest.mark.slow
def test_demo_pipeline_writes_results_table_and_plots(tmp_path):
    settings = DemoSettings(n_train=16, n_rl=8, n_test=8, sft_steps=2, sft_batch_size=4, rl_steps=2, rl_prompts=2,
                            rl_generations=2, max_new_tokens=8, eval_batch_size=8)
    lines = []
    results = run_demo(tmp_path, seed=0, settings=settings, say=lines.append)
    assert [line[:5] for line in lines if line.startswith("[")] == ["[1/7]", "[2/7]", "[3/7]", "[4/7]", "[5/7]",
                                                                     "[6/7]", "[7/7]"]
    assert list(results["stages"]) == ["untrained", "SFT", "SFT+T-GRPO", "SFT+GRPO"]
    table = results["table"]
    for row in ("all questions", "media: video", "media: image", "video, order-dependent", "format reward",
                "task: motion_direction", "task: count_shapes"):
        assert row in table
    assert (tmp_path / "results.md").read_text() == table + "\n\n" + results["rl_table"] + "\n"
    assert json.loads((tmp_path / "results.json").read_text())["rl_table"] == results["rl_table"]
    # T-GRPO logs p and p~ every step; plain GRPO scores no shuffled group
    assert results["rl"]["T-GRPO"]["p (ordered)"] is not None and results["rl"]["GRPO"]["p (ordered)"] is None
    for run in ("tgrpo", "grpo"):
        assert (tmp_path / run / "plots" / "reward_accuracy.png").exists()
        assert (tmp_path / run / "plots" / "loss_kl.png").exists()
    assert (tmp_path / "tgrpo" / "plots" / "temporal_rate.png").exists()
    assert len((tmp_path / "answers-SFT.jsonl").read_text().splitlines()) == 8
    # SFT and RL train on disjoint questions; RL's rows carry answers only, like Video-R1-260k
    sft = json.loads((tmp_path / "data" / "sft.json").read_text())
    rl = json.loads((tmp_path / "data" / "rl.json").read_text())
    assert (len(sft), len(rl)) == (16, 8)
    assert not {r["problem_id"] for r in sft} & {r["problem_id"] for r in rl}
    assert all(r["process"] for r in sft) and not any(r["process"] for r in rl)
    config = (tmp_path / "tgrpo" / "config.yaml").read_text()
    assert "rl.json" in config and "sft.json" in (tmp_path / "sft" / "config.yaml").read_text()


def test_plot_command(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": i, "reward/accuracy": i / 10, "temporal/rate": None, "loss/kl": 0.01 * i} for i in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(app, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "plots" / "reward_accuracy.png").exists() and not (run / "plots" / "temporal_rate.png").exists()
    assert CliRunner().invoke(app, ["plot", str(tmp_path / "nothing")]).exit_code == 2


def test_rl_summary_means_first_and_last_steps_and_skips_missing_values(tmp_path):
    rows = [{"step": i, "reward/accuracy": a, "temporal/rate": r, "temporal/p": 0.5, "temporal/p_shuffled": None,
             "loss/kl": 0.1} for i, (a, r) in enumerate([(0.0, 1.0), (0.2, None), (0.6, 0.0), (1.0, 0.5)], start=1)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = rl_summary(tmp_path, window=2)
    assert summary["accuracy reward, first steps"] == 0.1 and summary["accuracy reward, last steps"] == 0.8
    assert summary["temporal-reward rate"] == 0.5 and summary["p (ordered)"] == 0.5
    assert summary["p~ (shuffled)"] is None
    assert "| p~ (shuffled) | - |" in rl_table({"run": summary})


def test_chance_is_the_uniform_guess_per_multiple_choice_group():
    def sample(task, options):
        kind = "multiple choice" if options else "numerical"
        return Sample(problem_id=0, problem="q", data_type="video", problem_type=kind, options=options,
                      solution="<answer>A</answer>", path="v.mp4", media_path=Path("v.mp4"), extra={"task": task})
    samples = [sample("motion", ["A. l", "B. r", "C. u", "D. d"]), sample("size", ["A. g", "B. s"]), sample("n", [])]
    assert chance(samples) == {"type: multiple choice": 0.375, "task: motion": 0.25, "task: size": 0.5}
