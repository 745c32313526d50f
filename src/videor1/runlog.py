"""A run directory: config, logs, metrics (JSONL + the trackers of `report_to`), rollouts, failures and checkpoints.

Only the main process writes; every other process gets a logger that drops records. Checkpoints hold a
model and processor loadable by `AutoModelForImageTextToText.from_pretrained`, plus the accelerate state
(optimizer, scheduler, RNG) and the trainer's own state (step, data position) needed for an exact resume;
a LoRA run's checkpoints hold the merged model there and the peft adapter under `adapter/`.
A checkpoint is written under a hidden name and renamed once complete, and a resume cuts metrics.jsonl and
rollouts.jsonl back through a temporary file and a rename, so a kill never leaves either half written.
"""

from __future__ import annotations

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
    """
    tmp = checkpoint_tmp(path)
    if accelerator.is_main_process:
        for stale in path.parent.glob(".checkpoint-*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if save_extra is not None:
        save_extra(tmp / "state")
    if accelerator.is_main_process:
        save_pretrained_model(model, processor, tmp, base_model=base_model, weights=weights)
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
