"""`videor1 study temporal`: the study's statistics on hand numbers, and a whole (tiny) study end to end."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from videor1.cli import app
from videor1.study import RunResult, results_table, spread, summarize, training_stats


def test_spread_is_mean_sample_std_min_and_max():
    # [0.5, 0.6, 0.7]: mean 0.6, sample variance (0.01 + 0 + 0.01) / 2 = 0.01, std 0.1
    assert spread([0.5, 0.6, 0.7]) == pytest.approx({"mean": 0.6, "std": 0.1, "min": 0.5, "max": 0.7})
    assert spread([0.4]) == {"mean": 0.4, "std": 0.0, "min": 0.4, "max": 0.4}


def test_summary_and_table_per_method_and_split():
    runs = [RunResult("GRPO", s, "", {"in-distribution": a, "order-only": b}, {})
            for s, (a, b) in enumerate([(0.9, 0.5), (0.8, 0.6)])]
    runs.append(RunResult("T-GRPO", 0, "", {"in-distribution": 0.7, "order-only": 0.7}, {}))
    summary = summarize(runs, ["GRPO", "T-GRPO", "T-GRPO joint"])  # a method without runs is left out
    assert list(summary) == ["GRPO", "T-GRPO"]
    assert summary["GRPO"]["in-distribution"] == pytest.approx(
        {"mean": 0.85, "std": 0.0707107, "min": 0.8, "max": 0.9}, abs=1e-6)
    table = results_table(summary, {"in-distribution": 0.75, "order-only": 0.5}, seeds=2)
    assert "| SFT (start of every run) | 0.750 | 0.500 |" in table
    assert "| GRPO (2 seeds) | 0.850 ± 0.071 (0.800–0.900) | 0.550 ± 0.071 (0.500–0.600) |" in table


def test_training_stats_average_what_was_logged():
    rows = [{"temporal/p": 0.5, "temporal/p_shuffled": 0.25, "reward/accuracy": 0.5, "advantage/abs_mean": 1.0,
             "groups/all_correct": 0.25, "groups/all_wrong": 0.0},
            {"temporal/p": None, "temporal/p_shuffled": None, "reward/accuracy": 1.0, "advantage/abs_mean": 0.5,
             "groups/all_correct": 1.0, "groups/all_wrong": 0.5}]
    stats = training_stats(rows, window=1)
    assert stats["p"] == 0.5 and stats["p_shuffled"] == 0.25 and stats["p, last steps"] is None
    assert stats["accuracy reward, last steps"] == 1.0 and stats["|advantage|"] == 0.75 and stats["KL"] is None
    assert stats["groups all right"] == 0.625 and stats["groups all wrong"] == 0.25


@pytest.mark.slow
def test_a_tiny_study_runs_end_to_end_from_the_command_line(tmp_path):
    out = tmp_path / "study"
    result = CliRunner().invoke(app, [
        "study", "temporal", "--out", str(out), "--seeds", "0,1", "--methods", "GRPO,T-GRPO joint",
        "--rl-steps", "2", "--sft-steps", "4", "--n-test", "8", "--cue", "colour", "--rl-lr", "5e-5",
    ])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [
        ("GRPO", 0), ("GRPO", 1), ("T-GRPO joint", 0), ("T-GRPO joint", 1)]
    for run in results["runs"]:
        assert set(run["accuracy"]) == {"in-distribution", "order-only"}
        assert all(0.0 <= value <= 1.0 for value in run["accuracy"].values())
        assert (tmp_path / "study" / run["run_dir"].split("/")[-1] / "checkpoint-2").is_dir()
    grpo = [r["accuracy"]["order-only"] for r in results["runs"] if r["method"] == "GRPO"]
    assert results["summary"]["GRPO"]["order-only"]["mean"] == pytest.approx(sum(grpo) / 2)
    joint = [r["training"] for r in results["runs"] if r["method"] == "T-GRPO joint"]
    assert all(stats["p_shuffled"] is not None for stats in joint)  # the shuffled group was sampled
    assert all(r["training"]["p_shuffled"] is None for r in results["runs"] if r["method"] == "GRPO")
    assert "| GRPO (2 seeds) |" in (out / "results.md").read_text()
    assert (out / "study.png").stat().st_size > 0
    assert results["data"]["splits"]["test_order_only"]["rows"] == 8
    assert results["data"]["cue"] == "colour" and results["settings"]["cue"] == "colour"
    for run in results["runs"]:
        assert yaml.safe_load((Path(run["run_dir"]) / "config.yaml").read_text())["optim"]["lr"] == 5e-5


def test_the_study_refuses_an_unknown_cue(tmp_path):
    result = CliRunner().invoke(app, ["study", "temporal", "--out", str(tmp_path / "s"), "--cue", "shape"])
    assert result.exit_code == 2 and "--cue must be one of position, colour, got 'shape'" in result.output
    assert not (tmp_path / "s").exists()
