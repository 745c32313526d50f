"""A run folder belongs to one run: never clobbered by a new run, locked while in use, resumed only with the
settings it was trained with, never deleted by an export into it, and a checkpoint that hits a full disk leaves
the previous one as it was."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from videor1.cli import app
from videor1.cli_errors import input_error_message
from videor1.config import TrainConfig, load_config, save_config
from videor1.recipe import check_resumable, resume_conflicts
from videor1.runlog import LOCK_FILE, CheckpointDiskFull, RunLock, claim_output_dir, latest_checkpoint, save_checkpoint

runner = CliRunner()


def one_line(result, code=2):
    """The single error line of a command that failed with `code`."""
    lines = [line for line in result.output.splitlines() if line and not line.startswith("(videor1 --debug")]
    assert result.exit_code == code and len(lines) == 1, result.output
    return lines[0]


def old_run(folder, steps=(2, 4, 6)):
    """What a finished run leaves: checkpoints, metrics, its config and log."""
    for step in steps:
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"step": step}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, steps[-1] + 1)))
    (folder / "config.yaml").write_text("seed: 7\n")
    (folder / "train.log").write_text("old\n")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_FILE}


# ---- a new run never clobbers another ---------------------------------------------------------------------------
def test_a_folder_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    before = old_run(tmp_path / "run")
    with pytest.raises(ValueError) as refused:
        claim_output_dir(tmp_path / "run", resume=False, overwrite=False)
    message = str(refused.value)
    assert "\n" not in message and str(tmp_path / "run") in message
    assert "(checkpoint-2, checkpoint-4, checkpoint-6 and 1 more)" in message  # metrics.jsonl
    assert "--resume" in message and "--overwrite" in message
    assert files(tmp_path / "run") == before and len(list((tmp_path / "run").glob("checkpoint-*"))) == 3
    # any other content counts too: output_dir pointed at a folder of one's own is not written into
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"mine is not empty \(notes.txt\)"):
        claim_output_dir(tmp_path / "mine", resume=False, overwrite=False)
    assert not (tmp_path / "mine" / LOCK_FILE).exists()  # a refused folder gets nothing, not even a lock file


def test_what_a_run_leaves_before_its_first_step_does_not_count(tmp_path):
    """A run that stopped at start (a bad data file, say) can be started again in its folder."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "train.log", "failures.jsonl", "trackers.json", "metrics.jsonl"):
        (run / name).write_text("x\n" if name != "metrics.jsonl" else "")
    (run / "tensorboard").mkdir()
    claim_output_dir(run, resume=False, overwrite=False).release()
    claim_output_dir(tmp_path / "new" / "deeper", resume=False, overwrite=False).release()  # created
    (run / "metrics.jsonl").write_text('{"step": 1}\n')  # ... but not once a step was logged
    with pytest.raises(ValueError, match=r"not empty \(metrics.jsonl\)"):
        claim_output_dir(run, resume=False, overwrite=False)


def test_overwrite_deletes_the_old_runs_files_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    old_run(run)
    (run / ".checkpoint-8.tmp" / "state").mkdir(parents=True)
    for folder in ("tensorboard", "plots", "wandb", "data"):
        (run / folder).mkdir()
    (run / "notes.txt").write_text("mine")
    claim_output_dir(run, resume=False, overwrite=True).release()
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, "data", "notes.txt", "wandb"]


def test_resume_and_overwrite_exclude_each_other_and_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="--resume continues the run in .* and --overwrite replaces it"):
        claim_output_dir(tmp_path, resume=True, overwrite=True)
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint in"):
        claim_output_dir(tmp_path / "empty", resume=True, overwrite=False)


def run_config(tmp_path, output_dir):
    """A config file for `videor1 train` or `sft` (the data is never read: the folder is refused first)."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"output_dir": str(output_dir), "report_to": [],
                                      "data": {"train_file": "rows.json", "media_root": "."}}))
    return config


def test_train_and_sft_refuse_an_old_runs_folder_in_one_line(tmp_path):
    before = old_run(tmp_path / "run")
    config = run_config(tmp_path, tmp_path / "run")
    for command in ("train", "sft"):
        line = one_line(runner.invoke(app, [command, str(config)]))
        assert f"output_dir {tmp_path / 'run'} is not empty (checkpoint-2, " in line
        assert "--resume" in line and "--overwrite" in line
    assert files(tmp_path / "run") == before  # config.yaml kept, metrics.jsonl not emptied
    result = runner.invoke(app, ["train", str(config), "--resume", "--overwrite"])
    assert "pass one of them" in one_line(result)


# ---- one run at a time ------------------------------------------------------------------------------------------
def test_a_second_run_fails_while_the_folder_is_locked_and_not_after(tmp_path):
    before = old_run(tmp_path / "run")
    first = claim_output_dir(tmp_path / "run", resume=True, overwrite=False)
    for resume, overwrite in ((False, False), (True, False), (False, True)):
        with pytest.raises(ValueError, match=rf"run is in use by another run \(PID {os.getpid()}\): wait for it"):
            claim_output_dir(tmp_path / "run", resume=resume, overwrite=overwrite)
    assert files(tmp_path / "run") == before  # --overwrite deleted nothing of the run in progress
    first.release()
    first.release()  # idempotent
    claim_output_dir(tmp_path / "run", resume=False, overwrite=True).release()
    assert files(tmp_path / "run") == {}


def test_a_filesystem_without_locks_runs_unlocked_and_says_why(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = claim_output_dir(tmp_path / "run", resume=False, overwrite=False)
    assert lock.unsupported == f"{tmp_path / 'run' / LOCK_FILE}: No locks available; two runs started in " \
        f"{tmp_path / 'run'} at once would mix their files"


def test_a_killed_run_leaves_its_folder_unlocked(tmp_path):
    code = ("import sys, time; from pathlib import Path; from videor1.runlog import RunLock; "
            "lock = RunLock(Path(sys.argv[1])); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=rf"in use by another run \(PID {holder.pid}\)"):
            RunLock(tmp_path / "run")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    RunLock(tmp_path / "run").release()  # the OS dropped the dead process's flock


# ---- resume only with the checkpoint's settings -----------------------------------------------------------------
REQUIRED = ["data.train_file=rows.json", "data.media_root=.", "output_dir=runs/a"]


def train_config(*overrides):
    return load_config(TrainConfig, None, [*REQUIRED, *overrides])


def test_settings_that_shape_the_run_cannot_change_on_resume(tmp_path):
    saved = train_config("seed=1", "model.lora.enabled=false", "algorithm.num_generations=8").model_dump(mode="json")
    changed = train_config("seed=2", "model.lora.enabled=true", "algorithm.num_generations=4", "optim.lr=1e-5")
    assert resume_conflicts(saved, changed) == [
        "seed (checkpoint: 1, now: 2)",
        "model.lora.enabled (checkpoint: false, now: true)",
        # the checkpoint's optimizer state would silently keep its own learning rate
        "optim.lr (checkpoint: 1e-06, now: 1e-05)",
        "algorithm.num_generations (checkpoint: 8, now: 4)",
        # G~ follows G when left out: a changed G changes it too
        "algorithm.num_shuffled (checkpoint: 4, now: 2)",
    ]
    checkpoint = tmp_path / "checkpoint-6"
    checkpoint.mkdir()
    save_config(TrainConfig.model_validate(saved), checkpoint / "config.yaml")
    with pytest.raises(ValueError) as refused:
        check_resumable(checkpoint, changed)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"--resume: {checkpoint} was trained with other settings")
    assert "model.lora.enabled (checkpoint: false, now: true); optim.lr" in message


def test_how_long_where_and_how_a_run_records_may_change_on_resume(tmp_path):
    saved = train_config("seed=1", "max_steps=6").model_dump(mode="json")
    later = train_config("seed=1", "max_steps=12", "save_every=3", "save_total_limit=1", "report_to=[]",
                         "log_rollouts=0", "output_dir=elsewhere/a", "data.num_workers=2", "torch_threads=1",
                         "data.media_root=moved", "model.gradient_checkpointing=true")
    assert resume_conflicts(saved, later) == []
    # an older config spelling (tensorboard: false) and left-out defaults compare as what they resolve to
    older = {key: value for key, value in saved.items() if key not in ("report_to", "algorithm")}
    assert resume_conflicts({**older, "tensorboard": False}, train_config("seed=1", "report_to=[]")) == []


# ---- an export never deletes what it reads ----------------------------------------------------------------------
def test_export_refuses_a_target_that_holds_is_or_lies_in_its_source(tmp_path):
    run = tmp_path / "run"
    before = old_run(run)
    (run / "checkpoint-2" / "adapter").mkdir()
    (run / "checkpoint-2" / "adapter" / "adapter_config.json").write_text("{}")
    for out, words in ((run, "OUT holds CHECKPOINT"), (tmp_path, "OUT holds CHECKPOINT"),
                       (run / "checkpoint-2", "OUT is CHECKPOINT itself"),
                       (run / "checkpoint-2" / "merged", "OUT lies inside CHECKPOINT")):
        result = runner.invoke(app, ["export", str(run / "checkpoint-2"), str(out), "--merge", "--force"])
        assert words in one_line(result)
    assert files(run) == before and (run / "checkpoint-2" / "trainer_state.json").exists()
    assert not (run / "checkpoint-2" / "merged").exists()
    # a local base model inside OUT would be deleted the same way
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(run / "checkpoint-4")}))
    result = runner.invoke(app, ["export", str(adapter), str(run), "--merge", "--force"])
    assert "OUT holds the base model" in one_line(result) and files(run) == before


# ---- a full disk while a checkpoint is written ------------------------------------------------------------------
class OneProcess:
    """The accelerator calls save_checkpoint makes, for a single process."""

    process_index, is_main_process = 0, True

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        os.makedirs(folder, exist_ok=True)
        Path(folder, "random_states_0.pkl").write_bytes(b"rng")


class Saves:
    """A model or processor whose save_pretrained writes a file, then raises `error` if given."""

    def __init__(self, name, error=None):
        self.name, self.error = name, error

    def save_pretrained(self, path):
        Path(path, self.name).write_text("weights")
        if self.error is not None:
            raise self.error


def save(folder, step, model, accelerator=None):
    (folder / "config.yaml").write_text("seed: 1\n")
    return save_checkpoint(accelerator or OneProcess(), folder / f"checkpoint-{step}", model, Saves("processor"),
                           config_file=folder / "config.yaml", state={"step": step}, keep=None)


TORCH_FULL = RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                          "data/0: file write failed")


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), TORCH_FULL],
                         ids=["ENOSPC", "torch.save"])
def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, error):
    save(tmp_path, 2, Saves("model"))
    with pytest.raises(CheckpointDiskFull) as full:
        save(tmp_path, 4, Saves("model", error))
    assert full.value.errno == errno.ENOSPC and full.value.filename == str(tmp_path / "checkpoint-4")
    line = input_error_message(full.value)  # what the CLI prints
    assert line.startswith(f"{tmp_path / 'checkpoint-4'}: no space left on device") and "\n" not in line
    assert "the newest checkpoint, checkpoint-2, is intact" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "config.yaml"]  # no hidden temp folder
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert (tmp_path / "checkpoint-2" / "model").read_text() == "weights"


def test_other_write_errors_keep_their_own_message_and_leave_nothing_either(tmp_path):
    with pytest.raises(PermissionError, match="read-only"):
        save(tmp_path, 2, Saves("model", PermissionError(errno.EACCES, "read-only")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


class GlooProcess(OneProcess):
    """One of two real gloo processes."""

    def __init__(self, rank, fail):
        import torch

        self.process_index, self.is_main_process, self.device, self.fail = rank, rank == 0, torch.device("cpu"), fail

    def wait_for_everyone(self):
        import torch.distributed as dist

        dist.barrier()

    def save_state(self, folder):
        os.makedirs(folder, exist_ok=True)
        if self.fail:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder))
        Path(folder, f"random_states_{self.process_index}.pkl").write_bytes(b"rng")


def _save_on_rank(rank, folder, failing_rank):
    """A 2-process save_checkpoint whose `failing_rank` finds the disk full; writes what this rank raised."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        save(Path(folder), 3, Saves("model"), GlooProcess(rank, fail=rank == failing_rank))
        outcome = "saved"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        outcome = f"{type(exc).__name__}: {exc}"
    Path(folder, f"rank{rank}.txt").write_text(outcome)
    dist.destroy_process_group()


@pytest.mark.parametrize("failing_rank", [1, 0])
def test_a_full_disk_on_one_process_stops_every_process_without_a_hang(tmp_path, failing_rank):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_save_on_rank, args=(rank, str(tmp_path), failing_rank)) for rank in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
    assert not hung, "a process waited for ever on the one that failed"
    for rank in (0, 1):
        outcome = (tmp_path / f"rank{rank}.txt").read_text()
        assert outcome.startswith("CheckpointDiskFull: [Errno 28] no space left on device"), outcome
    assert not (tmp_path / "checkpoint-3").exists() and not list(tmp_path.glob(".checkpoint-*"))


# ---- end to end on a tiny model ---------------------------------------------------------------------------------
def test_sft_run_folder_lifecycle(tmp_path, tiny_models, synth_root):
    """A start that failed, a finished run, a run refused there, a resume refused for its settings, two runs at
    once, an allowed resume, then --overwrite: each leaves the folder as it should."""
    from tests.test_sft import sft_config
    from videor1.sft.trainer import SFTTrainer

    run = tmp_path / "sft"

    def metrics():
        return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    def cfg(*overrides):
        return sft_config(tmp_path, tiny_models(), synth_root, "batch_size=2", "save_every=1", *overrides)

    no_rationale = tmp_path / "rows.json"  # answers without a <think> process: nothing for SFT to learn
    rows = json.loads((synth_root / "train.json").read_text())
    no_rationale.write_text(json.dumps([{**row, "process": ""} for row in rows]))
    with pytest.raises(ValueError, match="no valid SFT rows"):
        SFTTrainer(cfg("max_steps=2", f"data.train_file={no_rationale}"))
    # what that start wrote (config.yaml, train.log) is no run to protect, and its lock was released
    SFTTrainer(cfg("max_steps=2")).train()
    assert metrics() == [1, 2] and latest_checkpoint(run) == run / "checkpoint-2"
    before = {name: (run / name).read_bytes() for name in ("metrics.jsonl", "config.yaml")}

    with pytest.raises(ValueError, match=r"is not empty \(checkpoint-1, checkpoint-2, metrics.jsonl\)"):
        SFTTrainer(cfg("max_steps=1"))
    with pytest.raises(ValueError, match=r"model.lora.enabled \(checkpoint: false, now: true\)"):
        SFTTrainer(cfg("max_steps=3", "model.lora.enabled=true"), resume=True)
    assert {name: (run / name).read_bytes() for name in before} == before  # neither touched a thing

    resumed = SFTTrainer(cfg("max_steps=3"), resume=True)  # a longer run is fine
    with pytest.raises(ValueError, match=rf"in use by another run \(PID {os.getpid()}\)"):
        SFTTrainer(cfg("max_steps=3"), resume=True)
    assert resumed.train() == run / "checkpoint-3" and metrics() == [1, 2, 3]
    assert yaml.safe_load((run / "checkpoint-3" / "config.yaml").read_text())["max_steps"] == 3

    final = SFTTrainer(cfg("max_steps=1"), overwrite=True).train()
    assert final == run / "checkpoint-1" and final.exists() and metrics() == [1]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]


def test_train_overwrite_replaces_an_older_longer_run(tmp_path, tiny_models, synth_root):
    """The probe's case: 2 steps into a 6-step run's folder. Without --overwrite it is refused (above); with it
    the old checkpoints go first, so none of them rotates the new one away, and the one reported exists."""
    from tests.test_train import config

    run = tmp_path / "run"
    old_run(run)
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=2", "save_every=1", "save_total_limit=2",
                 "algorithm.temporal=false")
    save_config(cfg, tmp_path / "c.yaml")
    result = runner.invoke(app, ["train", str(tmp_path / "c.yaml"), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert f"done: {run / 'checkpoint-2'}" in result.output and (run / "checkpoint-2" / "model.safetensors").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 2


@pytest.mark.slow
def test_two_processes_refuse_a_taken_folder_together(tmp_path):
    """Only the main process looks at the folder; the other must stop with it, not wait at a collective."""
    import socket

    old_run(tmp_path / "run")
    config = run_config(tmp_path, tmp_path / "run")
    with socket.socket() as sock:  # a free rendezvous port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "videor1.cli", "train", str(config)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode != 0
    assert result.stderr.count(f"output_dir {tmp_path / 'run'} is not empty") == 2, result.stderr[-3000:]
