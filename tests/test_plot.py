"""Plots a reader understands, checked on the matplotlib figures rather than on pixels."""

import json
from pathlib import Path

import pytest

from videor1.plot import CURVES, fitting_window, no_signal_note, plot_run, run_figures


def write_run(folder: Path, steps: int, *, no_signal: float = 0.2) -> Path:
    """A small metrics.jsonl like an RL run's; `no_signal` is each step's all-correct + all-wrong share."""
    folder.mkdir(parents=True)
    rows = [
        {"step": i, "reward/accuracy": (i % 5) / 5, "reward/total": 1 + (i % 5) / 5, "temporal/rate": None,
         "rollout/length": 120.0 + i, "loss/kl": 0.001 * i, "perf/step_seconds": 0.4,
         "groups/all_correct": no_signal / 2, "groups/all_wrong": no_signal / 2}
        for i in range(1, steps + 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def visible_ticks(fig) -> list[str]:
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high]


@pytest.mark.parametrize("steps", [1, 3, 200])
def test_steps_are_whole_numbers_and_axes_say_their_unit(tmp_path, steps):
    figures, _ = run_figures(write_run(tmp_path / "my-run", steps))
    assert {curve.key for curve, _ in figures} == {
        "reward/accuracy", "reward/total", "rollout/length", "loss/kl", "perf/step_seconds"}
    for curve, fig in figures:
        ticks = visible_ticks(fig)
        assert ticks and all(t.replace("−", "-").lstrip("-").isdigit() for t in ticks), (curve.key, ticks)
        ax = fig.axes[0]
        assert ax.get_ylabel() == curve.ylabel and ax.get_xlabel() == "step"
        assert "my-run" in ax.get_title()


def test_units_of_the_plotted_metrics():
    labels = {curve.key: curve.ylabel for curve in CURVES}
    assert labels["loss/kl"] == "KL (nats/token)" and labels["perf/step_seconds"] == "seconds per step"
    assert "tokens" in labels["rollout/length"] and "mean per completion" in labels["reward/accuracy"]
    assert all(curve.ylabel for curve in CURVES)


def test_short_run_draws_the_raw_curve_without_a_smoothing_legend(tmp_path):
    figures, _ = run_figures(write_run(tmp_path / "short", 3))
    for _, fig in figures:
        ax = fig.axes[0]
        assert ax.get_legend() is None and len(ax.get_lines()) == 1


def test_long_run_smooths_with_a_labelled_window(tmp_path):
    figures, _ = run_figures(write_run(tmp_path / "long", 200), window=10)
    for _, fig in figures:
        ax = fig.axes[0]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["per step", "mean of last 10 steps"]
    assert fitting_window(10, 3) == 1 and fitting_window(10, 50) == 5 and fitting_window(10, 200) == 10


def test_no_signal_note_on_the_figures_when_most_groups_had_one_outcome(tmp_path):
    figures, note = run_figures(write_run(tmp_path / "flat", 200, no_signal=0.62))
    assert note == "most groups had no reward spread (62% all-correct or all-wrong): little learning signal"
    for _, fig in figures:
        assert [t.get_text() for t in fig.texts] == [note]


def test_no_note_when_groups_had_reward_spread(tmp_path):
    figures, note = run_figures(write_run(tmp_path / "fine", 200, no_signal=0.3))
    assert note is None and all(not fig.texts for _, fig in figures)
    # SFT runs have no groups at all
    assert no_signal_note([{"step": 1, "loss/sft": 2.0}]) is None


def test_plot_run_writes_pngs_and_warns(tmp_path, capsys):
    run = write_run(tmp_path / "flat", 30, no_signal=0.9)
    warnings = []
    paths = plot_run(run, warn=warnings.append)
    assert sorted(p.name for p in paths) == sorted(
        ["reward_accuracy.png", "reward_total.png", "rollout_length.png", "loss_kl.png", "perf_step_seconds.png"])
    assert all(p.stat().st_size > 0 for p in paths)
    assert len(warnings) == 1 and "90% all-correct or all-wrong" in warnings[0]
    plot_run(run)  # the default warning goes to stderr, where `videor1 plot` shows it
    assert "warning: flat: most groups had no reward spread" in capsys.readouterr().err
