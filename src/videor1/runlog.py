"""A run directory: config, logs, metrics (JSONL + TensorBoard), rollouts, failures and checkpoints.

Only the main process writes; every other process gets a logger that drops records. Checkpoints hold a
model and processor loadable by `AutoModelForImageTextToText.from_pretrained`, plus the accelerate state
(optimizer, scheduler, RNG) and the trainer's own state (step, data position) needed for an exact resume.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

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
    """Drop JSONL lines whose "step" is beyond `step` (all of them when step is 0)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


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
    writes the model, the config and `trainer_state.json`, then deletes checkpoints beyond `keep`.
    """
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path / "state"))
    if accelerator.is_main_process:
        save_pretrained_model(model, processor, path)
        shutil.copy(config_file, path / "config.yaml")
        # written last: a checkpoint counts as complete only once this file exists
        write_json(path / "trainer_state.json", state)
        rotate_checkpoints(path.parent, keep)
    accelerator.wait_for_everyone()
    return path


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a crash never leaves half a trainer_state.json)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)
