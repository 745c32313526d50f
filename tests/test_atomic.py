"""A kill during a rewrite never loses the file: every rewrite goes through a temporary file and a rename.

Each test stops a rewrite at the worst moment (the data written, the rename not yet done, or halfway
through the data) the way a kill would, and checks the original is still there byte for byte with no
temporary file left behind; then that the next start copes with what a kill mid-append leaves.
"""

import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from videor1 import atomic
from videor1.annotate.store import AnnotationStore, drop_partial_line
from videor1.atomic import atomic_write_bytes, atomic_write_lines, atomic_write_text
from videor1.eval.benchmarks import get_benchmark
from videor1.eval.data import EvalError
from videor1.eval.rescore import rescore_file, write_rescored
from videor1.eval.runner import PredictionStore
from videor1.runlog import RunLog, checkpoints, latest_checkpoint, save_checkpoint, truncate_after_step


def killed(monkeypatch, exc=KeyboardInterrupt, name=None):
    """Make renames (onto `name`, if given) fail like a kill between the write and the rename."""
    real = os.replace

    def replace(src, dst):
        if name is None or Path(dst).name == name:
            raise exc()
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)


@contextmanager
def writes_stop_at(size):
    """Every write past `size` bytes of a file fails (EFBIG), the way a kill stops a rewrite halfway through."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed test run
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def big_jsonl(path, count=20_000, partial=""):
    """A few MB of predictions-like lines, optionally ending in a line cut by a kill."""
    lines = [json.dumps({"id": i, "error": "e" if i % 7 == 0 else None, "output": "x" * 200}) for i in range(count)]
    path.write_text("".join(line + "\n" for line in lines) + partial, encoding="utf-8")
    return path.read_bytes()


def only(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ---- the helpers ---------------------------------------------------------------------------------------------
def test_atomic_writes_replace_the_file_and_keep_its_permissions(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓" and path.stat().st_mode & 0o777 == 0o640
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_lines(tmp_path / "c.jsonl", (f"{i}\n" for i in range(3)))
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01" and (tmp_path / "c.jsonl").read_text() == "0\n1\n2\n"
    assert only(tmp_path) == ["a.txt", "b.bin", "c.jsonl"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_a_rewrite_stopped_before_the_rename_leaves_the_original_intact(tmp_path, monkeypatch, exc):
    path = tmp_path / "predictions.jsonl"
    before = big_jsonl(path)
    killed(monkeypatch, exc)
    with pytest.raises(exc):
        atomic_write_lines(path, ["short\n"])
    with pytest.raises(exc):
        atomic_write_bytes(path, b"")
    assert path.read_bytes() == before and only(tmp_path) == ["predictions.jsonl"]


def test_a_rewrite_stopped_halfway_through_the_data_leaves_the_original_intact(tmp_path):
    path = tmp_path / "predictions.jsonl"
    before = big_jsonl(path)

    def lines():
        yield from (f"{i}\n" for i in range(1000))
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write_lines(path, lines())
    assert path.read_bytes() == before and only(tmp_path) == ["predictions.jsonl"]


def test_a_failed_fsync_leaves_the_original_intact(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and only(tmp_path) == ["a.txt"]


# ---- eval predictions ------------------------------------------------------------------------------------------
def test_predictions_with_a_cut_line_survive_a_kill_during_the_cleanup(tmp_path, monkeypatch):
    path = tmp_path / "predictions.jsonl"
    before = big_jsonl(path, partial='{"id": 20000, "err')
    killed(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        PredictionStore(path)
    assert path.read_bytes() == before and only(tmp_path) == ["predictions.jsonl"]
    monkeypatch.undo()
    store = PredictionStore(path)  # the next start: every complete line kept, the cut one redone
    assert len(store.records) == 20_000 and store.dropped == 1 and "20000" not in store
    assert path.read_bytes() == before[: before.rfind(b"\n") + 1]
    killed(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        store.drop_failed()
    assert path.read_bytes() == before[: before.rfind(b"\n") + 1] and only(tmp_path) == ["predictions.jsonl"]
    monkeypatch.undo()
    assert PredictionStore(path).drop_failed() == len(range(0, 20_000, 7))
    assert len(PredictionStore(path).records) == 20_000 - len(range(0, 20_000, 7))


def test_every_rewrite_stopped_halfway_through_its_data_loses_nothing(tmp_path):
    """The reported failure: a rewrite truncated its file first, so a kill midway left it cut (or empty)."""
    cut = tmp_path / "predictions.jsonl"
    before = big_jsonl(cut, partial='{"id": 20000, "err')
    failed = tmp_path / "failed" / "predictions.jsonl"
    failed.parent.mkdir()
    big_jsonl(failed)
    store = PredictionStore(failed)
    metrics = metrics_file(tmp_path / "metrics.jsonl")
    kept = tmp_path / "cot.kept.jsonl"
    big_jsonl(kept, partial='{"problem_id": 20000, "pro')
    files = {path: path.read_bytes() for path in (cut, failed, metrics, kept)}
    with writes_stop_at(len(before) // 2):
        for rewrite in (lambda: PredictionStore(cut), store.drop_failed, lambda: drop_partial_line(kept)):
            with pytest.raises(OSError):
                rewrite()
    with writes_stop_at(10), pytest.raises(OSError):
        truncate_after_step(metrics, 3)
    assert {path: path.read_bytes() for path in files} == files
    assert only(tmp_path) == ["cot.kept.jsonl", "failed", "metrics.jsonl", "predictions.jsonl"]
    assert only(failed.parent) == ["predictions.jsonl"]


@pytest.mark.parametrize("line", ['{"row": 3, "error": null}', "[1, 2]", "7"])
def test_a_prediction_line_without_an_id_is_a_one_line_error(tmp_path, line):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": 1}\n' + line + '\n{"id": 2}\n')
    with pytest.raises(EvalError) as info:
        PredictionStore(path)
    assert str(info.value) == f"{path}:2: prediction line without an id; fix or remove the line"
    assert path.read_text() == '{"id": 1}\n' + line + '\n{"id": 2}\n'


def test_rescored_predictions_survive_a_kill_during_their_rewrite(tmp_path, monkeypatch):
    record = {"id": 1, "row": 0, "path": "a.mp4", "data_type": "video", "problem_type": "multiple choice",
              "category": "Action", "category_source": "column", "options": ["A. a", "B. b"], "truth": "A",
              "output": "<answer>A</answer>", "error": None, "error_kind": None}
    source = tmp_path / "mine.jsonl"
    source.write_text(json.dumps(record) + "\n")
    out = tmp_path / "scored"
    write_rescored(out, source, rescore_file(source, get_benchmark("mvbench")))
    before = (out / "mvbench" / "predictions.jsonl").read_bytes()
    source.write_text(json.dumps({**record, "output": "<answer>B</answer>"}) + "\n")
    killed(monkeypatch, name="predictions.jsonl")
    with pytest.raises(KeyboardInterrupt):
        write_rescored(out, source, rescore_file(source, get_benchmark("mvbench")))
    assert (out / "mvbench" / "predictions.jsonl").read_bytes() == before
    assert only(out / "mvbench") == ["predictions.jsonl", "results.json", "results.md"]


# ---- run logs --------------------------------------------------------------------------------------------------
def metrics_file(path, tail=""):
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 6)) + tail)
    return path


@pytest.mark.parametrize("tail", ['{"step": 6, "lo', '{"step": 6, "lo\n', ""])
def test_a_resume_copes_with_the_line_a_kill_cut(tmp_path, tail):
    path = metrics_file(tmp_path / "metrics.jsonl", tail)
    truncate_after_step(path, 3)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert only(tmp_path) == ["metrics.jsonl"]
    run = RunLog(tmp_path, tensorboard=False, resume_step=2)
    run.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_corrupt_metrics_line_in_the_middle_is_a_one_line_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON .*; fix or remove the line"):
        truncate_after_step(path, 1)
    assert path.read_text() == '{"step": 1}\nnot json\n{"step": 2}\n'


def test_metrics_survive_a_kill_during_the_resume_rewrite(tmp_path, monkeypatch):
    path = metrics_file(tmp_path / "metrics.jsonl", '{"step": 6, "lo')
    before = path.read_bytes()
    killed(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        truncate_after_step(path, 3)
    assert path.read_bytes() == before and only(tmp_path) == ["metrics.jsonl"]


# ---- annotation files ------------------------------------------------------------------------------------------
def test_annotation_files_survive_a_kill_during_their_rewrites(tmp_path, monkeypatch):
    kept = tmp_path / "cot.kept.jsonl"
    before = big_jsonl(kept, count=5_000, partial='{"problem_id": 5000, "pro')
    killed(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        drop_partial_line(kept)
    assert kept.read_bytes() == before and only(tmp_path) == ["cot.kept.jsonl"]
    monkeypatch.undo()
    drop_partial_line(kept)
    assert kept.read_bytes() == before[: before.rfind(b"\n") + 1]

    store = AnnotationStore(tmp_path / "cot.json")
    rows = [{"problem_id": i, "process": f"<think>ü {i}</think>"} for i in range(3)]
    (tmp_path / "cot.json").write_text(json.dumps(rows[:1]))
    with store:
        for row in rows[1:]:
            store.keep(row)
    kept.write_text("".join(json.dumps(row) + "\n" for row in rows[1:]))
    killed(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        store.consolidate([0, 1, 2])
    assert json.loads((tmp_path / "cot.json").read_text()) == rows[:1]
    monkeypatch.undo()
    assert store.consolidate([2, 1, 0]) == 3
    # byte for byte what json.dump wrote before the streamed write
    assert (tmp_path / "cot.json").read_text(encoding="utf-8") == json.dumps(rows[::-1], ensure_ascii=False, indent=1)
    assert not [name for name in only(tmp_path) if name.endswith(".tmp")]


# ---- checkpoints -----------------------------------------------------------------------------------------------
class FakeAccelerator:
    """The accelerator calls save_checkpoint makes: one process of `world`, barriers shared with the others."""

    def __init__(self, rank=0, barrier=None):
        self.process_index, self.is_main_process, self.barrier = rank, rank == 0, barrier

    def wait_for_everyone(self):
        if self.barrier is not None:
            self.barrier.wait(timeout=10)

    def save_state(self, folder):
        os.makedirs(folder, exist_ok=True)  # as accelerate does, on every process
        Path(folder, f"random_states_{self.process_index}.pkl").write_bytes(b"rng")


class FakeModel:
    """Stands for a model and a processor: save_pretrained writes a file."""

    def __init__(self, name):
        self.name = name

    def save_pretrained(self, path):
        Path(path, self.name).write_text("weights")


def save(tmp_path, step, accelerator=None, keep=None):
    config_file = tmp_path / "config.yaml"
    config_file.write_text("seed: 1\n")
    return save_checkpoint(accelerator or FakeAccelerator(), tmp_path / f"checkpoint-{step}", FakeModel("model.bin"),
                           FakeModel("processor.json"), config_file=config_file, state={"step": step}, keep=keep)


def test_a_checkpoint_appears_complete_or_not_at_all(tmp_path, monkeypatch):
    assert save(tmp_path, 2) == tmp_path / "checkpoint-2"
    assert only(tmp_path / "checkpoint-2") == ["config.yaml", "model.bin", "processor.json", "state",
                                               "trainer_state.json"]
    # killed after everything was written, before the rename: no checkpoint-4, resume from checkpoint-2
    killed(monkeypatch, name="checkpoint-4")
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 4)
    assert not (tmp_path / "checkpoint-4").exists() and latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    monkeypatch.undo()
    # the next save of that step clears the stale folders (a half save of older versions included)
    (tmp_path / ".checkpoint-4.tmp" / "state" / "leftover").write_text("x")
    (tmp_path / ".checkpoint-3.tmp").mkdir()
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "model.bin").write_text("half")
    save(tmp_path, 4, keep=1)
    assert only(tmp_path) == ["checkpoint-4", "config.yaml"]
    assert json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text()) == {"step": 4}
    assert (tmp_path / "checkpoint-4" / "model.bin").read_text() == "weights"
    assert only(tmp_path / "checkpoint-4" / "state") == ["random_states_0.pkl"]


def test_a_checkpoint_killed_while_the_model_is_written_is_not_listed(tmp_path, monkeypatch):
    save(tmp_path, 1)
    def kill(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(FakeModel, "save_pretrained", kill)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 2)
    assert checkpoints(tmp_path) == [tmp_path / "checkpoint-1"] and not (tmp_path / "checkpoint-2").exists()


def test_every_process_writes_its_state_into_the_checkpoint_before_it_appears(tmp_path):
    world = 3
    barrier = threading.Barrier(world)
    results, errors = {}, []

    def process(rank):
        try:
            results[rank] = save(tmp_path, 5, FakeAccelerator(rank, barrier))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=process, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and set(results.values()) == {tmp_path / "checkpoint-5"}
    assert only(tmp_path / "checkpoint-5" / "state") == [f"random_states_{r}.pkl" for r in range(world)]
    assert only(tmp_path) == ["checkpoint-5", "config.yaml"]


def test_a_real_accelerator_saves_through_the_temporary_folder(tmp_path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    fresh, fresh_partial = not AcceleratorState._shared_state, not PartialState._shared_state
    try:
        path = save(tmp_path, 3, Accelerator())
    finally:
        if fresh:  # leave no state behind that would clash with the settings of a later test's accelerator
            AcceleratorState._reset_state(reset_partial_state=fresh_partial)
    assert latest_checkpoint(tmp_path) == path and (path / "state").is_dir() and any((path / "state").iterdir())
    assert only(tmp_path) == ["checkpoint-3", "config.yaml"]
