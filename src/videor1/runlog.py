"""A run directory: config, logs, metrics (JSONL + the trackers of `report_to`), rollouts, failures and checkpoints.

Only the main process writes; every other process gets a logger that drops records. Checkpoints hold a
model and processor loadable by `AutoModelForImageTextToText.from_pretrained`, plus the accelerate state
(optimizer, scheduler, RNG) and the trainer's own state (step, data position) needed for an exact resume;
a LoRA run's checkpoints hold the merged model there and the peft adapter under `adapter/`.
A checkpoint is written under a hidden name and renamed once complete, and a resume cuts metrics.jsonl and
rollouts.jsonl back through a temporary file and a rename, so a kill never leaves either half written; a
checkpoint that cannot be written (a full disk) leaves nothing behind and the previous one intact.

A run folder belongs to one run at a time: a run locks it for its life (`RunLock`), and a new run (neither
resumed nor told to overwrite) refuses a folder that holds anything but what a run writes before its first step
(`claim_output_dir`), so a second run can never rotate away, truncate or interleave the first one's files.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from videor1.atomic import atomic_write_lines, atomic_write_text, fsync_dir, fsync_tree
from videor1.config import save_config
from videor1.trackers import Tracker, check_available, open_trackers

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_DIR = "adapter"  # a LoRA checkpoint's peft adapter, beside the merged model
LOCK_FILE = ".videor1.lock"  # flock'ed by the run using the folder; holds its PID
# what a run writes before its first step: a folder holding only these, and no metrics line, has no results to lose
# (a run that stopped at start, say on a bad data file, can simply be started again in it)
START_FILES = frozenset({
    "config.yaml", "train.log", "failures.jsonl", "eval.jsonl", "trackers.json", "tensorboard", "wandb", "mlruns",
    "metrics.jsonl", "rollouts.jsonl", LOCK_FILE,
})
# what `--overwrite` deletes: a run's own records; wandb/ and mlruns/ are tracker stores that keep runs by id
RUN_FILES = ("config.yaml", "train.log", "failures.jsonl", "eval.jsonl", "trackers.json", "metrics.jsonl",
             "rollouts.jsonl", "tensorboard", "plots")


class RunLog:
    """Append-only records of one run; a no-op on non-main processes."""

    def __init__(
        self, output_dir: str | Path, *, enabled: bool = True, report_to: Sequence[str] = ("tensorboard",),
        resume_step: int = 0, tensorboard: bool | None = None,
    ):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.logger = logging.getLogger(f"videor1.run.{self.dir}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self._trackers: list[Tracker] = []
        if tensorboard is not None:  # the older switch: False drops TensorBoard, True adds it
            report_to = [t for t in report_to if t != "tensorboard"] + (["tensorboard"] if tensorboard else [])
        # on every process, so all of them stop at start alike rather than the others waiting on the main one
        check_available(report_to)
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.logger.handlers:
            handler = logging.FileHandler(self.dir / "train.log", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            self.logger.addHandler(handler)
        # a resumed run rewrites history from its checkpoint: lines past it came from steps that are redone
        for name in ("metrics.jsonl", "rollouts.jsonl"):
            truncate_after_step(self.dir / name, resume_step)
        try:
            self._trackers = open_trackers(report_to, self.dir, resume_step=resume_step)
        except BaseException:
            self.close()
            raise

    def save_config(self, config: BaseModel) -> None:
        """Write the resolved config (every default spelled out) and hand it to the trackers."""
        if self.enabled:
            save_config(config, self.dir / "config.yaml")
            values = config.model_dump(mode="json")
            for tracker in self._trackers:
                tracker.log_config(values)

    def info(self, message: str) -> None:
        """A line in train.log."""
        if self.enabled:
            self.logger.info(message)

    def metrics(self, step: int, values: dict[str, float | None]) -> None:
        """One line of metrics.jsonl (None for "nothing to measure this step") and the same values to each tracker."""
        if not self.enabled:
            return
        self._append("metrics.jsonl", {"step": step, **values})
        for tracker in self._trackers:
            tracker.log(step, values)

    def records(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append rows to a JSONL file of the run (rollouts.jsonl, failures.jsonl, ...)."""
        if self.enabled:
            for row in rows:
                self._append(name, row)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with (self.dir / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        """Close the trackers (a wandb run is finished, an MLflow run marked done) and the log file."""
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.close()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


class RunLock:
    """An exclusive, non-blocking flock on the run folder's lock file, held until `release` or the process ends.

    The OS drops a flock when its process dies, so a crashed or killed run never leaves its folder locked. On a
    filesystem without locks the run goes on unlocked, `unsupported` saying why (the recipe logs it).
    """

    def __init__(self, folder: Path):
        import fcntl

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK_FILE
        self.unsupported: str | None = None
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(self._fd)
            self.release()
            raise ValueError(
                f"output_dir {folder} is in use by another run{holder}: wait for it to end, or give this run "
                "another output_dir"
            ) from None
        except OSError as exc:
            self.release()
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            self.unsupported = f"{path}: {exc.strerror}; two runs started in {folder} at once would mix their files"
            return
        except BaseException:
            self.release()
            raise
        # who holds it, for the message of the next run that tries
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Unlock (closing the file releases the flock); a second call does nothing."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _lock_holder(fd: int) -> str:
    """" (PID n)" from the lock file, or "" while the holder has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f" (PID {text})" if text.isdigit() else ""


def run_results(folder: Path) -> list[str]:
    """Entries of `folder` that a new run would clobber: anything but what a run writes before its first step."""
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name not in START_FILES:
            found.append(entry.name)
        elif entry.name in ("metrics.jsonl", "rollouts.jsonl") and entry.is_file() and entry.stat().st_size:
            found.append(entry.name)  # a step was logged: the run got somewhere
    return found


def clear_run(folder: Path) -> None:
    """Delete a previous run's checkpoints (complete or half written) and records; other files stay."""
    for path in folder.glob("checkpoint-*"):
        if CHECKPOINT_PATTERN.match(path.name) and path.is_dir():
            shutil.rmtree(path)
    for path in folder.glob(".checkpoint-*.tmp"):
        shutil.rmtree(path, ignore_errors=True)
    for name in RUN_FILES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def claim_output_dir(folder: Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Lock `folder` for a run; refuse, in one line, a folder holding another run's results unless resuming or
    overwriting (which first deletes them: `clear_run`), and a resume with no checkpoint to resume from."""
    if resume and overwrite:
        raise ValueError(f"--resume continues the run in {folder} and --overwrite replaces it: pass one of them")
    # a folder a run has used: whether a run is in it now is the first thing to say
    lock = RunLock(folder) if (folder / LOCK_FILE).is_file() else None
    try:
        results = run_results(folder)
        if results and not (resume or overwrite):
            shown = ", ".join(results[:3]) + (f" and {len(results) - 3} more" if len(results) > 3 else "")
            raise ValueError(
                f"output_dir {folder} is not empty ({shown}): pass --resume to continue the run in it, or "
                "--overwrite to start again there (its checkpoints and logs are deleted first), or give another "
                "output_dir"
            )
        if resume and latest_checkpoint(folder) is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {folder}")
        lock = lock or RunLock(folder)
        if overwrite:
            clear_run(folder)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def truncate_after_step(path: Path, step: int) -> None:
    """Drop JSONL lines whose "step" is beyond `step` (all of them when step is 0), rewriting the file atomically."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").split("\n")
    complete, partial = lines[:-1], lines[-1]
    # a kill mid-append leaves at most one damaged line, the last: a partial or unparsable one is dropped
    if partial.strip():
        complete.append(partial)
    kept = []
    for number, line in enumerate(complete, start=1):
        record = _step_record(path, number, line, last=number == len(complete))
        if record is not None and record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write_lines(path, kept)


def _step_record(path: Path, number: int, line: str, *, last: bool) -> dict[str, Any] | None:
    """The record of one metrics line; None for a blank line or a damaged last line (dropped)."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        if last:
            return None
        raise ValueError(f"{path}:{number}: not valid JSON ({exc}); fix or remove the line") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path}:{number}: not a JSON object; fix or remove the line")
    return record


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / "trainer_state.json").exists():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def rotate_checkpoints(output_dir: str | Path, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond `keep`."""
    if keep is None:
        return
    for path in checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def save_pretrained_model(
    model: Any, processor: Any, path: Path, *, base_model: str | None = None, weights: dict[str, Any] | None = None
) -> None:
    """Save a model loadable by the Auto classes; a LoRA model's adapter merged in (W + scale·B·A streamed per
    weight, no copy of the model), its adapter kept in adapter/.

    `weights`: the full state dict to write instead of the model's own (a sharded model holds only its shards);
    for a LoRA model, its base model's (peft's names, adapters included).
    """
    from videor1.models.load import unwrap_peft
    from videor1.models.lora_weights import adapted_layers, adapter_state, merged_weights

    base = unwrap_peft(model)
    if base is not model:
        state = weights if weights is not None else base.state_dict()
        save_adapter(model, path / ADAPTER_DIR, base_model=base_model, weights=adapter_state(state))
        weights = dict(merged_weights(state, adapted_layers(base)))
    base.save_pretrained(path, **({"state_dict": weights} if weights is not None else {}))
    processor.save_pretrained(path)


def save_adapter(model: Any, path: Path, *, base_model: str | None = None,
                 weights: dict[str, Any] | None = None) -> None:
    """peft's `save_pretrained` of the adapter, its adapter_config.json naming `base_model` (default: peft's guess).

    `weights`: the adapter's tensors under the base model's names (`adapter_state`), for a sharded model."""
    configs = list(model.peft_config.values())
    guessed = [config.base_model_name_or_path for config in configs]
    if base_model is not None:
        for config in configs:
            config.base_model_name_or_path = model_reference(base_model)
    # peft reads the state dict under the wrapper's names
    state = None if weights is None else {f"base_model.model.{name}": tensor for name, tensor in weights.items()}
    try:
        model.save_pretrained(str(path), **({"state_dict": state} if state is not None else {}))
    finally:
        for config, name in zip(configs, guessed, strict=True):
            config.base_model_name_or_path = name


def model_reference(name_or_path: str) -> str:
    """A hub id as given; a local folder as an absolute path, so the adapter finds its base from any folder."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def save_checkpoint(
    accelerator: Any, path: Path, model: Any, processor: Any, *, config_file: Path, state: dict[str, Any],
    keep: int | None, base_model: str | None = None, weights: dict[str, Any] | None = None,
    save_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint `path` on every process: accelerate state, Auto-loadable model, config, trainer state.

    `base_model` (the run's starting model) is what a LoRA checkpoint's adapter/ names as its base. A sharded
    run passes the model's full `weights` (gathered on the main process) and `save_extra`, which every process
    calls with the state folder to write its shards.

    Every process must call it (the accelerate state is sharded under FSDP/ZeRO); only the main process
    writes the model, the config and `trainer_state.json`, then deletes checkpoints beyond `keep`. All of it
    goes to a hidden sibling folder renamed to `path` once complete, so a kill never leaves half a `path`.
    A write that fails on any process (a full disk: `CheckpointDiskFull`) fails the save on every process, with
    the hidden folder deleted and the previous checkpoints as they were.
    """
    tmp = checkpoint_tmp(path)
    main = accelerator.is_main_process
    if main:
        for stale in path.parent.glob(".checkpoint-*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    failure = None
    try:
        accelerator.save_state(str(tmp / "state"))
        if save_extra is not None:
            save_extra(tmp / "state")
        if main:
            save_pretrained_model(model, processor, tmp, base_model=base_model, weights=weights)
            shutil.copy(config_file, tmp / "config.yaml")
            # written last: a checkpoint counts as complete only once this file exists
            write_json(tmp / "trainer_state.json", state)
    except Exception as exc:  # noqa: BLE001 - every process must hear of it before anyone raises (below)
        failure = exc
    _raise_if_any_failed(accelerator, failure, path, tmp)
    if main:
        try:
            publish_checkpoint(tmp, path)
            rotate_checkpoints(path.parent, keep)
        except Exception as exc:  # noqa: BLE001 - as above
            failure = exc
    _raise_if_any_failed(accelerator, failure, path, tmp)
    return path


class CheckpointDiskFull(OSError):
    """The disk filled while a checkpoint was written; nothing of it was kept."""


def disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) says the disk is full: an ENOSPC OSError, or torch's or safetensors'
    own wording of one (torch.save reports a full disk as "[enforce fail at inline_container.cc] ... file write
    failed", without the errno)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if any(text in str(exc) for text in ("No space left on device", "file write failed")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _raise_if_any_failed(accelerator: Any, failure: Exception | None, path: Path, tmp: Path) -> None:
    """A barrier that also tells every process whether any write failed (and whether for lack of space); then
    each raises, the main process having deleted the half-written `tmp`."""
    failed, full = _count_everywhere(accelerator, [failure is not None, disk_full(failure)])
    if not failed:
        return
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    if full:
        newest = latest_checkpoint(path.parent)
        kept = f"the newest checkpoint, {newest.name}, is intact" if newest else "no earlier checkpoint"
        raise CheckpointDiskFull(
            errno.ENOSPC, f"no space left on device while writing it, so it was not kept ({kept}): free some "
            "space and continue with --resume", str(path),
        ) from failure
    if failure is not None:
        raise failure
    raise RuntimeError(f"{path}: another process failed to write its part of the checkpoint (its error is above)")


def _count_everywhere(accelerator: Any, flags: list[bool]) -> list[int]:
    """How many processes raised each flag, summed over the process group (this process's alone without one)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        accelerator.wait_for_everyone()  # one process, or threads standing for processes in a test
        return [int(flag) for flag in flags]
    counts = torch.tensor([int(flag) for flag in flags], dtype=torch.int64, device=accelerator.device)
    dist.all_reduce(counts)  # in place of a barrier: every process reaches it, failed or not
    return [int(count) for count in counts.tolist()]


def checkpoint_tmp(path: Path) -> Path:
    """Where checkpoint `path` is written before it appears (hidden, so `checkpoints` never lists it)."""
    return path.with_name(f".{path.name}.tmp")


def publish_checkpoint(tmp: Path, path: Path) -> None:
    """Rename the complete folder `tmp` to `path`, its contents durable first, replacing a stale `path`."""
    fsync_tree(tmp)
    if path.exists():
        shutil.rmtree(path)  # stale: a run started again in this folder, or a half save of older versions
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically and durably (a crash never leaves half a trainer_state.json)."""
    atomic_write_text(path, json.dumps(data, indent=1))
