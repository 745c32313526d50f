"""A run directory: config, logs, metrics (JSONL + TensorBoard), rollouts, failures and checkpoints.

Only the main process writes; every other process gets a logger that drops records. Checkpoints hold a
model and processor loadable by `AutoModelForImageTextToText.from_pretrained`, plus the accelerate state
(optimizer, scheduler, RNG) and the trainer's own state (step, data position) needed for an exact resume.
A checkpoint is written under a hidden name and renamed once complete, and a resume cuts metrics.jsonl and
rollouts.jsonl back through a temporary file and a rename, so a kill never leaves either half written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from videor1.atomic import atomic_write_lines, atomic_write_text, fsync_dir, fsync_tree
from videor1.config import save_config

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class RunLog:
    """Append-only records of one run; a no-op on non-main processes."""

    def __init__(self, output_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.logger = logging.getLogger(f"videor1.run.{self.dir}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self._writer = None
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
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step else None
            self._writer = SummaryWriter(str(self.dir / "tensorboard"), purge_step=purge)

    def save_config(self, config: BaseModel) -> None:
        """Write the resolved config (every default spelled out)."""
        if self.enabled:
            save_config(config, self.dir / "config.yaml")

    def info(self, message: str) -> None:
        """A line in train.log."""
        if self.enabled:
            self.logger.info(message)

    def metrics(self, step: int, values: dict[str, float | None]) -> None:
        """One line of metrics.jsonl (None for "nothing to measure this step") and TensorBoard scalars."""
        if not self.enabled:
            return
        self._append("metrics.jsonl", {"step": step, **values})
        if self._writer is not None:
            for key, value in values.items():
                if value is not None:
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def records(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append rows to a JSONL file of the run (rollouts.jsonl, failures.jsonl, ...)."""
        if self.enabled:
            for row in rows:
                self._append(name, row)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with (self.dir / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        """Flush and close TensorBoard and the log file."""
        if self._writer is not None:
            self._writer.close()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)


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


def save_pretrained_model(model: Any, processor: Any, path: Path) -> None:
    """Save a model loadable by the Auto classes; LoRA adapters are merged into a copy first."""
    import copy

    to_save = model
    if hasattr(model, "merge_and_unload"):
        to_save = copy.deepcopy(model).merge_and_unload()
    to_save.save_pretrained(path)
    processor.save_pretrained(path)


def save_checkpoint(
    accelerator: Any, path: Path, model: Any, processor: Any, *, config_file: Path, state: dict[str, Any],
    keep: int | None,
) -> Path:
    """Write checkpoint `path` on every process: accelerate state, Auto-loadable model, config, trainer state.

    Every process must call it (the accelerate state is sharded under FSDP/ZeRO); only the main process
    writes the model, the config and `trainer_state.json`, then deletes checkpoints beyond `keep`. All of it
    goes to a hidden sibling folder renamed to `path` once complete, so a kill never leaves half a `path`.
    """
    tmp = checkpoint_tmp(path)
    if accelerator.is_main_process:
        for stale in path.parent.glob(".checkpoint-*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if accelerator.is_main_process:
        save_pretrained_model(model, processor, tmp)
        shutil.copy(config_file, tmp / "config.yaml")
        # written last: a checkpoint counts as complete only once this file exists
        write_json(tmp / "trainer_state.json", state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_checkpoint(tmp, path)
        rotate_checkpoints(path.parent, keep)
    accelerator.wait_for_everyone()
    return path


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
