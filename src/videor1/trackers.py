"""The metric trackers a run reports to besides metrics.jsonl: TensorBoard, Weights & Biases and MLflow.

Each is one small class: `log_config` (the resolved config, once), `log(step, values)` (None values are
skipped: "nothing to measure this step") and `close()`. wandb and mlflow are optional extras:
`check_available` fails at start, with the pip line to run, so a run never stops mid-way for a missing
package. The wandb and MLflow run ids are kept in `<output_dir>/trackers.json` so `--resume` continues the
same tracker run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import yaml

from videor1.atomic import atomic_write_text

TRACKERS = ("tensorboard", "wandb", "mlflow")
# tracker -> (module to import, extra that installs it)
REQUIREMENTS = {"tensorboard": ("tensorboard", None), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
IDS_FILE = "trackers.json"
DEFAULT_PROJECT = "videor1"


class TrackerUnavailable(ValueError):
    """report_to names a tracker whose package is not installed (an input error: one line, exit 2)."""


class Tracker(Protocol):
    """What RunLog needs of a tracker."""

    def log_config(self, config: dict[str, Any]) -> None: ...

    def log(self, step: int, values: dict[str, float | None]) -> None: ...

    def close(self) -> None: ...


def check_available(report_to: Sequence[str]) -> None:
    """Raise TrackerUnavailable naming the extra to install for the first tracker whose package is missing."""
    for name in report_to:
        if name not in REQUIREMENTS:
            raise ValueError(f"report_to: unknown tracker {name!r}; expected some of {', '.join(TRACKERS)}")
        module, extra = REQUIREMENTS[name]
        if not _installed(module):
            fix = f'pip install -e ".[{extra}]"' if extra else f"pip install {module}"
            raise TrackerUnavailable(f"report_to lists {name} but the {module} package is not installed: {fix}")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails to import, or a module set to None
        return False


def open_trackers(report_to: Sequence[str], output_dir: Path, *, resume_step: int = 0) -> list[Tracker]:
    """Start every tracker of `report_to`; a resumed run (resume_step > 0) continues the saved tracker runs."""
    check_available(report_to)
    ids_path = output_dir / IDS_FILE
    saved = json.loads(ids_path.read_text(encoding="utf-8")) if resume_step and ids_path.exists() else {}
    names = list(dict.fromkeys(report_to))  # a name listed twice is one tracker
    trackers: list[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                trackers.append(TensorBoardTracker(output_dir, resume_step=resume_step))
            elif name == "wandb":
                trackers.append(WandbTracker(output_dir, run_id=saved.get("wandb")))
            else:
                trackers.append(MlflowTracker(output_dir, run_id=saved.get("mlflow")))
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    ids = {**saved, **{name: t.run_id for name, t in zip(names, trackers, strict=True) if hasattr(t, "run_id")}}
    if ids:
        atomic_write_text(ids_path, json.dumps(ids, indent=1))
    elif ids_path.exists():
        ids_path.unlink()  # a fresh run: ids of an earlier run in this folder must not be resumed into
    return trackers


def logged(values: dict[str, float | None]) -> dict[str, float]:
    """The values that were measured this step, as floats."""
    return {key: float(value) for key, value in values.items() if value is not None}


def flatten(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf value) of a nested config; lists stay whole (one value each)."""
    for key, value in config.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


class TensorBoardTracker:
    """Scalars under <output_dir>/tensorboard; a resume purges the points after its checkpoint."""

    def __init__(self, output_dir: Path, *, resume_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.resumed = bool(resume_step)
        # the steps after the checkpoint are redone: drop their old points rather than draw them twice
        purge = resume_step + 1 if resume_step else None
        self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=purge)

    def log_config(self, config: dict[str, Any]) -> None:
        """The config as a text entry (a fresh run only: the resumed run already holds it)."""
        if not self.resumed:
            text = yaml.safe_dump(config, sort_keys=False)
            # four leading spaces: TensorBoard renders text as markdown, and this keeps it a code block
            self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)
            self.writer.flush()

    def log(self, step: int, values: dict[str, float | None]) -> None:
        """One scalar per measured value."""
        for key, value in logged(values).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class WandbTracker:
    """A wandb run named after the output folder, its files under <output_dir>/wandb.

    WANDB_MODE=offline works without a network (`wandb sync` uploads later). WANDB_PROJECT, WANDB_NAME and
    WANDB_DIR, when set, win over the defaults (project "videor1", the output folder's name, the output folder).
    """

    def __init__(self, output_dir: Path, *, run_id: str | None = None):
        import wandb

        # read here rather than left to wandb, which reads the environment once per process
        kwargs: dict[str, Any] = {
            "project": os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            "name": os.environ.get("WANDB_NAME") or output_dir.name,
            "dir": os.environ.get("WANDB_DIR") or str(output_dir),
        }
        if run_id:
            kwargs.update(id=run_id, resume="allow")
        # a run of its own even when the process already has one (a notebook, a caller's own wandb run)
        self.run = wandb.init(reinit="create_new", **kwargs)
        self.run_id: str = self.run.id

    def log_config(self, config: dict[str, Any]) -> None:
        """The config as the run's config (nested, as in config.yaml)."""
        self.run.config.update(config, allow_val_change=True)

    def log(self, step: int, values: dict[str, float | None]) -> None:
        """One history row at `step` (a resumed online run drops steps the server already holds, with a warning)."""
        self.run.log(logged(values), step=step)

    def close(self) -> None:
        """Finish the run; its offline run file is complete on return unless the process has another wandb run."""
        import wandb

        self.run.finish()
        # finish() only informs wandb's service process, which closes the run file in the background: read right
        # after, the file missed records or ended mid-record (3 reads in 30 under load). The service writes
        # everything before it shuts down, so shut it down when no other run of this process needs it (a
        # caller's own run keeps it; the next wandb.init starts a new one)
        if getattr(self.run, "_wl", None) is not None and self.run._wl.most_recent_active_run is None:
            wandb.teardown()


class MlflowTracker:
    """An MLflow run named after the output folder, in experiment "videor1" (or MLFLOW_EXPERIMENT_NAME).

    Without MLFLOW_TRACKING_URI it writes the local file store <output_dir>/mlruns (`mlflow ui
    --backend-store-uri <output_dir>/mlruns` shows it).
    """

    def __init__(self, output_dir: Path, *, run_id: str | None = None):
        from mlflow.tracking import MlflowClient

        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or (output_dir / "mlruns").resolve().as_uri()
        if urlparse(self.tracking_uri).scheme in ("", "file"):
            # MLflow 3 refuses its file store unless opted in; the SQL stores need packages mlflow-skinny lacks
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.run_id: str = (run_id and self._reopen(run_id)) or self._create(output_dir.name)
        self._logged_params: dict[str, str] = dict(self.client.get_run(self.run_id).data.params)

    def _reopen(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.update_run(run_id, status="RUNNING")
        except MlflowException:
            return None  # the store moved or was wiped: start a new run rather than fail the resume
        return run_id

    def _create(self, name: str) -> str:
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
        experiment = self.client.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(experiment_name)
        return self.client.create_run(experiment_id, run_name=name).info.run_id

    def log_config(self, config: dict[str, Any]) -> None:
        """The flattened config as params; a resumed run keeps the values it logged first (params are immutable)."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = []
        for key, value in flatten(config):
            name = metric_name(key)
            if name not in self._logged_params:
                text = value if isinstance(value, str) else json.dumps(value)
                params.append(Param(name, truncate(text, MAX_PARAM_VAL_LENGTH)))
                self._logged_params[name] = params[-1].value
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log(self, step: int, values: dict[str, float | None]) -> None:
        """The measured values at `step`, in one batch."""
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [Metric(metric_name(key), value, now, step) for key, value in logged(values).items()]
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])

    def close(self) -> None:
        """Mark the run finished."""
        self.client.set_terminated(self.run_id)


def metric_name(key: str) -> str:
    """`key` as a valid MLflow name on every OS: `/` kept, other characters outside [\\w.- ] become `_`."""
    # the file store maps names to paths: ":" is refused on Windows, and "", "." or ".." parts would alias
    parts = [re.sub(r"[^\w.\- ]", "_", part) for part in key.split("/")]
    name = "/".join(part if part.strip(".") else part.replace(".", "_") or "_" for part in parts)
    return name[:250]


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marked with a trailing "..." when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
