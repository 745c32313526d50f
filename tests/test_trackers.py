"""report_to: each step's metrics and the resolved config reach TensorBoard, wandb (offline) and MLflow (file store)."""

import json
import struct
import sys

import pytest

from videor1.cli_errors import input_error_message
from videor1.runlog import RunLog
from videor1.trackers import MlflowTracker, TrackerUnavailable, WandbTracker, metric_name, open_trackers

STEPS = {
    1: {"loss/sft": 2.5, "optim/lr": 0.001, "reward/tests.toy_rewards:contains_target": 0.25, "temporal/p": None},
    2: {"loss/sft": 1.5, "optim/lr": 0.001, "reward/tests.toy_rewards:contains_target": 0.5, "temporal/p": 0.75},
    3: {"loss/sft": 0.5, "optim/lr": 0.0005, "reward/tests.toy_rewards:contains_target": 1.0, "temporal/p": None},
}
CONFIG = {"output_dir": "runs/x", "max_steps": 3, "model": {"name_or_path": "m", "lora": {"r": 4}},
          "report_to": ["wandb", "mlflow"], "note": "x" * 10_000}


@pytest.fixture(autouse=True)
def offline_trackers(tmp_path, monkeypatch):
    """wandb offline and quiet, MLflow's local file store; neither writes outside tmp_path nor calls home."""
    home = tmp_path / "tracker-home"
    for name in ("WANDB_PROJECT", "WANDB_NAME", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_ENTITY",
                 "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    # the tracker opts in to MLflow's file store through the environment: undo that after each test
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    yield


@pytest.fixture(autouse=True)
def stop_wandb_service():
    """wandb keeps one service process, and the environment it read first, per Python process: reset both."""
    yield
    teardown = getattr(sys.modules.get("wandb"), "teardown", None)  # None: a test hid the package
    if teardown is not None:
        teardown()


def wandb_records(run_file):
    """The protobuf records of an offline run's .wandb file (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks, block = 7, [], 32 * 1024
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if kind == 0:
            break
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def wandb_run(output_dir):
    """(history {step: {key: value}}, config {key: value}, run id) of the one offline run under output_dir."""
    runs = list((output_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    (run_file,) = runs[0].glob("run-*.wandb")
    history, config = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
    return history, config, run_file.stem.removeprefix("run-")


def measured(values):
    return {k: v for k, v in values.items() if v is not None}


def test_wandb_offline_run_holds_every_step_and_the_config(tmp_path):
    tracker = WandbTracker(tmp_path / "my-run")
    tracker.log_config(CONFIG)
    for step, values in STEPS.items():
        tracker.log(step, values)
    tracker.close()
    history, config, run_id = wandb_run(tmp_path / "my-run")
    assert run_id == tracker.run_id
    assert history == {step: measured(values) for step, values in STEPS.items()}
    assert config["model"] == CONFIG["model"] and config["max_steps"] == 3
    settings = next(r.run for r in wandb_records(next((tmp_path / "my-run" / "wandb").glob("*/run-*.wandb")))
                    if r.WhichOneof("record_type") == "run")
    assert (settings.project, settings.display_name) == ("videor1", "my-run")


def test_wandb_close_leaves_a_callers_own_run_working(tmp_path):
    """close() shuts wandb's service down so the run file is complete on return (read at once, it missed records
    3 times in 30 under load), but not while the caller has a run of its own in this process."""
    import wandb

    theirs = wandb.init(reinit="create_new", project="theirs", dir=str(tmp_path / "theirs"))
    tracker = WandbTracker(tmp_path / "my-run")
    tracker.log(1, STEPS[1])
    tracker.close()
    theirs.log({"x": 1.0}, step=1)  # their service is still there
    theirs.finish()
    wandb.teardown()  # the service kept running for them: its files are complete once it stops
    history, _, _ = wandb_run(tmp_path / "my-run")
    assert history == {1: measured(STEPS[1])}


def test_wandb_environment_wins_over_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    monkeypatch.setenv("WANDB_NAME", "named")
    tracker = WandbTracker(tmp_path / "run")
    assert (tracker.run.project, tracker.run.name) == ("theirs", "named")
    tracker.close()


def mlflow_client(output_dir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=(output_dir / "mlruns").resolve().as_uri())


def test_mlflow_file_store_holds_params_and_metric_history(tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    tracker = MlflowTracker(tmp_path / "my-run")
    tracker.log_config(CONFIG)
    for step, values in STEPS.items():
        tracker.log(step, values)
    tracker.close()
    client = mlflow_client(tmp_path / "my-run")
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "my-run" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "videor1"
    params = run.data.params
    assert params["model.name_or_path"] == "m" and params["model.lora.r"] == "4" and params["max_steps"] == "3"
    assert json.loads(params["report_to"]) == ["wandb", "mlflow"]
    assert len(params["note"]) == MAX_PARAM_VAL_LENGTH and params["note"].endswith("...")
    for key in STEPS[1]:
        history = client.get_metric_history(tracker.run_id, metric_name(key))
        assert [(m.step, m.value) for m in history] == [(s, v[key]) for s, v in STEPS.items() if v[key] is not None]
    # "/" is kept (MLflow groups by it); ":" is not portable (Windows file stores refuse it)
    assert metric_name("reward/tests.toy_rewards:contains_target") == "reward/tests.toy_rewards_contains_target"


@pytest.mark.parametrize(("key", "name"), [("a//b", "a/_/b"), ("../x", "__/x"), ("a/./b c-d", "a/_/b c-d")])
def test_metric_names_never_alias_paths(key, name):
    assert metric_name(key) == name


def test_resume_continues_the_same_tracker_runs(tmp_path):
    out = tmp_path / "run"
    first = open_trackers(["wandb", "mlflow"], out)
    ids = [t.run_id for t in first]
    for tracker in first:
        tracker.log(1, STEPS[1])
        tracker.close()
    assert json.loads((out / "trackers.json").read_text()) == {"wandb": ids[0], "mlflow": ids[1]}
    resumed = open_trackers(["wandb", "mlflow"], out, resume_step=1)
    assert [t.run_id for t in resumed] == ids
    for tracker in resumed:
        tracker.log(2, STEPS[2])
        tracker.close()
    history = mlflow_client(out).get_metric_history(ids[1], "loss/sft")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 1.5)]
    fresh = open_trackers(["mlflow"], out)  # not a resume: a new run, never the old one
    assert fresh[0].run_id != ids[1] and json.loads((out / "trackers.json").read_text()) == {"mlflow": fresh[0].run_id}
    fresh[0].close()


@pytest.mark.parametrize(("tracker", "extra"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_missing_tracker_package_fails_at_start_naming_the_extra(tmp_path, monkeypatch, tracker, extra):
    monkeypatch.setitem(sys.modules, tracker, None)  # `import wandb` now fails as when it is not installed
    with pytest.raises(TrackerUnavailable) as caught:
        RunLog(tmp_path / "run", report_to=["tensorboard", tracker])
    message = input_error_message(caught.value)  # the CLI prints it as one line and exits 2
    assert message is not None and "\n" not in message and f'pip install -e ".[{extra}]"' in message
    assert not (tmp_path / "run").exists()  # nothing started: not even the run folder


def test_sft_run_reports_to_all_three_trackers(tmp_path, tiny_models, synth_root):
    """One real run: the metrics.jsonl of each step, and the config, in TensorBoard, wandb and MLflow."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.test_sft import sft_config
    from videor1.sft.trainer import SFTTrainer

    cfg = sft_config(tmp_path, tiny_models(), synth_root, "max_steps=2", "save_every=2",
                     "tensorboard=true", "report_to=[tensorboard,wandb,mlflow]")
    SFTTrainer(cfg).train()
    out = tmp_path / "sft"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = {line.pop("step"): measured(line) for line in lines}
    assert list(expected) == [1, 2]

    history, config, wandb_id = wandb_run(out)
    assert history == expected
    assert config["max_steps"] == 2 and config["report_to"] == ["tensorboard", "wandb", "mlflow"]

    ids = json.loads((out / "trackers.json").read_text())
    assert ids["wandb"] == wandb_id
    client = mlflow_client(out)
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.data.params["max_steps"] == "2"
    for key in expected[2]:
        history = client.get_metric_history(ids["mlflow"], metric_name(key))
        assert [(m.step, m.value) for m in history] == [(s, v[key]) for s, v in expected.items() if key in v], key

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("loss/sft")  # TensorBoard stores float32
    assert [e.step for e in scalars] == [1, 2]
    assert [e.value for e in scalars] == pytest.approx([v["loss/sft"] for v in expected.values()], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]
