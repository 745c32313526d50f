"""Progress a user can read: plain lines off a terminal (cadence by steps and by time), bars on one."""

import io
import re
from types import SimpleNamespace

from rich.console import Console

from videor1.progress import PlainLines, count_progress, hms, step_progress
from videor1.recipe import Recipe
from videor1.runlog import RunLog


class FakeClock:
    """A clock the test moves by hand, so the 30 s rule is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=60), buffer


def lines_of(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line]


def steps_of(lines: list[str]) -> list[int]:
    return [int(re.match(r"step (\d+)/", line).group(1)) for line in lines]


def run_steps(total: int, *, seconds: float = 0.09, start: int = 0, slow: dict[int, float] | None = None, **kwargs):
    """Drive step_progress off a terminal; returns (stderr lines, logged lines)."""
    console, buffer = plain_console()
    clock, logged = FakeClock(), []
    with step_progress(total, start, console=console, terminal=False, clock=clock, log=logged.append,
                       **kwargs) as update:
        for step in range(start + 1, total + 1):
            clock.now += (slow or {}).get(step, seconds)
            update(step, {"reward": 1.5234, "accuracy": 0.4}, seconds)
    return lines_of(buffer), logged


def test_plain_line_says_step_percent_metrics_rate_elapsed_and_eta():
    lines, _ = run_steps(750)
    line = next(line for line in lines if line.startswith("step 112/"))
    assert line == "step 112/750 (14%) · reward 1.52 · accuracy 0.4 · 0.09 s/step · elapsed 0:00:10 · ETA 0:00:57"
    # the last line has nothing left to estimate
    assert lines[-1] == "step 750/750 (100%) · reward 1.52 · accuracy 0.4 · 0.09 s/step · elapsed 0:01:07"


def test_cadence_by_step_count_includes_first_and_last_step():
    lines, _ = run_steps(750)
    steps = steps_of(lines)
    assert steps[0] == 1 and steps[-1] == 750
    assert all(b - a == 750 // 20 for a, b in zip(steps[:-2], steps[1:-1], strict=True))
    assert 20 <= len(lines) <= 50
    # a long line is never wrapped by the console width
    assert all(line.startswith("step ") for line in lines)


def test_short_run_prints_every_step():
    assert steps_of(run_steps(3)[0]) == [1, 2, 3]


def test_thirty_seconds_of_silence_forces_a_line():
    # 10 s steps: the 30 s rule fires every 3 steps, long before the 37-step cadence
    steps = steps_of(run_steps(750, seconds=10.0)[0])
    assert steps[:4] == [1, 4, 7, 10]
    # one slow step is reported as soon as it ends
    steps = steps_of(run_steps(750, slow={50: 45.0})[0])
    assert 50 in steps and 38 in steps and 87 in steps


def test_eta_ignores_a_slow_first_step():
    lines, _ = run_steps(100, slow={1: 60.0}, seconds=1.0)
    first, second = lines[0], lines[1]
    assert "60.0 s/step" in first and "ETA 1:39:00" in first  # all it knows is the first step
    assert second.startswith("step 6/") and "1.00 s/step" in second and "ETA 0:01:34" in second


def test_resumed_run_counts_from_its_checkpoint():
    steps = steps_of(run_steps(300, start=200)[0])
    assert steps[0] == 201 and steps[-1] == 300 and steps[1] == 206  # (300 - 200) // 20 steps apart


def test_every_plain_line_also_reaches_the_log_sink():
    lines, logged = run_steps(750)
    assert logged == lines


def test_log_gets_lines_even_when_a_terminal_shows_the_bar():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    logged = []
    with step_progress(40, console=console, terminal=True, log=logged.append, label="loss") as update:
        for step in range(1, 41):
            update(step, 0.5, 0.1)
    assert steps_of(logged) == [1, *range(3, 40, 2), 40] and "loss 0.5" in logged[0]


def test_disabled_progress_is_silent():
    console, buffer = plain_console()
    logged = []
    with step_progress(5, enabled=False, console=console, terminal=False, log=logged.append) as update:
        update(1, 1.0, 0.1)
    assert not buffer.getvalue() and not logged


def test_terminal_draws_the_rich_bar_with_labelled_times():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    with step_progress(5, console=console, terminal=True, label="reward") as update:
        for step in range(1, 6):
            update(step, 1.25, 0.5)
    out = buffer.getvalue()
    assert "━" in out and "5/5" in out and "reward 1.25" in out and "0.50 s/step" in out
    assert "elapsed 0:00:0" in out and "· left" in out
    assert "step 5/5 (100%)" not in out  # no plain lines on a terminal


def test_recipe_progress_writes_train_log(tmp_path, capsys):
    log = RunLog(tmp_path, tensorboard=False)
    run = SimpleNamespace(cfg=SimpleNamespace(max_steps=3), step=0, is_main=True, log=log)
    with Recipe.progress(run, "loss") as update:  # pytest's stderr is no terminal: plain lines
        for step in (1, 2, 3):
            update(step, {"loss": 2.5}, 0.1)
    log.close()
    text = (tmp_path / "train.log").read_text()
    assert [int(n) for n in re.findall(r"INFO step (\d+)/3 \(\d+%\) · loss 2.5 · ", text)] == [1, 2, 3]
    assert "step 3/3 (100%) · loss 2.5" in capsys.readouterr().err


def test_count_progress_off_a_terminal_every_five_percent_and_thirty_seconds():
    console, buffer = plain_console()
    clock, logged = FakeClock(), []
    with count_progress("validating", console, terminal=False, clock=clock, log=logged.append) as update:
        update(0, 1000)
        for done in range(1, 1001):
            clock.now += 0.5 if done != 520 else 31.0
            update(done, 1000)
            update(done, 1000)  # a repeated update adds no line
    lines = lines_of(buffer)
    counts = [int(re.match(r"validating: (\d+)/1000", line).group(1)) for line in lines]
    assert counts[:3] == [0, 50, 100] and counts[-1] == 1000
    assert 20 <= len(lines) <= 50 and logged == lines
    assert lines[1] == "validating: 50/1000 (5%) · 0.50 s/item · elapsed 0:00:25 · ETA 0:07:55"
    assert lines[-1].startswith("validating: 1000/1000 (100%) · ") and "ETA" not in lines[-1]
    # the 30 s rule: a slow item is reported when it ends, and the 5% cadence counts on from there
    assert {500, 520, 570} <= set(counts) and 550 not in counts


def test_count_progress_fast_items_read_per_second_and_unknown_total():
    console, buffer = plain_console()
    clock = FakeClock()
    with count_progress("scanning", console, terminal=False, clock=clock) as update:
        for done in range(1, 101):
            clock.now += 0.002
            update(done, 100)
    assert "500 items/s" in lines_of(buffer)[1]
    console, buffer = plain_console()
    with count_progress("scanning", console, terminal=False, clock=clock) as update:
        update(0, 0)
    assert lines_of(buffer) == ["scanning: 0 · elapsed 0:00:00"]


def test_count_progress_terminal_bar_smoke():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    with count_progress("annotating", console, terminal=True) as update:
        update(3, 4)
        update(4, 4)
    out = buffer.getvalue()
    assert "annotating" in out and "4/4" in out and "elapsed" in out and "left" in out


def test_plain_lines_helpers():
    assert hms(0) == "0:00:00" and hms(3725.9) == "1:02:05" and hms(float("nan")) == "-:--:--"
    lines = PlainLines(750, clock=FakeClock())
    assert lines.every == 37 and lines.head(120) == "120/750 (16%)"
