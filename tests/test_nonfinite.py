"""Training that has gone wrong stops: no config accepts inf or nan, and a run whose loss or gradient norm stops
being finite ends (exit 1, one line naming the step and the value) without saving such weights."""

import json
import math
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

import videor1.annotate.config
import videor1.eval.config
import videor1.serve.config  # noqa: F401 - their config classes join StrictModel's subclasses
from videor1.cli import app
from videor1.config import ConfigError, StrictModel, TrainConfig, load_config, save_config
from videor1.metrics import MetricBag
from videor1.recipe import Recipe, TrainingDiverged

runner = CliRunner()
REQUIRED = ["data.train_file=rows.json", "data.media_root=."]


# ---- no config accepts a non-finite number ----------------------------------------------------------------------
@pytest.mark.parametrize(("override", "key"), [
    ("optim.lr=inf", "optim.lr=inf"), ("optim.lr=.inf", "optim.lr=inf"), ("optim.lr=nan", "optim.lr=nan"),
    ("algorithm.kl_coef=inf", "algorithm.kl_coef=inf"), ("optim.betas=[0.9, .nan]", "optim.betas.1=nan"),
    ('rewards=[{name: accuracy, weight: .inf}]', "rewards.0.weight=inf"), ("media.fps=-.inf", "media.fps=-inf"),
])
def test_non_finite_settings_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError) as refused:
        load_config(TrainConfig, None, [*REQUIRED, override])
    assert str(refused.value) == f"{key}: Input should be a finite number"


def strict_models(cls=StrictModel):
    for sub in cls.__subclasses__():
        yield sub
        yield from strict_models(sub)


def test_every_float_setting_of_every_config_refuses_infinity():
    checked = []
    for model in set(strict_models()):
        for name, field in model.model_fields.items():
            if field.annotation not in (float, float | None):
                continue
            with pytest.raises(ValidationError) as refused:
                model.model_validate({name: math.inf})
            assert any(e["type"] == "finite_number" and e["loc"] == (name,) for e in refused.value.errors()), name
            checked.append(f"{model.__name__}.{name}")
    # the run, eval, serve and annotate configs all took part (their unbounded floats included)
    assert {"OptimConfig.lr", "AlgorithmConfig.kl_coef", "DecodingConfig.repetition_penalty",
            "AnnotateConfig.threshold", "ServeConfig.header_timeout_s"} <= set(checked)


def test_the_cli_refuses_an_infinite_learning_rate_in_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {train_file: rows.json, media_root: .}\n")
    for command in ("train", "sft"):
        result = runner.invoke(app, [command, str(config), "optim.lr=inf"])
        assert result.exit_code == 2 and result.output.strip() == "config error: optim.lr=inf: Input should be a " \
            "finite number", result.output


# ---- the recipe's checks ----------------------------------------------------------------------------------------
class Optimizer:
    def __init__(self):
        self.steps = 0

    def step(self):
        self.steps += 1

    def zero_grad(self, set_to_none=True):
        pass


def bare_recipe(tmp_path, grad_norm, scaler=None):
    """A Recipe at step 4 whose clipping reports `grad_norm`; fp16 runs have a loss scaler."""
    recipe = Recipe.__new__(Recipe)
    recipe.cfg = SimpleNamespace(optim=SimpleNamespace(max_grad_norm=1.0))
    recipe.sharded, recipe.params, recipe.step, recipe.out = False, [], 4, tmp_path
    recipe.accelerator = SimpleNamespace(clip_grad_norm_=lambda params, norm: torch.tensor(grad_norm), scaler=scaler,
                                         optimizer_step_was_skipped=scaler is not None)
    recipe.optimizer = Optimizer()
    recipe.scheduler = SimpleNamespace(get_last_lr=lambda: [0.1], step=lambda: None)
    recipe.log = SimpleNamespace(lines=[], info=lambda line: recipe.log.lines.append(line))
    return recipe


@pytest.mark.parametrize("norm", [math.nan, math.inf])
def test_a_non_finite_gradient_norm_stops_before_the_update(tmp_path, norm):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    recipe = bare_recipe(tmp_path, norm)
    with pytest.raises(TrainingDiverged) as stopped:
        recipe.optimizer_step(MetricBag())
    assert str(stopped.value).startswith(
        f"step 5: the gradient norm is {norm}, not a finite number; stopped before saving a checkpoint of it (the "
        f"newest checkpoint is {tmp_path}/checkpoint-4)"
    )
    assert recipe.optimizer.steps == 0 and recipe.log.lines == [str(stopped.value)]  # not applied; in train.log


def test_fp16_overflows_are_left_to_the_loss_scaler(tmp_path):
    recipe = bare_recipe(tmp_path, math.inf, scaler=object())
    bag = MetricBag()
    recipe.optimizer_step(bag)  # the scaler skips this update and lowers its scale: no reason to stop
    assert recipe.optimizer.steps == 1 and bag.reduce()["optim/grad_norm"] == math.inf
    bare_recipe(tmp_path, 0.5).optimizer_step(MetricBag())  # a finite norm never stops a run


def test_a_non_finite_loss_stops_the_step(tmp_path):
    recipe = bare_recipe(tmp_path, 0.5)
    recipe.check_loss(3, {"loss/sft": 2.5}, "loss/sft")
    recipe.check_loss(3, {"loss/sft": None}, "loss/sft")  # nothing measured: nothing to judge
    with pytest.raises(TrainingDiverged, match=r"^step 3: the loss \(loss/sft\) is nan, .*no checkpoint was saved\)"):
        recipe.check_loss(3, {"loss/sft": math.nan}, "loss/sft")


# ---- end to end -------------------------------------------------------------------------------------------------
def checkpoint_steps(run):
    return sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))


def logged_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_with_a_huge_learning_rate_exits_1_and_keeps_its_last_good_checkpoint(tmp_path, tiny_models, synth_root):
    from safetensors.torch import load_file

    from tests.test_sft import sft_config

    cfg = sft_config(tmp_path, tiny_models(), synth_root, "max_steps=6", "save_every=1", "batch_size=2",
                     "optim.lr=1e6")
    save_config(cfg, tmp_path / "c.yaml")
    result = runner.invoke(app, ["sft", str(tmp_path / "c.yaml")])
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    run = tmp_path / "sft"
    stopped = logged_steps(run)[-1] + 1
    assert lines[0].startswith(f"error: step {stopped}: the ")
    assert "is nan, not a finite number" in lines[0] or "is inf, not a finite number" in lines[0]
    assert f"the newest checkpoint is {run / f'checkpoint-{stopped - 1}'}" in lines[0]
    assert checkpoint_steps(run)[-1] == stopped - 1  # nothing saved of the step that diverged
    weights = load_file(run / f"checkpoint-{stopped - 1}" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert lines[0].removeprefix("error: ") in (run / "train.log").read_text()


@pytest.mark.parametrize("broken", ["gradient", "loss"])
def test_grpo_stops_on_a_non_finite_gradient_norm_or_loss(tmp_path, tiny_models, synth_root, monkeypatch, broken):
    """Step 2 breaks: NaN gradients stop it before the update, a NaN loss before the step is logged or saved."""
    from transformers import AutoModelForImageTextToText

    import videor1.rl.trainer as trainer_module
    from tests.test_train import config

    real = trainer_module.grpo_loss
    trainer = None

    def breaks_at_step_2(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        if trainer.step == 1:  # steps done so far: this is the second
            if broken == "gradient":
                loss = loss * math.nan
            stats = {**stats, "loss/total": torch.tensor(math.nan)}
        return loss, stats

    monkeypatch.setattr(trainer_module, "grpo_loss", breaks_at_step_2)
    cfg = config(tmp_path, tiny_models(), synth_root, "max_steps=3", "save_every=1", "algorithm.temporal=false",
                 "algorithm.kl_coef=0")
    trainer = trainer_module.GRPOTrainer(cfg)
    what = "gradient norm" if broken == "gradient" else r"loss \(loss/total\)"
    with pytest.raises(TrainingDiverged, match=rf"^step 2: the {what} is nan"):
        trainer.train()
    run = tmp_path / "run"
    assert checkpoint_steps(run) == [1] and logged_steps(run) == [1]
    if broken == "gradient":  # the update was never applied: the weights are still checkpoint-1's
        saved = AutoModelForImageTextToText.from_pretrained(run / "checkpoint-1")
        for (name, a), b in zip(saved.named_parameters(), trainer.policy.parameters(), strict=True):
            assert torch.equal(a, b), name
    # the run folder was released: it can be resumed at once, in this process
    trainer_module.GRPOTrainer(config(tmp_path, tiny_models(), synth_root, "max_steps=3", "save_every=1",
                                      "algorithm.temporal=false", "algorithm.kl_coef=0"), resume=True).run.close()


@pytest.mark.slow
def test_two_processes_stop_together_on_a_diverged_loss(tmp_path, tiny_models, synth_root):
    from tests.test_sft import sft_config

    cfg = sft_config(tmp_path, tiny_models(), synth_root, "max_steps=6", "save_every=1", "batch_size=1",
                     "optim.lr=1e6")
    save_config(cfg, tmp_path / "c.yaml")
    with socket.socket() as sock:  # a free rendezvous port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", "videor1.cli", "sft", str(tmp_path / "c.yaml")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)  # a hang fails here
    assert result.returncode != 0
    assert result.stderr.count("not a finite number; stopped before saving") == 2, result.stderr[-3000:]
    run = tmp_path / "sft"
    assert checkpoint_steps(run)[-1] == logged_steps(run)[-1]
